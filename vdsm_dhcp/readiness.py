"""When has dnsmasq really loaded a host entry? (the truthful "ready")

Not when we wrote the file, nor when we sent SIGHUP: when dnsmasq's own log
says `read <hostsdir>/<file>` after our write, and dnsmasq has since gone
back to poll() (after reading a file it reconciles its leases, and answers
nothing until done). The log is tailed incrementally; positions are counted
in lines seen, so rotating the log does not confuse it.
"""
import os
import threading

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


class LoadTracker:
    def __init__(self, log_path, hosts_dir):
        self.log_path = log_path
        self.prefix = ' read %s/' % hosts_dir
        # a file deleted before dnsmasq got to it: "read F" then "cannot
        # read F: No such file" -- nothing was loaded
        self.failed = ' cannot read %s/' % hosts_dir
        self._lock = threading.Lock()
        self._pos = 0
        self._partial = b''
        self._lines = 0
        self._read_at = {}     # file name -> line count when last read
        self._pending = {}     # port id -> (file name, line count at write)

    def start_at_end(self):
        """Ignore what the log already holds (a new or adopted dnsmasq)."""
        with self._lock:
            try:
                self._pos = os.path.getsize(self.log_path)
            except OSError:
                self._pos = 0
            self._partial = b''

    def _tail(self):
        try:
            with open(self.log_path, 'rb') as f:
                size = os.fstat(f.fileno()).st_size
                if size < self._pos:          # truncated by rotation
                    self._pos, self._partial = 0, b''
                f.seek(self._pos)
                data = f.read()
        except OSError:
            return
        self._pos += len(data)
        self._consume(data)

    def _consume(self, data):
        data = self._partial + data
        lines = data.split(b'\n')
        self._partial = lines.pop()
        for raw in lines:
            self._lines += 1
            line = raw.decode(errors='replace')
            at = line.find(self.failed)    # before " read ": it holds it
            if at >= 0:
                name = line[at + len(self.failed):].rsplit(':', 1)[0]
                self._read_at.pop(name.strip(), None)
                continue
            at = line.find(self.prefix)
            if at >= 0:
                self._read_at[line[at + len(self.prefix):].strip()] = \
                    self._lines

    def expect(self, files_by_port):
        """About to write these files (port id -> file name): they are
        pending until dnsmasq logs reading them."""
        with self._lock:
            self._tail()
            for port_id, name in files_by_port.items():
                self._pending[port_id] = (name, self._lines)

    def expect_idle(self, port_ids):
        """Entries already on disk when a running dnsmasq was adopted: it
        read them by inotify when they were written; once it is seen idle,
        it has nothing left to read."""
        with self._lock:
            for port_id in port_ids:
                self._pending[port_id] = (None, None)

    def forget(self, port_ids):
        with self._lock:
            for port_id in port_ids:
                self._pending.pop(port_id, None)

    def confirm(self, pid):
        """Move what dnsmasq has now loaded out of pending."""
        with self._lock:
            if not self._pending:
                return
            self._tail()
            if not pid or not dnsmasq_idle(pid):
                return
            for port_id, (name, line) in list(self._pending.items()):
                if name is None or self._read_at.get(name, 0) > line:
                    del self._pending[port_id]

    def pending(self, port_id):
        with self._lock:
            return port_id in self._pending

    def pending_count(self):
        with self._lock:
            return len(self._pending)

    def rotate(self, max_bytes):
        """copytruncate: dnsmasq appends (O_APPEND) and, having dropped
        privileges, could not reopen its log on SIGUSR2."""
        with self._lock:
            try:
                if os.path.getsize(self.log_path) <= max_bytes:
                    return False
                with open(self.log_path, 'rb') as src:
                    data = src.read()
                with open(self.log_path + '.1', 'wb') as dst:
                    dst.write(data)
                os.truncate(self.log_path, 0)
                if len(data) >= self._pos:
                    self._consume(data[self._pos:])
            except OSError:
                return False
            self._pos, self._partial = 0, b''
            return True
