"""Figure 1's shared parts: the network data, the "servable" sampler, and
Neutron's driver run in its own venv (bench/_neutron_driver.py).

"servable" (as in shared notes): dnsmasq has logged reading the change
and is back in poll() afterwards. Sampled from outside the process under
test: the log tailed and /proc/PID/syscall read every ~0.3 ms."""
import json
import os
import signal
import subprocess
import time
import uuid

from pyroute2 import IPRoute, NetNS, netns

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
NEUTRON_PY = os.path.join(ROOT, '.venv-neutron', 'bin', 'python')
IDLE = {'7', '271', '73'}           # poll, ppoll (x86_64), ppoll (aarch64)


def mac(n):
    return 'fa:16:3e:%02x:%02x:%02x' % ((n >> 16) & 255, (n >> 8) & 255,
                                        n & 255)


def host_ip(i, prefix='10.10'):
    """The i-th VM address of a /16 (skips .0-.9 and .250-.255)."""
    return '%s.%d.%d' % (prefix, 1 + i // 240, 10 + i % 240)


def syscall(pid):
    try:
        with open('/proc/%d/syscall' % pid) as f:
            return f.read().split(' ', 1)[0]
    except OSError:
        return None


class Tail:
    """New lines of a log since the last call."""

    def __init__(self, path):
        self.path = path
        self.pos = os.path.getsize(path) if os.path.exists(path) else 0
        self.partial = b''

    def lines(self):
        try:
            with open(self.path, 'rb') as f:
                f.seek(self.pos)
                data = f.read()
        except OSError:
            return []
        self.pos += len(data)
        data = self.partial + data
        lines = data.split(b'\n')
        self.partial = lines.pop()
        return [line.decode(errors='replace') for line in lines]


def wait_idle(pid, timeout=120, settle=0.05):
    """dnsmasq stays in poll() for `settle` s (start-up, a previous run)."""
    deadline = time.monotonic() + timeout
    since = None
    while time.monotonic() < deadline:
        if syscall(pid) in IDLE:
            since = since or time.monotonic()
            if time.monotonic() - since >= settle:
                return True
        else:
            since = None
        time.sleep(0.002)
    raise AssertionError('dnsmasq %d not idle after %ss' % (pid, timeout))


def cpu_ns(pid):
    """dnsmasq's CPU time so far, ns (/proc/PID/schedstat)."""
    try:
        with open('/proc/%d/schedstat' % pid) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def servable(pid, tail, match, t0=0.0, cpu0=None, timeout=120):
    """Sample until dnsmasq logged a line containing `match` and is back
    in poll() after it. Returns {'read': ms, 'servable': ms, 'cpu': ms}:
    times from t0 (time.monotonic() of the trigger; 0: absolute, for a
    trigger whose time is known only later), dnsmasq CPU spent since cpu0
    (cpu_ns() taken before the trigger)."""
    read_at = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = time.monotonic()
        if read_at is None:
            if any(match in line for line in tail.lines()):
                read_at = now
        if read_at is not None and syscall(pid) in IDLE:
            done = time.monotonic()
            return {'read': (read_at - t0) * 1000,
                    'servable': (done - t0) * 1000,
                    'cpu': (cpu_ns(pid) - cpu0) / 1e6
                    if cpu0 is not None else None}
        time.sleep(0.0003)
    raise AssertionError('dnsmasq %d: no %r read/idle within %ss'
                         % (pid, match, timeout))


def network_dicts(n, prefix='10.10', dhcp_ports=1):
    """One Neutron network: a /16 subnet, `dhcp_ports` DHCP ports (the
    first at .0.2, further ones from .0.101: the shards of a big network,
    oldest first by created_at) and n VM ports."""
    net_id = str(uuid.uuid4())
    sub_id = str(uuid.uuid4())
    subnet = {'id': sub_id, 'network_id': net_id, 'cidr': prefix + '.0.0/16',
              'gateway_ip': prefix + '.0.1', 'ip_version': 4,
              'enable_dhcp': True, 'dns_nameservers': [prefix + '.0.53'],
              'host_routes': [], 'ipv6_address_mode': None,
              'ipv6_ra_mode': None, 'subnetpool_id': None}
    ports = [vm_port(net_id, sub_id, i, prefix) for i in range(n)]
    dhcp = []
    for k in range(max(1, dhcp_ports)):
        dhcp.append({
            'id': str(uuid.uuid4()), 'network_id': net_id,
            'mac_address': mac(0xd00000 + k), 'device_owner': 'network:dhcp',
            'device_id': 'dhcp-bench' + ('-shard%d' % k if k else ''),
            'binding:host_id': 'bench-host',
            'created_at': '2026-01-01T00:%02d:%02dZ' % divmod(k, 60),
            'fixed_ips': [{'subnet_id': sub_id, 'ip_address': '%s.0.%d' % (
                prefix, 2 if k == 0 else 100 + k)}]})
    network = {'id': net_id, 'name': 'bench', 'admin_state_up': True,
               'mtu': 1500, 'subnets': [subnet], 'ports': dhcp + ports,
               'project_id': 'bench'}
    return network


def shard_ports(hosts, shard_size=600):
    """How many DHCP ports of this host a network of `hosts` hosts lists:
    one per started shard_size (the agent's default [dnsmasq] shard_size;
    an agent without shards uses the first only)."""
    return max(1, -(-hosts // shard_size))


def vm_port(net_id, sub_id, i, prefix='10.10'):
    return {'id': str(uuid.uuid4()), 'network_id': net_id,
            'mac_address': mac(0x100000 + i), 'device_owner': 'compute:nova',
            'device_id': 'vm-%d' % i, 'admin_state_up': True,
            'binding:host_id': '', 'revision_number': 1,
            'fixed_ips': [{'subnet_id': sub_id,
                           'ip_address': host_ip(i, prefix)}]}


class NeutronDriver:
    """Neutron's dhcp.Dnsmasq in a child process on a network of ours: the
    qdhcp-<id> namespace with a veth DHCP interface holding .0.2/16."""

    def __init__(self, network, state_dir, bridge=None):
        self.network = network
        self.state_dir = state_dir
        self.bridge = bridge
        self.ns = 'qdhcp-' + network['id']
        self.ifname = 'ns-' + network['ports'][0]['id'][:11]
        self.proc = self.pid = None

    def start(self, timeout=300):
        """With a bridge, the veth's other end is on it (a VM on that
        bridge reaches Neutron's dnsmasq); without, both ends stay in the
        namespace."""
        netns.create(self.ns)
        if self.bridge:
            peer = 'nb' + self.network['ports'][0]['id'][:12]
            with IPRoute() as ipr:
                ipr.link('add', ifname=peer, kind='veth',
                         peer={'ifname': self.ifname, 'net_ns_fd': self.ns})
                ipr.link('set', index=ipr.link_lookup(ifname=peer)[0],
                         master=ipr.link_lookup(ifname=self.bridge)[0],
                         state='up')
        with NetNS(self.ns) as ns:
            ns.link('set', index=ns.link_lookup(ifname='lo')[0], state='up')
            if not self.bridge:
                # no dummy module here: a veth pair, both ends inside
                ns.link('add', ifname=self.ifname, kind='veth',
                        peer={'ifname': 'peer0'})
                ns.link('set', index=ns.link_lookup(ifname='peer0')[0],
                        state='up')
            index = ns.link_lookup(ifname=self.ifname)[0]
            ns.link('set', index=index, address=mac(0xd00000), state='up')
            ip = self.network['ports'][0]['fixed_ips'][0]['ip_address']
            ns.addr('add', index=index, address=ip, prefixlen=16)
        if not os.path.exists('/run/netns/' + self.ns):
            raise AssertionError('namespace %s not created (/run/netns: %s)'
                                 % (self.ns, os.listdir('/run/netns')))
        os.makedirs(self.state_dir, exist_ok=True)
        self.errlog = open(os.path.join(self.state_dir, 'driver.err'), 'wb')
        self.proc = subprocess.Popen(
            [NEUTRON_PY, '-W', 'ignore', os.path.join(HERE,
                                                      '_neutron_driver.py')],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.errlog, text=True)
        info = self.call({'cmd': 'init', 'state_dir': self.state_dir,
                          'network': self.network, 'interface': self.ifname})
        self.pid, self.log, self.cmdline = (info['pid'], info['log'],
                                            info['cmdline'])
        return info

    def call(self, req):
        self.send(req)
        return self.reply()

    def send(self, req):
        self.proc.stdin.write(json.dumps(req) + '\n')
        self.proc.stdin.flush()

    def reply(self):
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError('Neutron driver exited: %s' % self.err())
        return json.loads(line)

    def err(self):
        try:
            with open(os.path.join(self.state_dir, 'driver.err'),
                      errors='replace') as f:
                return f.read()[-3000:]
        except OSError:
            return ''

    def close(self):
        """SIGTERM dnsmasq by PID (checked against its cmdline), end the
        child, remove the namespace."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.call({'cmd': 'stop'})
            except Exception:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.pid:
            try:
                with open('/proc/%d/cmdline' % self.pid) as f:
                    ours = self.network['id'] in f.read()
            except OSError:
                ours = False
            if ours:
                os.kill(self.pid, signal.SIGKILL)
        if getattr(self, 'errlog', None):
            self.errlog.close()
        try:
            netns.remove(self.ns)
        except OSError:
            pass
