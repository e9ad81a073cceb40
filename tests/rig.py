"""The test rig: bridges, "VMs" with real DHCP clients, an IPAM file, the
agent as a real process. Everything lives in the isolated "host" made by
tests/isolated; every helper cleans up by name and PID."""
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid

from pyroute2 import IPRoute, NetNS, netns

from vdsm_dhcp import options
from vdsm_dhcp.agent import control
from vdsm_dhcp.dnsmasq import conf as dnsmasq_conf
from vdsm_dhcp.dnsmasq import pids
from vdsm_dhcp.fileutil import atomic_write
from vdsm_dhcp.host.netns_exec import netns_preexec

HERE = os.path.dirname(os.path.abspath(__file__))
DHCP_SCRIPT = os.path.join(HERE, 'dhcp-script')
BIN = os.path.dirname(sys.executable)


# a hang bound, not a speed claim: generous, for a loaded 2-core machine
# (timings are measured in bench/)
HANG = 30.0


def wait_for(predicate, timeout=HANG, interval=0.01, what='condition'):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError('timed out after %ss waiting for %s'
                                 % (timeout, what))
        time.sleep(interval)


def new_id():
    return str(uuid.uuid4())


def mac(n, prefix='fa:16:3e'):
    return '%s:%02x:%02x:%02x' % (prefix, (n >> 16) & 255, (n >> 8) & 255,
                                  n & 255)


def write_conf(path, base, host='host-a', **extra):
    """A config file whose every path is under `base`."""
    sections = {'DEFAULT': {
        'networks_file': os.path.join(base, 'networks.json'),
        'state_dir': os.path.join(base, 'state'),
        'run_dir': os.path.join(base, 'run'),
        'host': host,
        'agent_unit': 'vdsm-dhcp-agent-%s.service' % uuid.uuid4().hex[:8],
        'supervise_interval': '0.1',
    }, 'file': {'path': os.path.join(base, 'ipam.json')}}
    for key, value in extra.items():
        group, _, name = key.rpartition('__')
        sections.setdefault(group or 'DEFAULT', {})[name] = str(value)
    with open(path, 'w') as f:
        for group, values in sections.items():
            f.write('[%s]\n' % group)
            for k, v in values.items():
                f.write('%s = %s\n' % (k, v))
    return path


class Ipam:
    """A Neutron-shaped IPAM document, written atomically on save()."""

    clock = 0   # created_at of ports: the first created wins a conflict

    def __init__(self, path):
        self.path = path
        self.networks, self.subnets, self.ports = [], [], []

    def network(self, mtu=1500, **extra):
        net = dict(dict(id=new_id(), name='net', admin_state_up=True,
                        mtu=mtu), **extra)
        self.networks.append(net)
        return net

    def subnet(self, net, cidr, gateway=None, dns=(), routes=(),
               ip_version=4, enable_dhcp=True, **extra):
        sub = dict(id=new_id(), network_id=net['id'], cidr=cidr,
                   gateway_ip=gateway, dns_nameservers=list(dns),
                   host_routes=[{'destination': d, 'nexthop': h}
                                for d, h in routes],
                   ip_version=ip_version, enable_dhcp=enable_dhcp, **extra)
        self.subnets.append(sub)
        return sub

    def port(self, net, mac_address, ips, device_owner='compute:nova',
             host='', **extra):
        """ips: [(subnet, ip)]"""
        Ipam.clock += 1
        created = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(
            1700000000 + Ipam.clock))
        port = dict(id=new_id(), network_id=net['id'], created_at=created,
                    mac_address=mac_address, device_owner=device_owner,
                    fixed_ips=[{'subnet_id': s['id'], 'ip_address': ip}
                               for s, ip in ips],
                    **{'binding:host_id': host}, **extra)
        self.ports.append(port)
        return port

    def dhcp_port(self, net, mac_address, ips, host):
        return self.port(net, mac_address, ips, device_owner='network:dhcp',
                         host=host)

    def remove(self, port):
        self.ports.remove(port)

    def save(self):
        atomic_write(self.path, json.dumps({
            'networks': self.networks, 'subnets': self.subnets,
            'ports': self.ports}))


def write_networks(conf_base, pairs):
    """The networks file as setDHCP writes it: pairs of (name, quantumId)."""
    from vdsm_dhcp.setdhcp import networks_file
    networks_file.write(os.path.join(conf_base, 'networks.json'),
                        [networks_file.Network(n, q) for n, q in pairs])


class Host:
    """One test "host": its config, IPAM file, bridges, VMs and agents."""

    def __init__(self, base, name='host-a'):
        self.base = base
        os.makedirs(base, exist_ok=True)
        self.conf_path = write_conf(os.path.join(base, 'vdsm-dhcp.conf'),
                                    base, host=name)
        self.conf = options.load(self.conf_path)
        self.ipam = Ipam(self.conf.file.path)
        self.agents = []

    def agent(self, start=True):
        agent = AgentProcess(self.conf_path, self.conf,
                             os.path.join(self.base, 'agent.log'))
        self.agents.append(agent)
        return agent.start() if start else agent

    def networks(self, *pairs):
        write_networks(self.base, pairs)

    def cleanup(self):
        """Every step runs even if an earlier one fails (a broken test
        must still leave no process, namespace or file behind)."""
        errors = []
        for step in (self._stop_unit, self._stop_agents, self._sweep):
            try:
                step()
            except Exception as e:
                errors.append('%s: %r' % (step.__name__, e))
        if errors:
            raise AssertionError('cleanup of %s: %s' % (self.base, errors))

    def _stop_unit(self):
        write_networks(self.base, [])
        if os.environ.get('DBUS_SYSTEM_BUS_ADDRESS'):
            from vdsm_dhcp.setdhcp.systemd import Systemd
            Systemd().stop(self.conf.agent_unit, timeout=60)

    def _stop_agents(self):
        for agent in self.agents:
            try:
                agent.stop(timeout=30)
            except subprocess.TimeoutExpired:
                agent.kill()

    def _sweep(self):
        subprocess.run([os.path.join(BIN, 'vdsm-dhcp-agent'),
                        '--config-file', self.conf_path, '--cleanup'],
                       timeout=60, capture_output=True)
        kill_leftover_dnsmasq(self.conf.state_dir)


class Lab:
    """Bridges and VMs of one test; close() removes all it made."""

    def __init__(self):
        self.bridges, self.namespaces, self.procs = [], [], []
        self.tag = uuid.uuid4().hex[:5]
        self.dir = tempfile.mkdtemp(prefix='vdsm-dhcp-lab-')

    def bridge(self, name, mtu=1500):
        with IPRoute() as ipr:
            ipr.link('add', ifname=name, kind='bridge')
            index = ipr.link_lookup(ifname=name)[0]
            ipr.link('set', index=index, mtu=mtu, state='up')
        self.bridges.append(name)
        return name

    def del_bridge(self, name):
        with IPRoute() as ipr:
            index = ipr.link_lookup(ifname=name)
            if index:
                ipr.link('del', index=index[0])
        if name in self.bridges:
            self.bridges.remove(name)

    def vm(self, bridge, mac_address):
        return VM(self, bridge, mac_address)

    def remove_vm(self, vm):
        """Remove one VM now (long loops would otherwise pile them up)."""
        self.namespaces.remove(vm.ns)
        netns.remove(vm.ns)

    def close(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for ns in self.namespaces:
            try:
                netns.remove(ns)
            except OSError:
                pass
        for name in list(self.bridges):
            self.del_bridge(name)
        shutil.rmtree(self.dir, ignore_errors=True)


class VM:
    """A namespace with eth0 on a bridge: the vNIC of a VM."""
    count = 0

    def __init__(self, lab, bridge, mac_address):
        VM.count += 1
        self.lab = lab
        self.mac = mac_address
        self.ns = 'vm-%s-%d' % (lab.tag, VM.count)
        self.out = os.path.join(lab.dir, 'lease-%s' % self.ns)
        self.udhcpc_output = ''
        host_if = 'vm%s%d' % (lab.tag, VM.count)
        netns.create(self.ns)
        lab.namespaces.append(self.ns)
        self.before_eth0()
        with IPRoute() as ipr:
            ipr.link('add', ifname=host_if, kind='veth',
                     peer={'ifname': 'eth0', 'net_ns_fd': self.ns})
            br = ipr.link_lookup(ifname=bridge)[0]
            ipr.link('set', index=ipr.link_lookup(ifname=host_if)[0],
                     master=br, state='up')
        self.before_up()
        with NetNS(self.ns) as ns:
            ns.link('set', index=ns.link_lookup(ifname='lo')[0], state='up')
            index = ns.link_lookup(ifname='eth0')[0]
            ns.link('set', index=index, address=mac_address)
            ns.link('set', index=index, state='up')

    def before_eth0(self):
        pass

    def before_up(self):
        pass

    def run(self, argv, **kw):
        with netns_preexec(self.ns) as enter:
            return subprocess.run(argv, preexec_fn=enter, **kw)

    def dhcp(self, tries=3, timeout=1):
        """One udhcpc exchange, no retries beyond `tries` discovers.
        Returns the lease as a dict of the script's environment, or None."""
        try:
            os.unlink(self.out)
        except FileNotFoundError:
            pass
        env = dict(os.environ, VDSM_DHCP_LEASE_OUT=self.out)
        result = self.run(['udhcpc', '-i', 'eth0', '-n', '-q', '-f',
                           '-t', str(tries), '-T', str(timeout),
                           '-O', 'staticroutes', '-O', 'mtu',
                           '-s', DHCP_SCRIPT],
                          env=env, capture_output=True, timeout=30)
        self.udhcpc_output = (result.stdout + result.stderr).decode(
            errors='replace')
        if result.returncode != 0 or not os.path.exists(self.out):
            return None
        return read_env(self.out)

    def offers(self, wait=3.0):
        """Broadcast a DHCPDISCOVER from this VM's MAC (again every 0.5 s,
        as a client retransmits) and collect every
        DHCPOFFER that comes within `wait` s: [(server id, offered IP)]
        sorted. Unlike a client, which takes the first offer, this sees
        each server that answers (dnsmasq logs no offers: --quiet-dhcp)."""
        xid = int.from_bytes(os.urandom(4), 'big')
        # DHCPDISCOVER, answered by broadcast: no IP yet
        discover = _bootrequest(xid, self.mac, 1, flags=0x8000)
        return sorted({offer for offer in (
            _parse_offer(reply, xid) for reply in self._exchange(
                discover, '255.255.255.255', wait)) if offer})

    def request(self, ip, server=None, prefix=24, wait=3.0):
        """A bound client's DHCPREQUEST for its address `ip` (ciaddr): a
        RENEW, unicast to `server`, or with server=None a REBIND,
        broadcast to every server (RFC 2131 4.4.5). The VM takes `ip` on
        eth0 first, as a bound client has it: the answer comes unicast.
        Returns every answer within `wait` s: [(server id, message type
        5 ACK / 6 NAK, yiaddr)] sorted."""
        with NetNS(self.ns) as ns:
            index = ns.link_lookup(ifname='eth0')[0]
            if not any(a.get_attr('IFA_ADDRESS') == ip
                       for a in ns.get_addr(index=index, family=2)):
                ns.addr('add', index=index, address=ip, prefixlen=prefix)
        xid = int.from_bytes(os.urandom(4), 'big')
        packet = _bootrequest(xid, self.mac, 3, ciaddr=ip)   # DHCPREQUEST
        return sorted({answer for answer in (
            _parse_reply(reply, xid) for reply in self._exchange(
                packet, server or '255.255.255.255', wait))
            if answer and answer[1] in (5, 6)})

    def _exchange(self, packet, to, wait):
        """Send a DHCP packet from port 68 of eth0 to port 67 of `to`,
        and yield the replies that come within `wait` s (see _exchange)."""
        sock = netns.create_socket(self.ns, socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE,
                            b'eth0')
            sock.bind(('0.0.0.0', 68))
            yield from _exchange(sock, packet, (to, 67), wait)
        finally:
            sock.close()

    def discovered(self):
        """The last dhcp() did broadcast a DISCOVER: "no lease" then means
        nobody answered, not that the client never ran."""
        return 'broadcasting discover' in self.udhcpc_output


def _bootrequest(xid, mac, message_type, flags=0, ciaddr='0.0.0.0'):
    """A BOOTREQUEST of this DHCP message type, with no option else."""
    chaddr = bytes.fromhex(mac.replace(':', ''))
    return (struct.pack('!BBBBIHH4s4s4s4s16s192sI', 1, 1, 6, 0, xid, 0,
                        flags, socket.inet_aton(ciaddr), bytes(4), bytes(4),
                        bytes(4), chaddr.ljust(16, b'\0'), bytes(192),
                        0x63825363) +
            bytes([53, 1, message_type, 255]))


def _exchange(sock, packet, to, wait, every=0.5):
    """Send packet, again every `every` s (as a client retransmits: one
    datagram can be lost on a loaded host, e.g. before a new port of the
    bridge forwards), and yield every reply until `wait` s have passed."""
    deadline = time.monotonic() + wait
    next_send = 0
    while True:
        now = time.monotonic()
        if now >= deadline:
            return
        if now >= next_send:
            sock.sendto(packet, to)
            next_send = now + every
        sock.settimeout(max(0.01, min(deadline, next_send) - now))
        try:
            yield sock.recv(4096)
        except socket.timeout:
            continue


def _parse_offer(packet, xid):
    """(server id, offered IP) of a BOOTREPLY DHCPOFFER for xid, or None."""
    answer = _parse_reply(packet, xid)
    if answer is None or answer[1] != 2:
        return None
    return answer[0], answer[2]


def _parse_reply(packet, xid):
    """(server id, DHCP message type, yiaddr) of a BOOTREPLY for xid, or
    None."""
    if len(packet) < 240 or packet[0] != 2 or \
            struct.unpack('!I', packet[4:8])[0] != xid or \
            packet[236:240] != b'\x63\x82\x53\x63':
        return None
    options, i = {}, 240
    while i < len(packet) and packet[i] != 255:
        if packet[i] == 0:          # pad
            i += 1
            continue
        if i + 1 >= len(packet):
            break
        code, size = packet[i], packet[i + 1]
        options[code] = packet[i + 2:i + 2 + size]
        i += 2 + size
    if len(options.get(53, b'')) != 1 or len(options.get(54, b'')) != 4:
        return None
    return (socket.inet_ntoa(options[54]), options[53][0],
            socket.inet_ntoa(packet[16:20]))


def read_env(path):
    result = {}
    with open(path) as f:
        for line in f:
            key, _, value = line.rstrip('\n').partition('=')
            result[key] = value
    return result


class AgentProcess:
    """vdsm-dhcp-agent run by hand, in the foreground, as an operator
    would: no systemd involved."""

    def __init__(self, conf_path, conf, log_path):
        self.conf_path, self.conf, self.log_path = conf_path, conf, log_path
        self.proc = None

    def start(self, wait=True):
        log = open(self.log_path, 'ab')
        self.proc = subprocess.Popen(
            [os.path.join(BIN, 'vdsm-dhcp-agent'), '--config-file',
             self.conf_path], stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        if wait:
            wait_for(self.answers, HANG, what='agent control socket')
        return self

    def answers(self):
        if self.proc.poll() is not None:
            raise AssertionError('agent exited with %s:\n%s'
                                 % (self.proc.returncode, self.log()))
        try:
            return control.call(self.conf, 'status', timeout=2)
        except control.ControlError:
            return None

    def status(self):
        return control.call(self.conf, 'status')

    def network(self, name):
        for n in self.status()['networks']:
            if n['name'] == name:
                return n
        raise KeyError(name)

    def wait_served(self, name, timeout=HANG):
        # 'sync' and SIGHUP only queue a round: until it ran, a newly listed
        # network is not in the status yet, which is "not served yet"
        def served():
            try:
                st = self.network(name)
            except KeyError:
                return None
            return st['served'] and st
        return wait_for(served, timeout, what='network %s served' % name)

    def reload(self):
        self.proc.send_signal(signal.SIGHUP)

    def stop(self, timeout=60):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout)

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def log(self):
        with open(self.log_path, errors='replace') as f:
            return f.read()


def stop_process(proc, grace=5):
    """SIGTERM, then SIGKILL if it is not gone within `grace` seconds;
    reaped either way."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def kill_leftover_dnsmasq(state_dir):
    """Last resort for a failed test: end the dnsmasq processes under
    state_dir, by the PID in their pid files (checked against cmdline)."""
    if not os.path.isdir(state_dir):
        return
    for qid in os.listdir(state_dir):
        files = dnsmasq_conf.Files(state_dir, qid)
        pid = pids.read_pid(files)
        argv = pids.proc_cmdline(pid) if pid else None
        if argv and '--pid-file=' + files.pid in argv:
            os.kill(pid, signal.SIGKILL)


class VM6(VM):
    """A VM whose eth0 has IPv6 DAD off, set before the link comes up: its
    link-local address is usable at once (a DHCPv6 client needs it; with
    DAD on it stays tentative for ~1-2 s and dhclient -6 fails to bind)."""

    def before_eth0(self):
        # eth0 takes "default" when created in the namespace; set it too
        for conf in ('default', 'all'):
            self.sysctl('net.ipv6.conf.%s.accept_dad=0' % conf)

    def before_up(self):
        self.sysctl('net.ipv6.conf.eth0.accept_dad=0')

    def sysctl(self, setting):
        """sysctl -w in the VM's network namespace (/proc/sys/net is the
        opener's namespace)."""
        self.run(['sysctl', '-q', '-w', setting], check=True,
                 capture_output=True, timeout=10)

    def link_local(self):
        """eth0's fe80:: address once it is usable (not tentative)."""
        with NetNS(self.ns) as ns:
            index = ns.link_lookup(ifname='eth0')[0]
            for addr in ns.get_addr(index=index, family=10):
                ip = addr.get_attr('IFA_ADDRESS')
                flags = addr.get_attr('IFA_FLAGS') or addr['flags']
                if ip.startswith('fe80:') and not flags & 0x40:  # TENTATIVE
                    return ip
        return None

    def dhcp6(self, stateless=False, timeout=10):
        """One dhclient -6 exchange; the lease as the script saw it, or None
        when nothing was bound within `timeout` (dhclient -6 retries for
        ever when no server answers).

        The lease file path reaches the script through
        `dhclient -e` (dhclient runs its script with an environment of its
        own, not ours: the script would write `.tmp` in the cwd), and
        dhclient runs in the foreground (-d), ended by its PID once the
        script recorded the lease: without -d, a dhclient -6 still
        soliciting goes to the background and outlives a timeout."""
        for path in (self.out, self.out + '.tmp'):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        lease = self.out + '.leases'
        pidf = self.out + '.pid'
        # DUID-LL: from the MAC, the same in every call (a VM keeps its
        # DUID; a new DUID-LLT per call finds the address still leased to
        # the previous one: dnsmasq answers "no addresses available")
        args = ['dhclient', '-6', '-d', '-v', '-D', 'LL', '-sf', DHCP_SCRIPT,
                '-lf', lease, '-pf', pidf,
                '-e', 'VDSM_DHCP_LEASE_OUT=' + self.out]
        if stateless:
            args.append('-S')
        args.append('eth0')
        log = open(self.out + '.log', 'wb')
        try:
            with netns_preexec(self.ns) as enter:
                proc = subprocess.Popen(args, preexec_fn=enter, stdout=log,
                                        stderr=log, stdin=subprocess.DEVNULL,
                                        cwd=self.lab.dir)
        finally:
            log.close()
        try:
            deadline = time.monotonic() + timeout
            while not os.path.exists(self.out) and proc.poll() is None \
                    and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            stop_process(proc)
            _kill_pidfile(pidf, 'dhclient')
            for path in (lease, pidf):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
        return read_env(self.out) if os.path.exists(self.out) else None

    def dhclient_log(self):
        """dhclient's -v output of the last dhcp6()."""
        try:
            with open(self.out + '.log', errors='replace') as f:
                return f.read()
        except FileNotFoundError:
            return ''


def _kill_pidfile(path, name):
    """SIGKILL the process in a pid file if it still runs `name`."""
    try:
        with open(path) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return
    argv = pids.proc_cmdline(pid)
    if argv and os.path.basename(argv[0]) == name:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
