"""What a test session, a benchmark or the demo leaves behind: found by
what marks it as ours, reported, then removed by PID and by name.

Other runs (other people's tests and benchmarks) share this machine's /tmp,
cgroup trees and process table at the same time, so a name pattern alone
never says "ours". A `Run`:
- puts its token in the environment of every process started after it
  (`VDSM_DHCP_RUNS`, inherited through fork and exec);
- records every temp dir made by tempfile.mkdtemp with our prefix, and every
  cgroup a private systemd manager gets (`record`), in a log of its own.
Runs nest (pytest runs bench.run): an inner run's records also go to the
outer run's log, and its processes carry both tokens.

A process is ours when it carries the token, lives in a recorded cgroup
(units of a private systemd manager get a clean environment), is a live
descendant of the run's process, or has a recorded dir in its command line.
"""
import os
import signal
import subprocess
import tempfile
import time
import uuid

ENV = 'VDSM_DHCP_RUNS'          # tokens, outermost first
PREFIX = 'vdsm-dhcp-'
CGROUP_ROOT = '/sys/fs/cgroup'


class Terminated(KeyboardInterrupt):
    """SIGTERM, as an exception: handled like Ctrl-C, so every `finally`
    (fixture teardown, close(), cleanup) runs."""


TERMINATED = []     # the signal, once one arrived (see terminated())


def terminated():
    """Did a SIGTERM arrive? The exception it raised can be swallowed (a
    signal handled while the main thread ran a finalizer: "Exception
    ignored in ..."): the test session also checks this between tests."""
    return bool(TERMINATED)


def raise_on_sigterm():
    """From now on a SIGTERM raises Terminated in the main thread; only the
    first one (a second must not abort the cleanup the first started).
    Returns the previous handler.

    A child forked without exec (pyroute2's NetNS and netns.create fork
    helpers, then end them with SIGTERM) inherits the handler: there it
    must die as by default, never unwind the parent's stack copy (that
    ran the test's teardown in the child: the lab dir vanished under the
    running test)."""
    fired = TERMINATED
    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if fired:
            return
        fired.append(signum)
        raise Terminated('signal %d' % signum)
    return signal.signal(signal.SIGTERM, handler)


def _log_path(token):
    return os.path.join(tempfile.gettempdir(), '%srun-%s.log'
                        % (PREFIX, token))


def tokens():
    return os.environ.get(ENV, '').split()


def record(kind, name):
    """Note something this process made ('dir', path | 'cgroup', name) in
    the log of every run it belongs to."""
    line = ('%s %s\n' % (kind, name)).encode()
    for token in tokens():
        try:    # never created here: a run that is over has no log
            fd = os.open(_log_path(token), os.O_WRONLY | os.O_APPEND)
        except OSError:
            continue
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


_real_mkdtemp = tempfile.mkdtemp


def _tracking_mkdtemp(suffix=None, prefix=None, dir=None):
    path = _real_mkdtemp(suffix, prefix, dir)
    if os.path.basename(path).startswith(PREFIX):
        record('dir', os.path.abspath(path))
    return path


def _pids():
    return [int(p) for p in os.listdir('/proc') if p.isdigit()]


def _stat(pid):
    """(state, ppid, start time) from /proc/PID/stat, or None."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            fields = f.read().rpartition(')')[2].split()
        return fields[0], int(fields[1]), int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def _read(path, mode='rb'):
    try:
        with open(path, mode) as f:
            return f.read()
    except OSError:
        return None


def cmdline(pid):
    raw = _read('/proc/%d/cmdline' % pid) or b''
    return raw.replace(b'\0', b' ').decode(errors='replace').strip()


def _run_tokens(environ):
    """The VDSM_DHCP_RUNS tokens in a raw /proc/PID/environ."""
    for item in environ.split(b'\0'):
        if item.startswith(ENV.encode() + b'='):
            return item.split(b'=', 1)[1].decode(errors='replace').split()
    return []


def cgroup_dirs(name):
    """Every hierarchy's directory of cgroup `name` (a top-level one)."""
    try:
        roots = sorted(os.listdir(CGROUP_ROOT))
    except OSError:
        return []
    return [os.path.join(CGROUP_ROOT, h, name) for h in roots
            if os.path.isdir(os.path.join(CGROUP_ROOT, h, name))]


def cgroup_pids(name):
    """PIDs in cgroup `name` or any cgroup below it, in any hierarchy."""
    pids = set()
    for top in cgroup_dirs(name):
        for root, _, files in os.walk(top):
            if 'cgroup.procs' in files:
                raw = _read(os.path.join(root, 'cgroup.procs'), 'r') or ''
                pids.update(int(p) for p in raw.split())
    return pids


def remove_cgroup(name, timeout=10.0):
    """SIGKILL every process in cgroup `name` (ours by its name: we made
    it), then remove its directories depth first (children such as
    init.scope first). Returns what could not be removed."""
    deadline = time.monotonic() + timeout
    while True:
        pids = {p for p in cgroup_pids(name) if _stat(p)}
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for top in cgroup_dirs(name):
            for root, _, _ in sorted(os.walk(top, topdown=False),
                                     key=lambda t: -len(t[0])):
                try:
                    os.rmdir(root)
                except OSError:
                    pass    # still emptying: next round
        left = cgroup_dirs(name)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def _entries(path, most=8):
    try:
        return sorted(os.listdir(path))[:most]
    except OSError:
        return []


class Found:
    def __init__(self, processes, cgroups, dirs):
        self.processes = processes    # [(pid, start time, cmdline, why)]
        self.cgroups = cgroups        # [name]
        self.dirs = dirs              # [path]

    def __bool__(self):
        return bool(self.processes or self.cgroups or self.dirs)

    def lines(self):
        return (['process %d (%s): %s' % (pid, why, cmd[:160])
                 for pid, _, cmd, why in self.processes] +
                ['cgroup %s: %s' % (name, ' '.join(cgroup_dirs(name)))
                 for name in self.cgroups] +
                ['temp dir %s: %s' % (path, _entries(path))
                 for path in self.dirs])


class Run:
    """One test session, benchmark or demo run: begin() at its start,
    finish() at its end (also when it failed or was interrupted)."""

    def __init__(self):
        self.token = uuid.uuid4().hex[:12]
        self.log = _log_path(self.token)
        self.pid = os.getpid()
        self._old_env = None

    def begin(self):
        with open(self.log, 'x'):
            pass
        self._old_env = os.environ.get(ENV)
        os.environ[ENV] = ' '.join(tokens() + [self.token])
        tempfile.mkdtemp = _tracking_mkdtemp
        return self

    def _records(self):
        dirs, cgroups = [], []
        for line in (_read(self.log, 'r') or '').splitlines():
            kind, _, name = line.partition(' ')
            if kind == 'dir' and name not in dirs:
                dirs.append(name)
            elif kind == 'cgroup' and name not in cgroups:
                cgroups.append(name)
        return dirs, cgroups

    def find(self):
        """What of this run still exists (zombies count as gone)."""
        dirs, cgroups = self._records()
        in_cgroups = set()
        for name in cgroups:
            in_cgroups |= cgroup_pids(name)
        stats = {pid: _stat(pid) for pid in _pids()}
        children = {}
        for pid, st in stats.items():
            if st:
                children.setdefault(st[1], []).append(pid)
        descendants, todo = set(), [self.pid]
        while todo:
            for child in children.get(todo.pop(), []):
                if child not in descendants:
                    descendants.add(child)
                    todo.append(child)
        processes = []
        for pid, st in sorted(stats.items()):
            if not st or st[0] == 'Z' or pid == self.pid:
                continue
            cmd = cmdline(pid)
            why = None
            if self.token in _run_tokens(
                    _read('/proc/%d/environ' % pid) or b''):
                why = 'carries the run token'
            elif pid in in_cgroups:
                why = 'in our cgroup'
            elif pid in descendants:
                why = 'our descendant'
            elif any(d + '/' in cmd or cmd.endswith(d) for d in dirs):
                why = 'runs in our temp dir'
            if why:
                processes.append((pid, st[2], cmd, why))
        return Found(processes,
                     [name for name in cgroups if cgroup_dirs(name)],
                     [path for path in dirs if os.path.lexists(path)])

    def wait_gone(self, grace):
        """Give processes that are on their way out `grace` seconds."""
        deadline = time.monotonic() + grace
        while True:
            found = self.find()
            if not found.processes or time.monotonic() > deadline:
                return found
            time.sleep(0.1)

    @staticmethod
    def remove(found):
        """End the processes by PID (only if still the same process: PID
        and start time), empty and remove the cgroups, remove the dirs."""
        for pid, started, _, _ in found.processes:
            st = _stat(pid)
            if st and st[2] == started:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for name in found.cgroups:
            remove_cgroup(name)
        for path in found.dirs:
            # never into a mount left inside (a hook test binds the venv
            # under its dir): that would delete the mounted tree
            subprocess.run(['rm', '-rf', '--one-file-system', '--', path],
                           capture_output=True)

    def finish(self, grace=5.0):
        """Check, then clean up. Returns the lines describing what was left
        behind ([] when nothing was); the run is over after this."""
        if os.getpid() != self.pid:
            return []       # a forked copy of the run's process: not its end
        try:
            # rounds: a process can fork while we end its parent, or start
            # (still mid-exec, unreadable) while we look
            time.sleep(0.2)
            lines = []
            for _ in range(3):
                found = self.wait_gone(grace)
                if not found:
                    return lines
                lines += [line for line in found.lines() if line not in lines]
                self.remove(found)
                grace = 1.0
            return lines + ['STILL THERE after removal: ' + line
                            for line in self.find().lines()]
        finally:
            if self._old_env is None:
                os.environ.pop(ENV, None)
            else:
                os.environ[ENV] = self._old_env
            tempfile.mkdtemp = _real_mkdtemp
            try:
                os.unlink(self.log)
            except FileNotFoundError:
                pass
