"""Shared helpers of figures 3-7: a bench "host" (the test rig's Host and
Lab), many networks at once, status predicates, /proc measurements, and a
check that nothing of ours survives.

Everything runs inside tests/isolated; cleanup is by name and PID."""
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time

from tests import rig
from tests.rig import Host
from vdsm_dhcp import options
from vdsm_dhcp.agent import control
from vdsm_dhcp.fileutil import atomic_write

CLK_TCK = os.sysconf('SC_CLK_TCK')
UUID = re.compile(r'[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-'
                  r'[0-9a-f]{12}')


def require_isolation():
    if os.environ.get('VDSM_DHCP_ISOLATED') != '1':
        raise SystemExit('run the benchmarks through tests/isolated '
                         '(make bench does)')


def pct(values, p):
    """The p-th percentile (nearest rank) of values; None if empty."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def median(values):
    return statistics.median(values) if values else None


def row(name, ours, unit, target=None, met=None, runs=None, notes=''):
    return {'name': name, 'ours': ours, 'neutron': None, 'unit': unit,
            'target': target, 'met': met, 'runs': list(runs or []),
            'notes': notes}


# -- who else is on the machine (2 cores, shared) ----------------------------
def others():
    """Other heavy programs running now (another engineer's benchmark or
    test run), as 'name(pid)' strings; ours (this process tree) excluded."""
    mine = _descendants(os.getpid()) | {os.getpid()}
    found = []
    for pid in _pids():
        if pid in mine:
            continue
        argv = _cmdline(pid)
        if not argv:
            continue
        text = ' '.join(argv)
        for key in ('bench.run', 'pytest', 'bench.fig', 'bench.race',
                    'demo.lab', 'neutron', 'mariadbd', 'beam.smp'):
            if key in text:
                found.append('%s(%d)' % (key, pid))
                break
    return sorted(set(found))


def _pids():
    return [int(p) for p in os.listdir('/proc') if p.isdigit()]


def _cmdline(pid):
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            return [a.decode(errors='replace')
                    for a in f.read().split(b'\0')[:-1]]
    except OSError:
        return None


def _ppid(pid):
    try:
        with open('/proc/%d/stat' % pid) as f:
            return int(f.read().rpartition(')')[2].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _descendants(root):
    children = {}
    for pid in _pids():
        children.setdefault(_ppid(pid), []).append(pid)
    out, todo = set(), [root]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def survivors(base):
    """Processes whose command line mentions `base` (agents, dnsmasq,
    hooks of this bench): must be none after cleanup."""
    out = []
    for pid in _pids():
        if pid == os.getpid():
            continue
        argv = _cmdline(pid)
        if argv and any(base in a for a in argv):
            out.append((pid, ' '.join(argv)[:120]))
    return out


class Overlap:
    """Records other heavy programs seen while a figure ran."""

    def __init__(self):
        self.seen = set()
        self.sample()

    def sample(self):
        self.seen.update(others())

    def note(self):
        self.sample()
        if not self.seen:
            return 'ran alone'
        names = {}
        for item in self.seen:
            key = item.split('(')[0]
            names[key] = names.get(key, 0) + 1
        return 'overlapped with ' + ', '.join(
            '%s x%d' % kv for kv in sorted(names.items()))


# -- limits -------------------------------------------------------------------
def inotify_budget(user='nobody'):
    """(fs.inotify.max_user_instances, instances `user` holds now). Every
    dnsmasq with --dhcp-hostsdir holds one, charged to its user (nobody):
    past the limit a dnsmasq exits at start with "failed to create
    inotify: Too many open files"."""
    import pwd
    with open('/proc/sys/fs/inotify/max_user_instances') as f:
        limit = int(f.read())
    uid = pwd.getpwnam(user).pw_uid
    used = 0
    for pid in _pids():
        try:
            if os.stat('/proc/%d' % pid).st_uid != uid:
                continue
            for fd in os.listdir('/proc/%d/fd' % pid):
                if os.readlink('/proc/%d/fd/%s' % (pid, fd)) == \
                        'anon_inode:inotify':
                    used += 1
        except OSError:
            pass
    return limit, used


def not_served(status):
    """{reason: count} of the networks not (fully) served."""
    out = {}
    for n in (status or {}).get('networks', []):
        if not n['served'] or n.get('hosts_loaded') != n['hosts']:
            why = (n.get('error') or n.get('reason') or 'hosts not loaded')
            why = UUID.sub('<id>', why.split('\n')[0])[-160:]
            out[why] = out.get(why, 0) + 1
    return out


# -- /proc measurements -------------------------------------------------------
def cpu_seconds(pid):
    with open('/proc/%d/stat' % pid) as f:
        fields = f.read().rpartition(')')[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK   # utime + stime


def cpu_seconds_live(pid):
    """On-CPU time of the live threads, in ns precision (schedstat); for
    short idle windows where clock ticks are too coarse. Threads that
    exit within the window are not counted: use cpu_seconds() then."""
    total = 0
    for tid in os.listdir('/proc/%d/task' % pid):
        try:
            with open('/proc/%d/task/%s/schedstat' % (pid, tid)) as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total / 1e9


def rss_mb(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024.0
    return None


def pss_mb(pid):
    """Proportional set size: shared pages (the dnsmasq binary, libc)
    divided among the processes that share them."""
    try:
        with open('/proc/%d/smaps_rollup' % pid) as f:
            for line in f:
                if line.startswith('Pss:'):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


# -- the bench host -------------------------------------------------------------
class Bench:
    """A Host (config, IPAM file, agents) and a Lab (bridges, VMs) under one
    temp dir. close() tears everything down, every step even if one
    fails, and returns the processes that survived (should be [])."""

    def __init__(self, **conf_extra):
        require_isolation()
        self.root = tempfile.mkdtemp(prefix='vdsm-dhcp-bench-')
        self.lab = self.host = None
        try:
            os.chmod(self.root, 0o755)   # dnsmasq (nobody) reads below it
            self.lab = rig.Lab()
            self.host = Host(os.path.join(self.root, 'host-a'))
            opts = dict(control_group='nogroup', supervise_interval=0.25)
            opts.update(conf_extra)
            rig.write_conf(self.host.conf_path, self.host.base, **opts)
            self.host.conf = options.load(self.host.conf_path)
        except BaseException:
            self.close()
            raise
        self.conf = self.host.conf
        self.ipam = self.host.ipam
        self.nets = []        # (name, net, subnet, prefix)
        self.free_ips = {}    # net id -> list of free host numbers

    # IPAM --------------------------------------------------------------------
    def save(self, sync=False):
        """The IPAM document, atomically (no fsync on the hot path: the
        agent re-reads it by inotify either way)."""
        atomic_write(self.ipam.path, json.dumps({
            'networks': self.ipam.networks, 'subnets': self.ipam.subnets,
            'ports': self.ipam.ports}), sync=sync)

    def networks(self, count, ports_each, bridges=True, mtu=1500):
        """`count` networks with a /24 each (10.X.Y.0), a DHCP port for
        this host and `ports_each` VM ports; bridges made, IPAM saved,
        the networks file not written (see listed())."""
        assert ports_each <= 200
        start = len(self.nets)
        for i in range(start, start + count):
            prefix = '10.%d.%d' % (100 + i // 250, i % 250)
            name = 'b%s%d' % (self.lab.tag, i)
            net = self.ipam.network(mtu=mtu)
            sub = self.ipam.subnet(net, prefix + '.0/24',
                                   gateway=prefix + '.1',
                                   dns=[prefix + '.53'])
            self.ipam.dhcp_port(net, rig.mac(0xd00000 + i),
                                [(sub, prefix + '.2')], host='host-a')
            for k in range(ports_each):
                self.port(net, sub, prefix, 10 + k, save=False)
            self.free_ips[net['id']] = list(range(10 + ports_each, 250))
            self.nets.append((name, net, sub, prefix))
            if bridges:
                self.lab.bridge(name, mtu=mtu)
        self.save(sync=True)
        return self.nets[start:]

    _mac_seq = 0

    def port(self, net, sub, prefix, host_no, save=True):
        Bench._mac_seq += 1
        port = self.ipam.port(net, rig.mac(0x100000 + Bench._mac_seq),
                              [(sub, '%s.%d' % (prefix, host_no))])
        if save:
            self.save()
        return port

    def listed(self, nets=None):
        rig.write_networks(self.host.base, [
            (name, net['id']) for name, net, _, _ in
            (self.nets if nets is None else nets)])

    # agent -------------------------------------------------------------------
    def agent(self, wait=True):
        agent = self.host.agent(start=False)
        agent.start(wait=wait)
        return agent

    def call(self, cmd, args=None, timeout=10.0):
        return control.call(self.conf, cmd, args, timeout=timeout)

    def status(self, timeout=10.0):
        try:
            return self.call('status', timeout=timeout)
        except control.ControlError:
            return None

    def dnsmasq_pids(self, status=None):
        status = status or self.status()
        return {n['name']: n['dnsmasq_pid'] for n in status['networks']}

    # teardown ----------------------------------------------------------------
    def close(self):
        """Empty networks file + SIGTERM (the agent tears down), --cleanup,
        leftover dnsmasq by PID, bridges and VMs, the temp dir. Returns
        the survivors."""
        errors = []
        try:
            if self.host is not None:
                self.host.cleanup()
        except Exception as e:
            errors.append('host cleanup: %s' % e)
        try:
            if self.lab is not None:
                self.lab.close()
        except Exception as e:
            errors.append('lab close: %s' % e)
        left = survivors(self.root)
        for pid, _ in left:     # ours by our temp dir in their argv
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)
        if errors:
            print('bench cleanup problems: %s' % errors, flush=True)
        if left:
            print('bench cleanup: killed survivors %s' % left, flush=True)
        return left


def wait_until(predicate, timeout, interval=0.02):
    """(value, seconds) once predicate() is truthy, or (None, timeout)."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        value = predicate()
        if value:
            return value, time.monotonic() - started
        if time.monotonic() > deadline:
            return None, time.monotonic() - started
        time.sleep(interval)


def servable(status, names=None, adopted=None):
    """Every (named) network served, with all its hosts loaded."""
    if not status:
        return False
    nets = status['networks']
    if names is not None:
        nets = [n for n in nets if n['name'] in names]
        if len(nets) != len(names):
            return False
    for n in nets:
        if not n['served'] or n.get('hosts_loaded') != n['hosts']:
            return False
        if adopted is not None and bool(n.get('adopted')) != adopted:
            return False
    return True


class Connection:
    """One persistent control-socket connection: the server answers any
    number of requests on it (no thread spawned per request)."""

    def __init__(self, conf, timeout=10.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(control.socket_path(conf))
        self.reader = self.sock.makefile('rb')

    def call(self, cmd, **args):
        self.sock.sendall(json.dumps(dict(args, cmd=cmd)).encode() + b'\n')
        line = self.reader.readline()
        if not line:
            raise control.ControlError('connection closed')
        reply = json.loads(line)
        if not reply.get('ok'):
            raise control.ControlError(reply.get('error'))
        return reply['result']

    def close(self):
        self.reader.close()
        self.sock.close()


def profile(pid, seconds, out):
    """py-spy record of a running agent, in the background (rate 100/s);
    returns the Popen. Only used for notes on missed targets."""
    exe = os.path.join(rig.BIN, 'py-spy')
    if not os.path.exists(exe):
        return None
    return subprocess.Popen(
        [exe, 'record', '--pid', str(pid), '--duration', str(int(seconds)),
         '--rate', '100', '--format', 'raw', '--output', out, '--nonblocking'],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def top_frames(raw_path, n=8):
    """From a py-spy raw (collapsed stacks) file: the functions where the
    most samples were spent (self+children), excluding idle waits."""
    totals, total = {}, 0
    try:
        with open(raw_path) as f:
            for line in f:
                stack, _, count = line.rstrip().rpartition(' ')
                count = int(count)
                frames = stack.split(';')
                if any(w in frames[-1] for w in ('wait (threading', 'select',
                                                 'poll (', 'accept (',
                                                 '_wait_for_tstate_lock')):
                    continue
                total += count
                for fr in set(frames):
                    totals[fr] = totals.get(fr, 0) + count
    except OSError:
        return []
    best = sorted(totals.items(), key=lambda kv: -kv[1])
    return [(fr, c / total) for fr, c in best[:n]] if total else []
