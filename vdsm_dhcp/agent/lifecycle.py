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


def check_inotify_room(networks):
    """Each dnsmasq takes an inotify instance, counted against its user:
    past fs.inotify.max_user_instances, dnsmasq exits at start ("failed to
    create inotify")."""
    try:
        with open('/proc/sys/fs/inotify/max_user_instances') as f:
            limit = int(f.read())
    except (OSError, ValueError):
        return
    if networks > limit - 8:
        log.error('%d networks listed, but fs.inotify.max_user_instances is '
                  '%d: dnsmasq beyond that fails to start; raise it '
                  '(/usr/lib/sysctl.d/60-vdsm-dhcp.conf does)',
                  networks, limit)


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
