"""Network namespaces without `ip netns exec` and without a fork.

netns_preexec: run a program inside a named namespace. The namespace file
is opened in the parent; the child only calls setns(2) between fork and
exec (no imports, no allocation worth the name: safe in a threaded parent).

thread_in_netns / create_netns: the calling *thread* enters a namespace
(setns(2) of CLONE_NEWNET moves only the caller: the process's other
threads stay where they are) for a short block, and always comes back.
A socket made inside stays in that namespace for its life, which is how
the veth driver talks netlink to a namespace with no helper process
(pyroute2's NetNS and netns.create fork one per call)."""
import contextlib
import ctypes
import logging
import os
import signal
import threading

CLONE_NEWNET = 0x40000000
NETNS_DIR = '/run/netns/'
# the process's own symbols, libc's among them (ctypes.util.find_library
# would fork ldconfig at import)
_libc = ctypes.CDLL(None, use_errno=True)
_setns = _libc.setns
_unshare = _libc.unshare

log = logging.getLogger('vdsm_dhcp.netns')


@contextlib.contextmanager
def netns_preexec(namespace):
    fd = os.open(NETNS_DIR + namespace, os.O_RDONLY | os.O_CLOEXEC)

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


def _enter(fd, what):
    if _setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, '%s: setns: %s' % (what, os.strerror(errno)))


@contextlib.contextmanager
def _thread_netns_kept():
    """Whatever the block does to this thread's network namespace is
    undone after it, error or not. Returning cannot fail in practice (our
    own namespace, held open); if it ever did, the thread would go on
    working in a foreign namespace: the process ends instead."""
    home = os.open('/proc/thread-self/ns/net', os.O_RDONLY | os.O_CLOEXEC)
    try:
        yield
    finally:
        try:
            _enter(home, 'back to the thread\'s own network namespace')
        except OSError as e:
            log.critical('thread %s stranded in a foreign network '
                         'namespace (%s): exiting', threading.get_ident(), e)
            os._exit(70)
        finally:
            os.close(home)


@contextlib.contextmanager
def thread_in_netns(namespace):
    """The calling thread inside the named namespace for the block (keep
    it short: only make sockets there), back in its own after it."""
    fd = os.open(NETNS_DIR + namespace, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with _thread_netns_kept():
            _enter(fd, namespace)
            yield
    finally:
        os.close(fd)


def create_netns(namespace):
    """A new named network namespace, as `ip netns add` makes it, made by
    this thread (unshare, then bind-mount the thread's namespace with
    pyroute2's netns.attach, which shares /run/netns like iproute2) and
    left at once. A half-made one (the mount failed) is removed."""
    from pyroute2 import netns   # here: dnsmasq/process.py imports us
    with _thread_netns_kept():
        if _unshare(CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, 'unshare of a network namespace for %s: %s'
                          % (namespace, os.strerror(errno)))
        existed = os.path.lexists(NETNS_DIR + namespace)
        try:
            # /proc/<tid>/ns/net: this thread's (the process's is the main
            # thread's)
            netns.attach(namespace, threading.get_native_id(), libc=_libc)
        except FileExistsError:
            raise             # someone else's: not ours to remove
        except OSError:
            if not existed:
                with contextlib.suppress(OSError):
                    netns.remove(namespace, libc=_libc)
            raise


def remove_netns(namespace):
    """Unmount and remove a named namespace (pyroute2's netns.remove, with
    our libc: its own lookup forks ldconfig once)."""
    from pyroute2 import netns
    netns.remove(namespace, libc=_libc)


def spawn_in_netns(namespace, argv, **popen_kwargs):
    """subprocess.Popen(argv) inside the named namespace, without forking
    the agent: this thread enters the namespace and Python starts the
    child with vfork (only a preexec_fn forces a full fork, of the whole
    agent: ~100 ms each at 200 networks). The child inherits the thread's
    signal mask, and the agent's workers block its signals: they are
    unblocked here around the spawn, else dnsmasq would ignore SIGHUP and
    SIGTERM for life."""
    import subprocess
    with thread_in_netns(namespace):
        old = signal.pthread_sigmask(signal.SIG_SETMASK, ())
        try:
            return subprocess.Popen(argv, **popen_kwargs)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
