"""One network's dnsmasq process: start, adopt, signal, stop, and the
files it reads (written here, rendered by dnsmasq/conf.py).

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
import logging
import os
import pwd
import shutil
import signal
import subprocess
import threading
import time
import uuid

from vdsm_dhcp import logs
from vdsm_dhcp.dnsmasq.conf import (BATCH_PREFIX, PORT_MARK, DnsmasqError,
                                    Files, host_text, lease_line,
                                    read_hostsdir, read_regular)
from vdsm_dhcp.dnsmasq.netfilter import limit_clients
from vdsm_dhcp.dnsmasq.pids import (close_pidfd, pid_alive, pidfd_exited,
                                    pidfd_open, proc_cmdline, read_pid, runs,
                                    send_signal)
from vdsm_dhcp.dnsmasq.readiness import LoadTracker
from vdsm_dhcp.fileutil import atomic_write
from vdsm_dhcp.host.netns_exec import spawn_in_netns
from vdsm_dhcp.timing import wait_until

log = logging.getLogger('vdsm_dhcp.dnsmasq')


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
        self.tracker = LoadTracker(self.files.log, self.files.hosts,
                                   self.files.opts)

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
        pidfd = pidfd_open(pid)
        # checked again with the handle held: the PID cannot change hands
        # any more, and it was ours after we took it
        if not self.ours(pid) or (pidfd is not None and pidfd_exited(pidfd)):
            close_pidfd(pidfd)
            return False
        with self._handle_lock:
            self.pid, self.pidfd, self.proc = pid, pidfd, None
            self.cmdline, self.adopted = proc_cmdline(pid), True
            self.started_at = None
        written = read_hostsdir(self.files.hosts)
        self.written = written
        self.tracker.start_at_end()
        self.tracker.expect_idle(written)
        self.opts = read_regular(self.files.opts)   # None: rewritten
        log.info('network %s: adopted dnsmasq pid %d', self.quantum_id, pid,
                 extra=logs.network(self.quantum_id))
        return True

    def alive(self):
        with self._handle_lock:
            if self.proc is not None:
                return self.proc.poll() is None
            if self.pidfd is not None:
                return not pidfd_exited(self.pidfd)
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
        close_pidfd(pidfd)

    def start(self, argv, namespace):
        self.files.create()
        self.tracker.forget_removals()   # a new dnsmasq never had them
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
            proc = spawn_in_netns(namespace, argv, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=log_fd,
                                  start_new_session=True)
        except OSError as e:
            raise DnsmasqError('cannot run %s: %s' % (argv[0], e)) from None
        finally:
            os.close(log_fd)
        self.forget()
        with self._handle_lock:
            self.proc, self.pid, self.cmdline = proc, proc.pid, argv
            self.adopted, self.started_at = False, time.monotonic()

        def started():
            if read_pid(self.files) == proc.pid:
                return True
            if proc.poll() is not None:
                raise DnsmasqError('dnsmasq for %s exited with %s: %s'
                                   % (self.quantum_id, proc.returncode,
                                      self.log_tail()))
            return False

        if not wait_until(started, self.conf.dnsmasq.start_timeout, 0.005):
            raise DnsmasqError('dnsmasq for %s did not start within %ss'
                               % (self.quantum_id,
                                  self.conf.dnsmasq.start_timeout))
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
            if not send_signal(pid, proc, pidfd, signal.SIGTERM, self):
                return
            if wait_until(lambda: not runs(pid, proc, pidfd, self), 5,
                          0.005):
                return
            send_signal(pid, proc, pidfd, signal.SIGKILL, self)
            if proc is not None:
                proc.wait()
        finally:
            close_pidfd(pidfd)

    def signal(self, signum):
        with self._handle_lock:
            if self.pid:
                send_signal(self.pid, self.proc, self.pidfd, signum, self)

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
        """Bring hosts/ to `hosts` (port id -> HostEntry). Returns whether
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
                                                         host_text(hosts[p]))
                                          for p in to_write))
                written.update((p, (name, hosts[p])) for p in to_write)
            else:
                self.tracker.expect({p: p for p in to_write})
                for port_id in to_write:
                    self._write(port_id, host_text(hosts[port_id]))
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
        existing = read_regular(self.files.leases) or ''
        known = {line.split()[1] for line in existing.splitlines()
                 if len(line.split()) >= 3}
        expiry = int(time.time()) + self.conf.dnsmasq.lease_duration
        seeded = []
        for entry in hosts.values():
            if entry.mac in known:
                continue
            seeded.extend(lease_line(expiry, entry.mac, ip)
                          for ip in entry.ips if ip.version == 4)
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
