"""Run a program inside a named network namespace, without `ip netns exec`.

The namespace file is opened in the parent; the child only calls setns(2)
between fork and exec (no imports, no allocation worth the name: safe in a
threaded parent)."""
import contextlib
import ctypes
import ctypes.util
import os
import signal

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(ctypes.util.find_library('c'), use_errno=True)
_setns = _libc.setns


@contextlib.contextmanager
def netns_preexec(namespace):
    fd = os.open('/run/netns/' + namespace, os.O_RDONLY | os.O_CLOEXEC)

    def enter():
        if _setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), 'setns ' + namespace)
        # the signal mask survives exec: a child forked by a thread that
        # still blocks the agent's signals (see agent/service.py) would ignore
        # SIGHUP and SIGTERM for life
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
    try:
        yield enter
    finally:
        os.close(fd)
