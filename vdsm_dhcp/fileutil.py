"""Atomic file writes: a reader sees the old file or the new one, never a mix."""
import os
import tempfile


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path, data, mode=0o644, tmp_dir=None, sync=True):
    """Write bytes or text to path: temp file, fsync, rename, fsync the dir.

    tmp_dir lets a caller keep the temp file out of a directory that a
    watcher (dnsmasq's inotify on --dhcp-hostsdir) would read half-written;
    it must be on the same file system. sync=False skips both fsyncs, for
    files that are rebuilt from the IPAM anyway and sit on a hot path.
    """
    if isinstance(data, str):
        data = data.encode()
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=tmp_dir or directory,
                               prefix='.' + os.path.basename(path) + '.')
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
            os.fchmod(f.fileno(), mode)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if sync:
        fsync_dir(directory)
