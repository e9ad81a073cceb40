"""Everything about dnsmasq: its command line, its files, its process.

One dnsmasq per network, in the network's namespace, bound to the DHCP
port's interface, no DNS (--port=0), not authoritative (several hosts serve
one network and must not NAK each other's clients), privileges dropped.

Files under STATE_DIR/<quantumId>/ (an operator finds them by the id):
  hosts/      --dhcp-hostsdir: dnsmasq reads a new file by inotify, no
              signal and no rewrite of the other hosts. One file per port;
              a burst of new ports goes into one batch file, because
              dnsmasq pays a full lease reconciliation per file it reads.
  tmp/        where files are written before being renamed into hosts/
  opts        --dhcp-optsfile (router, DNS, routes, MTU per subnet)
  leases, pid, dnsmasq.log
A changed or removed port needs a re-read: SIGHUP, once per apply however
many changed. Only a different command line restarts dnsmasq.
"""
import errno
import grp
import logging
import os
import pwd
import re
import select
import shutil
import signal
import stat
import subprocess
import threading
import time
import uuid

import netaddr
from oslo_config import cfg

from vdsm_dhcp import logs
from vdsm_dhcp.desired import HOST_LINE
from vdsm_dhcp.fileutil import atomic_write
from vdsm_dhcp.netns_exec import netns_preexec
from vdsm_dhcp.readiness import LoadTracker
from vdsm_dhcp.untrusted import show

log = logging.getLogger(__name__)

PORT_MARK = '# port '
BATCH_PREFIX = 'batch-'
# a hostsdir entry that is no port's (a duplicate, unparseable content):
# ':' is never in a port id, so the sync removes the file it names
STALE_KEY = 'stale:'

# The shape of every line we give dnsmasq, checked where it is rendered:
# a value that slipped past validation is refused, never half-read.
_TAG = r'tag:subnet-[A-Za-z0-9][A-Za-z0-9_-]{0,63}'
_V4 = r'(?:[0-9]{1,3}\.){3}[0-9]{1,3}'
_V6 = r'\[[0-9a-f:.]{2,45}\]'
_ROUTES = r'{v4}/[0-9]{{1,2}},{v4}(?:,{v4}/[0-9]{{1,2}},{v4})*'.format(v4=_V4)
OPTS_LINE = re.compile(
    r'{tag},(?:option:router(?:,{v4})?|option:dns-server,{v4}(?:,{v4})*'
    r'|(?:option:classless-static-route|249),{routes}|option:mtu,[0-9]{{2,5}}'
    r'|option6:dns-server,{v6}(?:,{v6})*)'.format(
        tag=_TAG, v4=_V4, v6=_V6, routes=_ROUTES))
RANGE_ARG = re.compile(
    r'--dhcp-range=set:subnet-[A-Za-z0-9][A-Za-z0-9_-]{0,63},'
    r'(?:%s,static,%s|[0-9a-f:]{2,39},static,[0-9]{1,3}),[0-9]+s'
    % (_V4, _V4))
LEASE_LINE = re.compile(r'[0-9]+ [0-9a-f]{2}(?::[0-9a-f]{2}){5} %s \* \*'
                        % _V4)
# dnsmasq reads at most 1024 characters of a line: more is cut into a
# second, bad line
MAX_LINE = 1000


def checked_line(line, shape, what):
    """line, if it is one line of the expected shape; else DnsmasqError
    (the network is retried, nothing is written)."""
    if len(line) > MAX_LINE or not shape.fullmatch(line):
        raise DnsmasqError('refusing to give dnsmasq the %s %s'
                           % (what, show(line)))
    return line

dnsmasq_opts = [
    cfg.StrOpt('binary', default='dnsmasq', help='The dnsmasq program.'),
    cfg.IntOpt('lease_duration', default=86400, min=120,
               help='Lease time in seconds handed to clients.'),
    cfg.IntOpt('lease_max', default=65536, min=1,
               help='--dhcp-lease-max (dnsmasq refuses leases past it; its '
                    'own default of 1000 is too small for a big network).'),
    cfg.StrOpt('user', default='nobody',
               help='The unprivileged user dnsmasq drops to.'),
    cfg.StrOpt('group', default=None, sample_default='nogroup or nobody',
               help='Its group (default: nogroup where it exists, else '
                    'nobody).'),
    cfg.IntOpt('batch_threshold', default=2, min=2,
               help='New ports applied together, at least this many, go '
                    'into one batch file: one read by dnsmasq, not many.'),
    cfg.FloatOpt('start_timeout', default=10.0,
                 help='Seconds for dnsmasq to start and write its pid.'),
    cfg.IntOpt('log_max_bytes', default=10 * 1024 * 1024, min=4096,
               help='Rotate dnsmasq.log to dnsmasq.log.1 past this size '
                    '(dnsmasq reopens its log on SIGUSR2): a network\'s '
                    'logs take about twice this on disk.'),
    cfg.IntOpt('client_rate', default=50, min=0,
               help='DHCP packets per second one client (its Ethernet '
                    'source MAC) may send to a network\'s dnsmasq; the rest '
                    'are dropped by nftables in the DHCP namespace, so a VM '
                    'that floods cannot starve the others. 0: no limit.'),
    cfg.StrOpt('nft', default='nft',
               help='The nftables program (for client_rate).'),
]


class DnsmasqError(Exception):
    pass


def default_group():
    for name in ('nogroup', 'nobody'):
        try:
            grp.getgrnam(name)
            return name
        except KeyError:
            pass
    return None


class Files:
    def __init__(self, state_dir, quantum_id):
        self.base = os.path.join(state_dir, quantum_id)
        self.hosts = os.path.join(self.base, 'hosts')
        self.tmp = os.path.join(self.base, 'tmp')
        self.opts = os.path.join(self.base, 'opts')
        self.leases = os.path.join(self.base, 'leases')
        self.pid = os.path.join(self.base, 'pid')
        self.log = os.path.join(self.base, 'dnsmasq.log')

    def create(self):
        for d in (self.base, self.hosts, self.tmp):
            os.makedirs(d, mode=0o755, exist_ok=True)


# dnsmasq reads one packet per turn of its loop: a flood fills its socket
# queue and the kernel drops the other VMs' packets with the flood's. Each
# source MAC gets a token bucket before the queue (netdev ingress: dropped
# before the IP stack). Applied whole (nft -f is one transaction), again
# at each start of dnsmasq.
CLIENT_LIMIT_RULES = """\
table netdev vdsm_dhcp
delete table netdev vdsm_dhcp
table netdev vdsm_dhcp {
    set clients {
        type ether_addr
        size 65535
        flags dynamic,timeout
        timeout 1m
    }
    chain ingress {
        type filter hook ingress device "%(ifname)s" priority filter;
        meta l4proto udp th dport { 67, 547 } update @clients { ether saddr \
limit rate over %(rate)d/second burst %(burst)d packets } counter drop
    }
}
"""


def limit_clients(conf, namespace, ifname):
    """The per-client rate limit in front of dnsmasq (client_rate). A
    failure is logged: dnsmasq still serves, only unprotected."""
    rate = conf.dnsmasq.client_rate
    rules = CLIENT_LIMIT_RULES % {'ifname': ifname, 'rate': rate,
                                  'burst': max(10, 2 * rate)}
    if not rate:     # none wanted: remove one set before
        rules = ''.join(rules.splitlines(True)[:2])
    try:
        with netns_preexec(namespace) as preexec:
            result = subprocess.run(
                [conf.dnsmasq.nft, '-f', '-'], input=rules.encode(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, timeout=30, preexec_fn=preexec)
        error = result.stderr.decode(errors='replace').strip() \
            if result.returncode else None
    except (OSError, subprocess.SubprocessError) as e:
        error = str(e)
    if error and rate:
        log.warning('no per-client DHCP rate limit on %s in %s (%s): one VM '
                    'flooding can starve the others', ifname, namespace,
                    error[-300:])
    return not error


def command_line(conf, plan, files, ifname):
    """dnsmasq's argv for a NetworkPlan: all that, when it changes, needs a
    restart (ranges, interface, files); everything else is in files."""
    lease = conf.dnsmasq.lease_duration
    argv = [conf.dnsmasq.binary,
            '--keep-in-foreground', '--conf-file=/dev/null',
            '--no-hosts', '--no-resolv', '--port=0',
            '--bind-interfaces', '--interface=' + ifname,
            '--except-interface=lo',
            '--user=' + conf.dnsmasq.user,
            '--group=' + (conf.dnsmasq.group or default_group() or 'nobody'),
            '--pid-file=' + files.pid,
            '--dhcp-hostsdir=' + files.hosts,
            '--dhcp-optsfile=' + files.opts,
            '--dhcp-leasefile=' + files.leases,
            '--log-facility=' + files.log,
            # The log feeds the readiness gate: keep tenants out of it.
            # Every IPv4 port we serve is a dhcp-host ("known"); an IPv4
            # client we do not know is dropped before any reply or log
            # line (and never NAKed: another host may serve it). Not
            # DHCPv6: a stateless subnet answers clients with no host
            # entry (what they may log is bounded by client_rate).
            # --quiet-dhcp* silences routine per-packet lines; errors and
            # the "read <file>" lines are still logged.
            '--dhcp-ignore=tag:!known,tag:!dhcpv6',
            '--quiet-dhcp', '--quiet-dhcp6',
            '--dhcp-lease-max=%d' % conf.dnsmasq.lease_max]
    for subnet in plan.subnets:
        net = netaddr.IPNetwork(subnet.cidr)
        if subnet.ip_version == 4:
            argv.append('--dhcp-range=set:%s,%s,static,%s,%ds'
                        % (subnet.tag, net.network, net.netmask, lease))
        else:
            argv.append('--dhcp-range=set:%s,%s,static,%d,%ds'
                        % (subnet.tag, net.network, net.prefixlen, lease))
    for arg in argv:
        if arg.startswith('--dhcp-range='):
            checked_line(arg, RANGE_ARG, 'argument')
        elif not arg.isprintable():
            raise DnsmasqError('refusing to give dnsmasq the argument %s'
                               % show(arg))
    return argv


def opts_line(subnet, option, values=()):
    """One --dhcp-optsfile line: "tag:<subnet tag>,<option>[,values]"."""
    return checked_line(','.join(['tag:' + subnet.tag, option] +
                                 [str(v) for v in values]),
                        OPTS_LINE, 'option line')


def opts_content(plan):
    """--dhcp-optsfile lines, as Neutron writes them (tag per subnet)."""
    lines = []
    for s in plan.subnets:
        if s.ip_version == 4:
            routes = list(s.host_routes)
            if routes and s.gateway and not any(
                    d == '0.0.0.0/0' for d, _ in routes):
                # a client that takes option 121 ignores option 3
                routes.append(('0.0.0.0/0', s.gateway))
            # an empty router option stops dnsmasq offering itself
            lines.append(opts_line(s, 'option:router',
                                   [s.gateway] if s.gateway else []))
            if s.dns:
                lines.append(opts_line(s, 'option:dns-server', s.dns))
            if routes:
                flat = [part for route in routes for part in route]
                lines.append(opts_line(s, 'option:classless-static-route',
                                       flat))
                lines.append(opts_line(s, '249', flat))
            if plan.mtu:
                lines.append(opts_line(s, 'option:mtu', ['%d' % plan.mtu]))
        elif s.dns:
            lines.append(opts_line(s, 'option6:dns-server',
                                   ['[%s]' % d for d in s.dns]))
    return ''.join(line + '\n' for line in lines)


def _read_regular(path):
    """A regular file's text (bytes kept as surrogates), or None: never
    blocks on a FIFO nor follows a link."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(fd, 'rb') as f:
            fd = None
            return f.read().decode('utf-8', 'surrogateescape')
    except OSError:
        return None
    finally:
        if fd is not None:
            os.close(fd)


def read_hostsdir(path):
    """port id -> (file name, entry text) from the files we wrote. Never
    raises on what it finds: content that is not ours as we write it
    (a port in two files, text outside any port's part) is keyed under
    STALE_KEY, so that the next sync removes that file."""
    entries = {}
    try:
        names = sorted(os.listdir(path))
    except OSError:
        return entries
    for name in names:
        text = _read_regular(os.path.join(path, name))
        if text is None:
            continue
        if not name.startswith(BATCH_PREFIX):
            parts = [(name, text)]
            stray = ''
        else:
            stray, *chunks = text.split(PORT_MARK)
            parts = [chunk.partition('\n')[::2] for chunk in chunks]
        for port_id, body in parts:
            if port_id in entries or STALE_KEY in port_id:
                stray += body
            else:
                entries[port_id] = (name, body)
        if stray or not parts:
            entries[STALE_KEY + name] = (name, stray)
    return entries


def lease_line(expiry, mac, ip):
    """One seeded IPv4 lease line (with its newline)."""
    return checked_line('%d %s %s * *' % (expiry, mac, ip), LEASE_LINE,
                        'lease line') + '\n'


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().rpartition(')')[2].split()[0] != 'Z'
    except OSError:
        return False


def proc_cmdline(pid):
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            return [a.decode() for a in f.read().split(b'\0')[:-1]]
    except OSError:
        return None


def read_pid(files):
    try:
        with open(files.pid) as f:
            return int(f.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


class Dnsmasq:
    """One network's dnsmasq: adopts a running one, else spawns it.

    The process is held by a handle that cannot outlive it: the Popen of
    the dnsmasq we spawned (its PID stays ours until we reap it), or a
    pidfd of an adopted one, opened once its command line was seen to be
    ours. Signals go through the handle, so a PID reused by a stranger is
    never signalled. `written` is replaced, never changed in place: a
    reader in another thread takes the dict once and reads that.
    """

    def __init__(self, conf, quantum_id):
        self.conf = conf
        self.quantum_id = quantum_id
        self.files = Files(conf.state_dir, quantum_id)
        self.proc = None          # Popen when we spawned it
        self.pidfd = None         # when we adopted it (where supported)
        self.pid = None
        self.cmdline = None
        self.started_at = None    # monotonic, when we spawned it
        self.written = {}         # port id -> (file name, entry text)
        self.opts = None
        self.reloads = 0
        self.restarts = 0
        self.adopted = False
        self._handle_lock = threading.Lock()
        self.tracker = LoadTracker(self.files.log, self.files.hosts)

    # -- process ---------------------------------------------------------
    def ours(self, pid):
        """pid runs a dnsmasq of this network (its argv names our pid
        file), right now."""
        argv = proc_cmdline(pid)
        return bool(argv) and '--pid-file=' + self.files.pid in argv

    def adopt(self):
        """Take over a dnsmasq left by a previous agent (no restart)."""
        pid = read_pid(self.files)
        if not pid or not self.ours(pid) or not pid_alive(pid):
            return False
        pidfd = _pidfd_open(pid)
        # checked again with the handle held: the PID cannot change hands
        # any more, and it was ours after we took it
        if not self.ours(pid) or (pidfd is not None and _exited(pidfd)):
            _close(pidfd)
            return False
        with self._handle_lock:
            self.pid, self.pidfd, self.proc = pid, pidfd, None
            self.cmdline, self.adopted = proc_cmdline(pid), True
            self.started_at = None
        written = read_hostsdir(self.files.hosts)
        self.written = written
        self.tracker.start_at_end()
        self.tracker.expect_idle(written)
        self.opts = _read_regular(self.files.opts)   # None: rewritten
        log.info('network %s: adopted dnsmasq pid %d', self.quantum_id, pid,
                 extra=logs.network(self.quantum_id))
        return True

    def alive(self):
        with self._handle_lock:
            if self.proc is not None:
                return self.proc.poll() is None
            if self.pidfd is not None:
                return not _exited(self.pidfd)
            # no pidfd (old kernel): the PID must still run our dnsmasq
            return bool(self.pid) and pid_alive(self.pid) and \
                self.ours(self.pid)

    def uptime(self):
        """Seconds since we spawned it; None when adopted or not running."""
        if self.started_at is None or not self.pid:
            return None
        return time.monotonic() - self.started_at

    def forget(self):
        """The process is gone (alive() said so): drop its handle."""
        with self._handle_lock:
            pidfd = self.pidfd
            self.pid = self.proc = self.pidfd = self.cmdline = None
            self.started_at = None
        _close(pidfd)

    def start(self, argv, namespace):
        self.files.create()
        for arg in argv:
            if arg.startswith('--interface='):
                limit_clients(self.conf, namespace, arg.split('=', 1)[1])
        # dnsmasq runs as an unprivileged user: it must write its leases.
        owner = pwd.getpwnam(self.conf.dnsmasq.user).pw_uid
        for path in (self.files.leases,):
            if not os.path.exists(path):
                open(path, 'a').close()
            os.chown(path, owner, -1)
        try:
            os.unlink(self.files.pid)
        except FileNotFoundError:
            pass
        log_fd = os.open(self.files.log,
                         os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            with netns_preexec(namespace) as preexec:
                proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL, stderr=log_fd,
                    start_new_session=True, preexec_fn=preexec)
        except OSError as e:
            raise DnsmasqError('cannot run %s: %s' % (argv[0], e)) from None
        finally:
            os.close(log_fd)
        self.forget()
        with self._handle_lock:
            self.proc, self.pid, self.cmdline = proc, proc.pid, argv
            self.adopted, self.started_at = False, time.monotonic()
        deadline = time.monotonic() + self.conf.dnsmasq.start_timeout
        while read_pid(self.files) != proc.pid:
            if proc.poll() is not None:
                raise DnsmasqError('dnsmasq for %s exited with %s: %s'
                                   % (self.quantum_id, proc.returncode,
                                      self.log_tail()))
            if time.monotonic() > deadline:
                raise DnsmasqError('dnsmasq for %s did not start within %ss'
                                   % (self.quantum_id,
                                      self.conf.dnsmasq.start_timeout))
            time.sleep(0.005)
        log.info('network %s: started dnsmasq pid %d', self.quantum_id,
                 proc.pid, extra=logs.network(self.quantum_id))

    def stop(self):
        with self._handle_lock:
            pid, proc, pidfd = self.pid, self.proc, self.pidfd
            self.pid = self.proc = self.pidfd = self.cmdline = None
            self.started_at = None
        if not pid:
            return
        try:
            if not _send(pid, proc, pidfd, signal.SIGTERM, self):
                return
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                if not _runs(pid, proc, pidfd, self):
                    return
                time.sleep(0.005)
            _send(pid, proc, pidfd, signal.SIGKILL, self)
            if proc is not None:
                proc.wait()
        finally:
            _close(pidfd)

    def signal(self, signum):
        with self._handle_lock:
            if self.pid:
                _send(self.pid, self.proc, self.pidfd, signum, self)

    def log_tail(self, size=2000):
        try:
            with open(self.files.log, 'rb') as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - size))
                return f.read().decode(errors='replace').strip()
        except OSError:
            return ''

    def rotate_log(self):
        """Keep dnsmasq.log under log_max_bytes (plus one rotated file)
        without losing a line the readiness gate needs: see
        LoadTracker.rotate. Called by the agent's supervision."""
        pid = self.pid
        if not pid:
            return False
        try:
            owner = pwd.getpwnam(self.conf.dnsmasq.user).pw_uid
        except KeyError:
            return False

        def reopen():
            self.signal(signal.SIGUSR2)   # dnsmasq: reopen the log file
        try:
            self.tracker.check_writer(pid, reopen)
            return self.tracker.rotate(self.conf.dnsmasq.log_max_bytes,
                                       pid, owner, reopen)
        except OSError as e:
            log.error('network %s: log rotation: %s', self.quantum_id, e,
                      extra=logs.network(self.quantum_id))
            return False

    # -- files -------------------------------------------------------------
    def _write(self, name, text):
        atomic_write(os.path.join(self.files.hosts, name), text,
                     tmp_dir=self.files.tmp, sync=False)

    def sync_hosts(self, hosts):
        """Bring hosts/ to `hosts` (port id -> entry). Returns whether
        dnsmasq must re-read (SIGHUP): a changed or removed entry stays
        loaded in dnsmasq until then; a new file needs no signal."""
        # a copy, published when done (also after a failed write: what is
        # on disk), so that readers in other threads never see it change
        written = dict(self.written)
        added = [p for p in hosts if p not in written]
        changed = [p for p in hosts
                   if p in written and written[p][1] != hosts[p]]
        removed = [p for p in written if p not in hosts]
        stale_files = {written[p][0] for p in changed + removed}
        touched_batches = {f for f in stale_files
                           if f.startswith(BATCH_PREFIX)}
        # The unchanged neighbours in a touched batch file move, with the
        # new and changed entries, into the files written now.
        moved = [p for p, (f, _) in written.items()
                 if f in touched_batches and p in hosts and p not in changed]
        to_write = added + changed + moved
        try:
            if len(to_write) >= self.conf.dnsmasq.batch_threshold:
                name = BATCH_PREFIX + uuid.uuid4().hex[:12]
                self.tracker.expect({p: name for p in to_write})
                self._write(name, ''.join('%s%s\n%s' % (PORT_MARK, p,
                                                         hosts[p])
                                          for p in to_write))
                written.update((p, (name, hosts[p])) for p in to_write)
            else:
                self.tracker.expect({p: p for p in to_write})
                for port_id in to_write:
                    self._write(port_id, hosts[port_id])
                    written[port_id] = (port_id, hosts[port_id])
                    stale_files.discard(port_id)   # rewritten in place
            for name in stale_files:
                _unlink(os.path.join(self.files.hosts, name))
            for port_id in removed:
                del written[port_id]
            self.tracker.forget(removed)
        finally:
            self.written = written
        return bool(changed or removed)

    def seed_leases(self, hosts):
        """Before a start: a lease per IPv4 host entry, as Neutron does.
        Several servers are non-authoritative, so a dnsmasq ignores a
        rebooting VM's request for a lease it does not know (granted by
        another host now gone); the VM would wait many seconds to fall
        back to DISCOVER."""
        existing = _read_regular(self.files.leases) or ''
        known = {line.split()[1] for line in existing.splitlines()
                 if len(line.split()) >= 3}
        expiry = int(time.time()) + self.conf.dnsmasq.lease_duration
        seeded = []
        for text in hosts.values():
            for entry in text.splitlines():
                match = HOST_LINE.fullmatch(entry)
                if match is None:
                    continue
                mac, addr = match.group('mac', 'addr')
                if not addr.startswith('[') and mac not in known:
                    seeded.append(lease_line(expiry, mac, addr))
        if seeded:   # IPv4 leases come before dnsmasq's "duid" line
            self.files.create()
            atomic_write(self.files.leases, (''.join(seeded) + existing)
                         .encode('utf-8', 'surrogateescape'), sync=False)

    def loaded(self, port_id):
        """dnsmasq has read this port's entry and can answer it now."""
        if port_id not in self.written or not self.alive():
            return False
        self.tracker.confirm(self.pid)
        return not self.tracker.pending(port_id)

    def loaded_count(self):
        if not self.alive():
            return 0
        self.tracker.confirm(self.pid)
        return len(self.written) - self.tracker.pending_count()

    def sync_opts(self, text):
        if text == self.opts:
            return False
        atomic_write(self.files.opts, text, sync=False)
        self.opts = text
        return True

    def clear_files(self):
        self.tracker.forget(list(self.written))
        self.written = {}
        self.opts = None
        if os.path.isdir(self.files.hosts):
            shutil.rmtree(self.files.hosts)
        self.files.create()

    def remove_files(self):
        shutil.rmtree(self.files.base, ignore_errors=True)


def _unlink(path):
    try:
        os.unlink(path)
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise


def _pidfd_open(pid):
    """A pidfd of pid, or None where the kernel or Python has none."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _exited(pidfd):
    """A pidfd polls readable once its process has exited."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


def _close(fd):
    if fd is not None:
        os.close(fd)


def _runs(pid, proc, pidfd, dm):
    if proc is not None:
        return proc.poll() is None
    if pidfd is not None:
        return not _exited(pidfd)
    return pid_alive(pid) and dm.ours(pid)


def _send(pid, proc, pidfd, signum, dm):
    """Signal the process behind the handle; False if it is gone (or the
    PID no longer runs our dnsmasq: then it is not ours to signal)."""
    try:
        if proc is not None:
            if proc.poll() is not None:
                return False
            proc.send_signal(signum)
        elif pidfd is not None:
            signal.pidfd_send_signal(pidfd, signum)
        elif dm.ours(pid):
            os.kill(pid, signum)
        else:
            return False
    except ProcessLookupError:
        return False
    return True
