"""A minimal inotify watcher (ctypes): wake up when files in a dir change."""
import ctypes
import os
import select
import struct

IN_MODIFY = 0x2
IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
CHANGES = IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_CREATE

# the process's own libc: find_library would fork ldconfig
_libc = ctypes.CDLL(None, use_errno=True)
_EVENT = struct.Struct('iIII')


class DirWatch:
    """Watches one directory; names() yields the names that changed."""

    def __init__(self, directory, mask=CHANGES):
        self.fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), 'inotify_init1')
        if _libc.inotify_add_watch(self.fd, os.fsencode(directory), mask) < 0:
            err = ctypes.get_errno()
            os.close(self.fd)
            raise OSError(err, 'inotify_add_watch %s' % directory)

    def fileno(self):
        return self.fd

    def read(self, timeout=None):
        """Names changed since the last call; [] after timeout seconds."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return []
        names = []
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return []
        offset = 0
        while offset < len(data):
            _, _, _, length = _EVENT.unpack_from(data, offset)
            offset += _EVENT.size
            names.append(os.fsdecode(data[offset:offset + length]
                                     .rstrip(b'\0')))
            offset += length
        return names

    def close(self):
        os.close(self.fd)
