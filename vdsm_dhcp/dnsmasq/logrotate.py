"""dnsmasq's log, kept small without losing a line the readiness gate
reads: rotation by rename and SIGUSR2, and the check that dnsmasq still
writes the log we read. A part of readiness.LoadTracker (its position,
its rotated-log handle and its lock)."""
import logging
import os
import time

log = logging.getLogger('vdsm_dhcp.readiness')


class LogRotation:
    """The log-rotation half of LoadTracker."""

    def check_writer(self, pid, reopen):
        """Does dnsmasq write the log we read? Looked at once after
        adoption, then every WRITER_CHECK seconds. A previous agent may
        have died between renaming the log and signalling dnsmasq (it then
        writes log.1: read that from its end until dnsmasq has reopened),
        or dnsmasq lost its log (after a failed write, ENOSPC, it logs to
        syslog for good). Either way, reopen(): no port would ever be
        ready again."""
        now = time.monotonic()
        with self._lock:
            if self._old is not None or (
                    self._writer_checked and now < self._next_check):
                return False
            self._writer_checked = True
            self._next_check = now + self.WRITER_CHECK
            try:
                fd = os.open(self.log_path, os.O_RDONLY)
                try:
                    if holds(pid, fd):
                        return False
                finally:
                    os.close(fd)
                old = os.open(self.log_path + '.1', os.O_RDONLY)
            except OSError:
                old = None
            if old is not None and holds(pid, old):
                self._old = (old, pid)
                self._pos, self._partial = os.fstat(old).st_size, b''
            elif old is not None:
                os.close(old)
        log.warning('%s: dnsmasq pid %d does not write this log; asking it '
                    'to reopen it', self.log_path, pid)
        reopen()
        return True

    def rotate(self, max_bytes, pid, owner, reopen):
        """Past max_bytes: the log becomes log.1 and a fresh empty log,
        owned by dnsmasq's user (it has dropped privileges: it could not
        create one), takes its name; then reopen() (SIGUSR2: dnsmasq
        reopens its log by name). No line is lost and none read out of
        order: dnsmasq appends to log.1 until it reopens, and log.1 is
        read to its end, once dnsmasq no longer holds it, before the new
        log is read (copy+truncate would lose what dnsmasq writes between
        the copy and the truncation)."""
        with self._lock:
            if self._old is not None and not self._drain_old():
                return False     # the last rotation is not done yet
            try:
                size = os.path.getsize(self.log_path)
            except FileNotFoundError:
                size = None      # removed by hand: dnsmasq needs a new one
            except OSError:
                return False
            if size is not None and size <= max_bytes:
                return False
            fresh = self.log_path + '.new'
            old = None
            try:
                _unlink_quiet(fresh)
                fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                             0o644)
                try:
                    os.fchown(fd, owner, -1)
                finally:
                    os.close(fd)
                if size is not None:
                    self._tail()
                    old = os.open(self.log_path, os.O_RDONLY)
                    # link, then rename over: the log has a name at every
                    # instant (an agent killed here leaves a log to read)
                    _unlink_quiet(self.log_path + '.1')
                    os.link(self.log_path, self.log_path + '.1')
                os.rename(fresh, self.log_path)
            except OSError as e:
                if str(e) != self._rotate_error:
                    log.error('cannot rotate %s: %s', self.log_path, e)
                self._rotate_error = str(e)
                if old is not None:
                    os.close(old)
                _unlink_quiet(fresh)
                return False
            self._rotate_error = None
            if old is not None:
                self._old = (old, pid)
            else:
                self._pos, self._partial, self._ino = 0, b'', None
        reopen()
        return True


def holds(pid, fd):
    """pid has the file behind fd open as a descriptor above 2 (its
    stderr, the log it was started with, is only written when it dies)."""
    st = os.fstat(fd)
    try:
        names = os.listdir('/proc/%d/fd' % pid)
    except OSError:
        return False          # gone: it writes nothing any more
    for name in names:
        if not name.isdigit() or int(name) <= 2:
            continue
        try:
            other = os.stat('/proc/%d/fd/%s' % (pid, name))
        except OSError:
            continue
        if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
            return True
    return False


def _unlink_quiet(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
