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
import shutil
import signal
import subprocess
import time
import uuid

import netaddr
from oslo_config import cfg

from vdsm_dhcp.fileutil import atomic_write
from vdsm_dhcp.netns_exec import netns_preexec
from vdsm_dhcp.readiness import LoadTracker

log = logging.getLogger(__name__)

PORT_MARK = '# port '
BATCH_PREFIX = 'batch-'

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
    cfg.IntOpt('log_max_bytes', default=10 * 1024 * 1024, min=65536,
               help='Rotate dnsmasq.log to dnsmasq.log.1 past this size.'),
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
            '--dhcp-lease-max=%d' % conf.dnsmasq.lease_max]
    for subnet in plan.subnets:
        net = netaddr.IPNetwork(subnet.cidr)
        if subnet.ip_version == 4:
            argv.append('--dhcp-range=set:%s,%s,static,%s,%ds'
                        % (subnet.tag, net.network, net.netmask, lease))
        else:
            argv.append('--dhcp-range=set:%s,%s,static,%d,%ds'
                        % (subnet.tag, net.network, net.prefixlen, lease))
    return argv


def opts_content(plan):
    """--dhcp-optsfile lines, as Neutron writes them (tag per subnet)."""
    lines = []
    for s in plan.subnets:
        tag = 'tag:' + s.tag
        if s.ip_version == 4:
            routes = list(s.host_routes)
            if routes and s.gateway and not any(
                    d == '0.0.0.0/0' for d, _ in routes):
                # a client that takes option 121 ignores option 3
                routes.append(('0.0.0.0/0', s.gateway))
            # an empty router option stops dnsmasq offering itself
            lines.append('%s,option:router%s'
                         % (tag, ',' + s.gateway if s.gateway else ''))
            if s.dns:
                lines.append('%s,option:dns-server,%s'
                             % (tag, ','.join(s.dns)))
            if routes:
                flat = ','.join('%s,%s' % r for r in routes)
                lines.append('%s,option:classless-static-route,%s'
                             % (tag, flat))
                lines.append('%s,249,%s' % (tag, flat))
            if plan.mtu:
                lines.append('%s,option:mtu,%d' % (tag, plan.mtu))
        elif s.dns:
            lines.append('%s,option6:dns-server,%s'
                         % (tag, ','.join('[%s]' % d for d in s.dns)))
    return ''.join(line + '\n' for line in lines)


def read_hostsdir(path):
    """port id -> (file name, entry text) from the files we wrote."""
    entries = {}
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return entries
    for name in names:
        try:
            with open(os.path.join(path, name)) as f:
                text = f.read()
        except OSError:
            continue
        if name.startswith(BATCH_PREFIX):
            for chunk in text.split(PORT_MARK)[1:]:
                port_id, _, body = chunk.partition('\n')
                entries[port_id] = (name, body)
        else:
            entries[name] = (name, text)
    return entries


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
    """One network's dnsmasq: adopts a running one, else spawns it."""

    def __init__(self, conf, quantum_id):
        self.conf = conf
        self.quantum_id = quantum_id
        self.files = Files(conf.state_dir, quantum_id)
        self.proc = None          # Popen when we spawned it
        self.pid = None
        self.cmdline = None
        self.written = {}         # port id -> (file name, entry text)
        self.opts = None
        self.reloads = 0
        self.restarts = 0
        self.adopted = False
        self.tracker = LoadTracker(self.files.log, self.files.hosts)

    # -- process ---------------------------------------------------------
    def adopt(self):
        """Take over a dnsmasq left by a previous agent (no restart)."""
        pid = read_pid(self.files)
        argv = proc_cmdline(pid) if pid else None
        if not argv or '--pid-file=' + self.files.pid not in argv \
                or not pid_alive(pid):
            return False
        self.pid, self.cmdline, self.adopted = pid, argv, True
        self.written = read_hostsdir(self.files.hosts)
        self.tracker.start_at_end()
        self.tracker.expect_idle(self.written)
        try:
            with open(self.files.opts) as f:
                self.opts = f.read()
        except OSError:
            self.opts = None
        log.info('network %s: adopted dnsmasq pid %d', self.quantum_id, pid)
        return True

    def alive(self):
        if self.proc is not None:
            return self.proc.poll() is None
        return bool(self.pid) and pid_alive(self.pid)

    def start(self, argv, namespace):
        self.files.create()
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
                self.proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL, stderr=log_fd,
                    start_new_session=True, preexec_fn=preexec)
        except OSError as e:
            raise DnsmasqError('cannot run %s: %s' % (argv[0], e)) from None
        finally:
            os.close(log_fd)
        self.pid, self.cmdline, self.adopted = self.proc.pid, argv, False
        deadline = time.monotonic() + self.conf.dnsmasq.start_timeout
        while read_pid(self.files) != self.pid:
            if self.proc.poll() is not None:
                raise DnsmasqError('dnsmasq for %s exited with %s: %s'
                                   % (self.quantum_id, self.proc.returncode,
                                      self.log_tail()))
            if time.monotonic() > deadline:
                raise DnsmasqError('dnsmasq for %s did not start within %ss'
                                   % (self.quantum_id,
                                      self.conf.dnsmasq.start_timeout))
            time.sleep(0.005)
        log.info('network %s: started dnsmasq pid %d', self.quantum_id,
                 self.pid)

    def stop(self):
        pid, proc = self.pid, self.proc
        self.pid = self.proc = self.cmdline = None
        if not pid:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if proc is not None:
                if proc.poll() is not None:
                    return
            elif not pid_alive(pid):
                return
            time.sleep(0.005)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if proc is not None:
            proc.wait()

    def signal(self, signum):
        if self.pid:
            os.kill(self.pid, signum)

    def log_tail(self, size=2000):
        try:
            with open(self.files.log, 'rb') as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - size))
                return f.read().decode(errors='replace').strip()
        except OSError:
            return ''

    # -- files -------------------------------------------------------------
    def _write(self, name, text):
        atomic_write(os.path.join(self.files.hosts, name), text,
                     tmp_dir=self.files.tmp, sync=False)

    def sync_hosts(self, hosts):
        """Bring hosts/ to `hosts` (port id -> entry). Returns whether
        dnsmasq must re-read (SIGHUP): a changed or removed entry stays
        loaded in dnsmasq until then; a new file needs no signal."""
        written = self.written
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
        for port_id in removed:
            del written[port_id]
        self.tracker.forget(removed)
        if len(to_write) >= self.conf.dnsmasq.batch_threshold:
            name = BATCH_PREFIX + uuid.uuid4().hex[:12]
            self.tracker.expect({p: name for p in to_write})
            self._write(name, ''.join('%s%s\n%s' % (PORT_MARK, p, hosts[p])
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
        return bool(changed or removed)

    def seed_leases(self, hosts):
        """Before a start: a lease per IPv4 host entry, as Neutron does.
        Several servers are non-authoritative, so a dnsmasq ignores a
        rebooting VM's request for a lease it does not know (granted by
        another host now gone); the VM would wait many seconds to fall
        back to DISCOVER."""
        try:
            with open(self.files.leases) as f:
                existing = f.read()
        except FileNotFoundError:
            existing = ''
        known = {line.split()[1] for line in existing.splitlines()
                 if len(line.split()) >= 3}
        expiry = int(time.time()) + self.conf.dnsmasq.lease_duration
        seeded = []
        for text in hosts.values():
            for entry in text.splitlines():
                mac, addr = entry.split(',')[:2]
                if not addr.startswith('[') and mac not in known:
                    seeded.append('%d %s %s * *\n' % (expiry, mac, addr))
        if seeded:   # IPv4 leases come before dnsmasq's "duid" line
            self.files.create()
            atomic_write(self.files.leases, ''.join(seeded) + existing,
                         sync=False)

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
