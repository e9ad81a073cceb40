"""When has dnsmasq really loaded a host entry? (the truthful "ready")

Not when we wrote the file, nor when we sent SIGHUP: when dnsmasq's own log
says `read <hostsdir>/<file>` after our write, and dnsmasq has since gone
back to poll() (after reading a file it reconciles its leases, and answers
nothing until done). The log is tailed incrementally; positions are counted
in lines seen, so rotating the log does not confuse it. dnsmasq runs with
--dhcp-ignore=tag:!known and --quiet-dhcp: a tenant's packets do not reach
the log (only errors such as a crafted DECLINE would).
"""
import logging
import os
import threading
import time

from vdsm_dhcp.dnsmasq.logrotate import LogRotation, holds
from vdsm_dhcp.dnsmasq.watcher import WATCHER

log = logging.getLogger('vdsm_dhcp.readiness')

# poll(2) and ppoll(2) on x86_64, ppoll on aarch64: dnsmasq's idle wait
IDLE_SYSCALLS = {'7', '271', '73'}


def dnsmasq_idle(pid):
    """dnsmasq sits in its poll loop (not reading, not reconciling)."""
    try:
        with open('/proc/%d/syscall' % pid) as f:
            nr = f.read().split(' ', 1)[0]
        if nr in IDLE_SYSCALLS:
            return True
        with open('/proc/%d/wchan' % pid) as f:
            return 'poll' in f.read()
    except OSError:
        return False


# Called with the seconds from a host entry's write to dnsmasq having
# loaded it (the agent's metrics); None: not measured.
on_loaded = None


class LoadTracker(LogRotation):
    CHUNK = 1 << 20    # bytes read at once (a big log, bounded memory)
    WRITER_CHECK = 30.0

    def __init__(self, log_path, hosts_dir, opts_path=None):
        self.log_path = log_path
        self.prefix = ' read %s/' % hosts_dir
        self._prefix_b = os.fsencode(self.prefix)
        # dnsmasq re-reads its options file at every SIGHUP: the line that
        # says so confirms a removal (the hosts dir may be empty by then)
        self._reread_b = os.fsencode(' read %s\n' % opts_path) \
            if opts_path else None
        self._reread_at = 0    # line count of the last such line
        self._removing = {}    # port id -> (MAC, line count at the SIGHUP)
        self._old = None       # (fd, dnsmasq pid) of a rotated log
        self._writer_checked = True
        self._next_check = time.monotonic() + self.WRITER_CHECK
        self._rotate_error = None
        self._lock = threading.Lock()
        self._pos = 0
        self._ino = None       # of the log file _pos is in
        self._partial = b''
        self._lines = 0
        self._read_at = {}     # file name -> line count when last read
        self._pending = {}     # port id -> (file name, line count at write)
        self._since = {}       # port id -> monotonic time of the write
        self.pid = None        # dnsmasq's, as last given to confirm()

    def start_at_end(self):
        """Ignore what the log already holds (a new or adopted dnsmasq)."""
        with self._lock:
            try:
                st = os.stat(self.log_path)
                self._pos, self._ino = st.st_size, st.st_ino
            except OSError:
                self._pos, self._ino = 0, None
            self._partial = b''
            if self._old is not None:
                os.close(self._old[0])
                self._old = None
            self._writer_checked = False

    def _tail(self):
        if self._old is not None and not self._drain_old():
            return    # dnsmasq still writes the rotated file: keep order
        try:
            fd = os.open(self.log_path, os.O_RDONLY)
        except OSError:
            return
        try:
            st = os.fstat(fd)
            # truncated, or replaced by someone else's rotation
            if st.st_size < self._pos or self._ino not in (None, st.st_ino):
                self._pos, self._partial = 0, b''
            self._ino = st.st_ino
            self._read_from(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    def _read_from(self, fd):
        while True:
            data = os.pread(fd, self.CHUNK, self._pos)
            if not data:
                return
            self._pos += len(data)
            self._consume(data)

    def _drain_old(self):
        """Read the rotated log dnsmasq may still append to; once it has
        reopened its log (it no longer holds the old file), read that to
        its end and move on to the new one. Returns whether it did."""
        fd, pid = self._old
        try:
            self._read_from(fd)
            if holds(pid, fd):
                return False
            self._read_from(fd)      # nothing can be added any more
        except OSError:
            pass
        if self._partial:            # a last line without its newline
            self._consume(b'\n')
        os.close(fd)
        self._old, self._pos, self._ino = None, 0, None
        return True

    def _consume(self, data):
        """Count lines and note our hosts files read. Only the lines that
        name our hosts dir are decoded: a log full of other lines (a
        tenant's flood) costs a scan at C speed, not Python per line."""
        data = self._partial + data
        end = data.rfind(b'\n') + 1
        self._partial = data[end:]
        line_no, counted = self._lines, 0
        at = data.find(self._prefix_b, 0, end)
        while at >= 0:
            start = data.rfind(b'\n', 0, at) + 1
            stop = data.find(b'\n', at)
            line_no += data.count(b'\n', counted, start) + 1
            counted = stop + 1
            name = data[at + len(self._prefix_b):stop].decode(
                errors='replace')
            # "cannot read F: No such file": F was deleted before dnsmasq
            # got to it, nothing was loaded
            if data[max(start, at - len(CANNOT)):at] == CANNOT:
                self._read_at.pop(name.rsplit(':', 1)[0].strip(), None)
            else:
                self._read_at[name.strip()] = line_no
            at = data.find(self._prefix_b, counted, end)
        if self._reread_b is not None:
            at = data.rfind(self._reread_b, 0, end)
            if at >= 0:
                self._reread_at = self._lines + data.count(b'\n', 0, at) + 1
        self._lines = line_no + data.count(b'\n', counted, end)

    def expect(self, files_by_port):
        """About to write these files (port id -> file name): they are
        pending until dnsmasq logs reading them."""
        with self._lock:
            self._tail()
            now = time.monotonic()
            for port_id, name in files_by_port.items():
                self._pending[port_id] = (name, self._lines)
                self._since[port_id] = now
        WATCHER.watch(self)

    def expect_idle(self, port_ids):
        """Entries already on disk when a running dnsmasq was adopted: it
        read them by inotify when they were written; once it is seen idle,
        it has nothing left to read."""
        with self._lock:
            for port_id in port_ids:
                self._pending[port_id] = (None, None)

    def expect_gone(self, macs_by_port):
        """About to SIGHUP dnsmasq for these removed entries (port id ->
        MAC): it still answers them until it logs re-reading its files
        and is back in poll()."""
        if not macs_by_port:
            return
        with self._lock:
            self._tail()
            for port_id, mac in macs_by_port.items():
                self._removing[port_id] = (mac, self._lines)
        WATCHER.watch(self)

    def still_serves(self, mac):
        """A removal of this MAC is not confirmed by dnsmasq yet."""
        with self._lock:
            return any(m == mac for m, _ in self._removing.values())

    def forget_removals(self):
        """A new dnsmasq: it never had them."""
        with self._lock:
            self._removing.clear()

    def forget(self, port_ids):
        with self._lock:
            for port_id in port_ids:
                self._pending.pop(port_id, None)
                self._since.pop(port_id, None)

    def confirm(self, pid):
        """Move what dnsmasq has now loaded out of pending."""
        with self._lock:
            self.pid = pid
            if not self._pending and not self._removing:
                return
            self._tail()
            moved = self._move_loaded()
        if moved:
            WATCHER.notify()

    def _move_loaded(self):
        if not self.pid or not dnsmasq_idle(self.pid):
            return False
        before = len(self._pending) + len(self._removing)
        for port_id, (_, line) in list(self._removing.items()):
            if self._reread_at > line:
                del self._removing[port_id]
        now = time.monotonic()
        for port_id, (name, line) in list(self._pending.items()):
            if name is None or self._read_at.get(name, 0) > line:
                del self._pending[port_id]
                since = self._since.pop(port_id, None)
                if since is not None and name is not None and on_loaded:
                    on_loaded(now - since)
        return len(self._pending) + len(self._removing) < before

    def settle(self):
        """For the watcher, when the log grew: confirm with the last known
        pid. Returns (moved any out of pending, dnsmasq read something
        pending but is still busy: look again soon)."""
        with self._lock:
            if not self._pending and not self._removing:
                return False, False
            self._tail()
            moved = self._move_loaded()
            busy = bool(self.pid) and os.path.exists(
                '/proc/%d' % self.pid) and (any(
                    name is None or self._read_at.get(name, 0) > line
                    for name, line in self._pending.values()) or any(
                    self._reread_at > line
                    for _, line in self._removing.values()))
            return moved, busy

    def pending(self, port_id):
        with self._lock:
            return port_id in self._pending

    def pending_count(self):
        with self._lock:
            return len(self._pending)

    def busy_count(self):
        """Entries not loaded yet, and removals not confirmed yet."""
        with self._lock:
            return len(self._pending) + len(self._removing)


CANNOT = b' cannot'
