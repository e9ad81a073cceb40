"""A private systemd manager on a private D-Bus, for the verb's tests.

The recipe of ../shared/notes/test-rig.md: `systemd --user` (never
--system), in its own cgroup created first, in its own mount namespace
whose /run/netns is shared with the tests (so the namespaces the agent makes
are seen on both sides). Code under test reaches it through
DBUS_SYSTEM_BUS_ADDRESS, exactly as it reaches the real one on a host.
"""
import os
import signal
import subprocess
import tempfile
import time

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
        self.cgroup = 'vdsm-dhcp-test-sd-%d' % os.getpid()
        self.bus = 'unix:path=%s/bus' % self.rt
        self.dbus_pid = self.manager = None

    def env(self):
        return dict(os.environ, XDG_RUNTIME_DIR=self.rt,
                    DBUS_SESSION_BUS_ADDRESS=self.bus)

    def start(self):
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
        deadline = time.monotonic() + 20
        while True:
            if self._on_bus():
                break
            if self.manager.poll() is not None or time.monotonic() > deadline:
                log = self.log()
                self.stop()
                raise RuntimeError('private systemd manager did not start '
                                   '(exit %s): %s' % (self.manager.poll(),
                                                      log))
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
        if self.manager and self.manager.poll() is None:
            self.systemctl('exit')
            try:
                self.manager.wait(10)
            except subprocess.TimeoutExpired:
                self.manager.kill()
                self.manager.wait()
        if self.dbus_pid:
            try:
                os.kill(self.dbus_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for h in CGROUP_HIERARCHIES:
            top = os.path.join('/sys/fs/cgroup', h, self.cgroup)
            for root, dirs, _ in sorted(os.walk(top, topdown=False),
                                        key=lambda t: -len(t[0])):
                try:
                    os.rmdir(root)
                except OSError:
                    pass
        subprocess.run(['rm', '-rf', self.rt])
