"""The agent process's surroundings, standard library only: the signals
it handles, the run lock (one agent per run_dir), systemd's notify
socket, start-up checks of the host, and the network ids in state_dir."""
import fcntl
import logging
import os
import signal
import socket

log = logging.getLogger('vdsm_dhcp.agent')

AGENT_SIGNALS = {signal.SIGHUP, signal.SIGTERM, signal.SIGINT}


RUN_LOCK = 'agent.lock'


def check_traversable(path):
    """dnsmasq drops privileges: it must be able to reach its files."""
    path = os.path.abspath(path)
    while path != '/':
        if not os.stat(path).st_mode & 0o001:
            log.error('%s is not searchable by others: dnsmasq, running '
                      'unprivileged, will not read its files below it', path)
        path = os.path.dirname(path)


# fs.inotify.max_user_instances caps the inotify instances per user. Each
# dnsmasq with --dhcp-hostsdir creates one while still root (dnsmasq.c:
# inotify_dnsmasq_init() runs before it drops privileges), so all of them
# are charged to root, beside every other root daemon's (systemd, udevd,
# vdsm, this agent). The kernel's default is 128.
INOTIFY_LIMIT = '/proc/sys/fs/inotify/max_user_instances'
INOTIFY_HOST_SHARE = 64     # kept for root's other processes
INOTIFY_RAISE_TO = 1024     # as systemd/vdsm-dhcp.sysctl sets it at boot


def inotify_target(dnsmasq, limit):
    """The limit to raise to so that `dnsmasq` instances fit beside the
    host's share, or None when they fit. Generous (at least 1024, twice
    the need past that): a cap, not an allocation, and more shards or
    networks later must not need another raise."""
    if dnsmasq + INOTIFY_HOST_SHARE <= limit:
        return None
    return max(limit, INOTIFY_RAISE_TO,
               2 * (dnsmasq + INOTIFY_HOST_SHARE))


def check_inotify_room(dnsmasq, path=INOTIFY_LIMIT):
    """Make room for `dnsmasq` inotify instances (one per dnsmasq the
    agent will run: networks and shards): raise the limit, only upward,
    when they would not fit; logged. Past the limit a dnsmasq exits at
    start ("failed to create inotify: Too many open files"). Returns None,
    or the problem (for the status) when the limit is too low and cannot
    be raised. Cheap when nothing is to do (one read): callable per round."""
    try:
        with open(path) as f:
            limit = int(f.read())
    except (OSError, ValueError) as e:
        log.warning('cannot read %s (%s): not checking room for %d dnsmasq',
                    path, e, dnsmasq)
        return None
    target = inotify_target(dnsmasq, limit)
    if target is None:
        return None
    why = ('%d dnsmasq to run, one inotify instance each, charged to root '
           'with %d kept for the rest of the host' % (dnsmasq,
                                                      INOTIFY_HOST_SHARE))
    try:
        with open(path, 'w') as f:
            f.write('%d\n' % target)
    except OSError as e:
        problem = ('fs.inotify.max_user_instances is %d, too low for %s, and '
                   'raising it to %d failed: %s; dnsmasq past the limit fail '
                   'to start ("failed to create inotify"): raise it on the '
                   'host (/usr/lib/sysctl.d/60-vdsm-dhcp.conf sets %d at '
                   'boot)' % (limit, why, target, e.strerror or e,
                              INOTIFY_RAISE_TO))
        log.error('%s', problem)
        return problem
    log.warning('raised fs.inotify.max_user_instances %d -> %d: %s '
                '(/usr/lib/sysctl.d/60-vdsm-dhcp.conf sets %d at boot)',
                limit, target, why, INOTIFY_RAISE_TO)
    return None


class AlreadyRunning(Exception):
    pass


def hold_run_lock(run_dir):
    """One agent per run_dir: an exclusive flock on RUN_DIR/agent.lock,
    held (the returned fd, close-on-exec: dnsmasq must not inherit it)
    for the life of the process. Taken before the control socket, so a
    second agent never unlinks the first one's socket."""
    os.makedirs(run_dir, mode=0o755, exist_ok=True)
    path = os.path.join(run_dir, RUN_LOCK)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = os.read(fd, 32).decode(errors='replace').strip()
        finally:
            os.close(fd)
        raise AlreadyRunning(
            'another vdsm-dhcp agent (pid %s) runs with run_dir %s (it '
            'holds %s): exiting, leaving it alone' % (holder or '?',
                                                      run_dir, path))
    os.ftruncate(fd, 0)
    os.write(fd, b'%d\n' % os.getpid())
    return fd


def notify_systemd(state):
    """sd_notify(3) with the standard library: one datagram to
    $NOTIFY_SOCKET; nothing when not run by systemd (Type=notify)."""
    path = os.environ.get('NOTIFY_SOCKET')
    if not path:
        return False
    if path.startswith('@'):    # an abstract socket
        path = '\0' + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(path)
            sock.sendall(state.encode())
    except OSError as e:
        log.warning('cannot tell systemd %r: %s', state, e)
        return False
    return True


def state_ids(state_dir):
    """The network ids with a directory in state_dir (our marks and
    other dot files are not networks)."""
    try:
        names = os.listdir(state_dir)
    except OSError:
        return []
    return [n for n in names if not n.startswith('.') and
            os.path.isdir(os.path.join(state_dir, n))]
