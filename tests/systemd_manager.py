"""A private systemd manager on a private D-Bus, for the verb's tests.

The recipe of ../shared/notes/test-rig.md: `systemd --user` (never
--system), in its own cgroup created first, in its own mount namespace
whose /run/netns is shared with the tests (so the namespaces the agent makes
are seen on both sides). Code under test reaches it through
DBUS_SYSTEM_BUS_ADDRESS, exactly as it reaches the real one on a host.
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

from tests import leftovers
from vdsm_dhcp.dnsmasq.pids import pid_alive, proc_cmdline

CGROUP_HIERARCHIES = ('systemd', 'unified', 'cpu', 'memory', 'pids')

START_SCRIPT = '''#!/bin/sh
set -e
for h in %(hierarchies)s; do
    if [ -d /sys/fs/cgroup/$h ]; then
        mkdir -p /sys/fs/cgroup/$h/%(cgroup)s
        echo $$ > /sys/fs/cgroup/$h/%(cgroup)s/cgroup.procs
    fi
done
mount -t tmpfs tmpfs /run/systemd
mkdir -p /run/systemd/system
export XDG_RUNTIME_DIR=%(rt)s DBUS_SESSION_BUS_ADDRESS=unix:path=%(rt)s/bus
exec /lib/systemd/systemd --user
'''


class SystemdManager:
    def __init__(self):
        self.rt = tempfile.mkdtemp(prefix='vdsm-dhcp-sd-')
        os.chmod(self.rt, 0o700)
        # unique per manager, ours by its name
        self.cgroup = 'vdsm-dhcp-test-sd-%d-%s' % (os.getpid(),
                                                   uuid.uuid4().hex[:6])
        self.bus = 'unix:path=%s/bus' % self.rt
        self.dbus_pid = self.manager = None

    def env(self):
        return dict(os.environ, XDG_RUNTIME_DIR=self.rt,
                    DBUS_SESSION_BUS_ADDRESS=self.bus)

    def start(self):
        """Up and on the bus, or everything it started is gone again
        (also when interrupted while starting)."""
        try:
            return self._start()
        except BaseException:
            try:
                self.stop()
            except RuntimeError as stop_error:
                # the start error is raised; this one only adds to it
                print('stopping the manager that failed to start: %s'
                      % stop_error, file=sys.stderr)
            raise

    def _start(self):
        leftovers.record('cgroup', self.cgroup)
        out = subprocess.run(
            ['dbus-daemon', '--session', '--address=' + self.bus, '--fork',
             '--print-pid'], capture_output=True, text=True, check=True)
        self.dbus_pid = int(out.stdout.split()[0])
        script = os.path.join(self.rt, 'start.sh')
        with open(script, 'w') as f:
            f.write(START_SCRIPT % dict(hierarchies=' '.join(
                CGROUP_HIERARCHIES), cgroup=self.cgroup, rt=self.rt))
        os.chmod(script, 0o755)
        log = open(os.path.join(self.rt, 'manager.log'), 'wb')
        self.manager = subprocess.Popen(
            ['unshare', '--mount', '--propagation', 'unchanged', script],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL,
            start_new_session=True)
        log.close()
        # up means: on the bus under its name (its private socket comes
        # earlier, and a call in between would try D-Bus activation)
        deadline = time.monotonic() + 60
        while not self._on_bus():
            if self.manager.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError('private systemd manager did not start '
                                   '(exit %s): %s' % (self.manager.poll(),
                                                      self.log()))
            time.sleep(0.05)
        return self

    def _on_bus(self):
        # a fresh connection each time: one kept open from before the
        # manager started was seen never to learn of its name
        import dbus.bus
        try:
            bus = dbus.bus.BusConnection(self.bus)
        except dbus.DBusException:
            return False
        try:
            return bus.name_has_owner('org.freedesktop.systemd1')
        finally:
            bus.close()

    def log(self):
        try:
            with open(os.path.join(self.rt, 'manager.log'),
                      errors='replace') as f:
                return f.read()
        except OSError:
            return ''

    def systemctl(self, *args):
        return subprocess.run(['systemctl', '--user'] + list(args),
                              env=self.env(), capture_output=True, text=True)

    def stop(self):
        """Ask the manager to exit, then end by PID whatever is left: every
        process in its cgroup (the user bus systemd's dbus.socket started,
        agents of units, their dnsmasq), the manager, our dbus-daemon; then
        remove the cgroup and the runtime dir. Every step runs even if one
        fails; raises if something of it is still there."""
        problems = []
        if self.manager and self.manager.poll() is None:
            try:
                self.systemctl('exit')
                self.manager.wait(30)
            except (OSError, subprocess.TimeoutExpired) as e:
                problems.append('exit: %r' % e)
        left = leftovers.remove_cgroup(self.cgroup)
        if left:
            problems.append('cgroup not removable: %s' % left)
        if self.manager and self.manager.poll() is None:
            # never got into its cgroup (start.sh failed early)
            self.manager.kill()
            self.manager.wait()
        if self.dbus_pid:
            if not self._end_dbus():
                problems.append('dbus-daemon %d survived' % self.dbus_pid)
        shutil.rmtree(self.rt, ignore_errors=True)
        if problems:
            raise RuntimeError('private systemd manager %s: %s'
                               % (self.cgroup, '; '.join(problems)))

    def _end_dbus(self):
        """Our forked dbus-daemon (not our child: it cannot be waited
        for), by its PID, if that PID still runs our bus."""
        argv = proc_cmdline(self.dbus_pid) or []
        if ('--address=' + self.bus) not in argv:
            return True
        for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            try:
                os.kill(self.dbus_pid, sig)
            except ProcessLookupError:
                return True
            deadline = time.monotonic() + grace
            while pid_alive(self.dbus_pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not pid_alive(self.dbus_pid):
                return True
        return False
