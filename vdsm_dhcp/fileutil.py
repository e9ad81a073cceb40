"""Atomic file writes: a reader sees the old file or the new one, never a
mix."""
import os

# atomic_write's temp files are '.<name>.<random>.tmp': a crash between
# mkstemp and rename leaves one behind; remove_leftovers finds them by this.
TMP_SUFFIX = '.tmp'


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
    import tempfile   # not at import: the VM hooks import this module
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=tmp_dir or directory,
                               prefix='.' + os.path.basename(path) + '.',
                               suffix=TMP_SUFFIX)
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


def remove_leftovers(directory, name=None):
    """Remove the temp files a crashed atomic_write left in directory (of
    `name` only, when given: the directory may be shared). Only call it
    when no atomic_write into that directory can be running. Returns the
    names removed; a directory that is missing or unwritable is skipped."""
    prefix = '.' + name + '.' if name else '.'
    removed = []
    try:
        entries = os.listdir(directory)
    except OSError:
        return removed
    for entry in entries:
        if entry.startswith(prefix) and entry.endswith(TMP_SUFFIX):
            try:
                os.unlink(os.path.join(directory, entry))
                removed.append(entry)
            except OSError:
                pass
    return removed
