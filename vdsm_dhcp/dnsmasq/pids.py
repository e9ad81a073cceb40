"""Processes by PID and pidfd, safely: is it alive (zombies count as
gone), its command line, and signals that never reach a reused PID."""
import os
import select
import signal


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


def pidfd_open(pid):
    """A pidfd of pid, or None where the kernel or Python has none."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def pidfd_exited(pidfd):
    """A pidfd polls readable once its process has exited."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


def close_pidfd(fd):
    if fd is not None:
        os.close(fd)


def runs(pid, proc, pidfd, dm):
    if proc is not None:
        return proc.poll() is None
    if pidfd is not None:
        return not pidfd_exited(pidfd)
    return pid_alive(pid) and dm.ours(pid)


def send_signal(pid, proc, pidfd, signum, dm):
    """Signal the process behind the handle; False if it is gone (or the
    PID no longer runs our dnsmasq: then it is not ours to signal)."""
    try:
        if proc is not None:
            if proc.poll() is not None:
                return False
            proc.send_signal(signum)
        elif pidfd is not None:
            signal.pidfd_send_signal(pidfd, signum)
        elif dm.ours(pid):
            os.kill(pid, signum)
        else:
            return False
    except ProcessLookupError:
        return False
    return True
