"""The agent's transient unit, driven over systemd's D-Bus API.

What `systemd-run --unit=U -p Type=notify -p Restart=always ... CMD` does,
without a subprocess: Manager.StartTransientUnit, KillUnit (reload by
SIGHUP), StopUnit. dbus.SystemBus() honours DBUS_SYSTEM_BUS_ADDRESS, which
is how the tests reach a private manager.

Type=notify: the start job ends when the agent says READY=1, which it
does once its signal handlers and control socket are up; from then on a
reload (SIGHUP) or stop (SIGTERM) is handled, never a death.
Restart=always: the agent, killed by any signal or crashing, comes back
(on-failure would take a death by SIGHUP for a clean exit). A stop asked
of systemd is never undone by Restart=; exit statuses that a restart
cannot cure (bad configuration, another agent running) end the unit.
"""
import signal
import time

import dbus

from vdsm_dhcp.errors import SystemdError
from vdsm_dhcp.timing import wait_until

BUS_NAME = 'org.freedesktop.systemd1'
MANAGER_PATH = '/org/freedesktop/systemd1'
MANAGER_IFACE = 'org.freedesktop.systemd1.Manager'
UNIT_IFACE = 'org.freedesktop.systemd1.Unit'
SERVICE_IFACE = 'org.freedesktop.systemd1.Service'
PROPS_IFACE = 'org.freedesktop.DBus.Properties'

# vdsm_dhcp.agent's exit statuses that a restart would only repeat
EXIT_BAD_CONFIG = 2
EXIT_ALREADY_RUNNING = 3
RESTART_SEC = 1.0

TRANSITIONS = ('activating', 'deactivating', 'reloading')


def _dbus_error(action, unit, e):
    return SystemdError('systemd: cannot %s %s: %s'
                        % (action, unit, e.get_dbus_message() or e))


def _usec(seconds):
    return dbus.UInt64(int(seconds * 1_000_000))


class Systemd:
    def __init__(self, bus=None):
        try:
            self._bus = bus or dbus.SystemBus()
        except dbus.DBusException as e:
            raise SystemdError('cannot reach systemd over D-Bus: %s'
                               % e.get_dbus_message()) from None
        self._manager = dbus.Interface(
            self._bus.get_object(BUS_NAME, MANAGER_PATH), MANAGER_IFACE)

    def unit_state(self, unit):
        """{'ActiveState', 'SubState', 'MainPID', 'Job', ...}, or None if
        the unit is not loaded. Job is the id of its pending job, 0 for
        none."""
        try:
            path = self._manager.GetUnit(unit)
        except dbus.DBusException as e:
            if e.get_dbus_name() == 'org.freedesktop.systemd1.NoSuchUnit':
                return None
            raise _dbus_error('query', unit, e) from None
        props = dbus.Interface(self._bus.get_object(BUS_NAME, path),
                               PROPS_IFACE)
        try:
            unit_props = props.GetAll(UNIT_IFACE)
            service_props = props.GetAll(SERVICE_IFACE)
        except dbus.DBusException as e:
            if e.get_dbus_name() == 'org.freedesktop.DBus.Error.UnknownObject':
                return None  # collected between GetUnit and GetAll
            raise _dbus_error('query', unit, e) from None
        job = unit_props.get('Job') or (0, '/')
        state = {
            'unit': unit,
            'ActiveState': str(unit_props['ActiveState']),
            'SubState': str(unit_props['SubState']),
            'LoadState': str(unit_props['LoadState']),
            'Job': int(job[0]),
            'MainPID': int(service_props['MainPID']),
            'NRestarts': int(service_props.get('NRestarts', 0)),
            'Result': str(service_props.get('Result', '')),
        }
        argv = service_props.get('ExecStart') or []
        state['ExecStart'] = [str(a) for a in argv[0][1]] if argv else []
        return state

    def is_running(self, unit):
        state = self.unit_state(unit)
        return bool(state) and state['ActiveState'] in (
            'active', 'reloading', 'activating')

    def settle(self, unit, timeout):
        """Wait while the unit is starting (also between an automatic
        restart's tries), stopping or reloading; its state then, or None
        once it is gone."""
        return self._wait(unit, lambda s: not s or (
            s['Job'] == 0 and s['ActiveState'] not in TRANSITIONS),
            timeout, 'settling')

    def start_transient(self, unit, argv, description, environment=(),
                        timeout=30, stop_timeout=90):
        """Start `argv` as a transient service, as systemd-run would, and
        wait for its start job: until the agent is ready, or failed (a
        failed unit may already be collected: then None)."""
        props = [
            ('Description', dbus.String(description)),
            ('ExecStart', dbus.Array(
                [(dbus.String(argv[0]), dbus.Array(argv, signature='s'),
                  dbus.Boolean(False))], signature='(sasb)')),
            # The agent spawns dnsmasq; on an agent restart or crash, only
            # the agent is killed: DHCP keeps answering and the next agent
            # adopts the running dnsmasq processes.
            ('KillMode', dbus.String('process')),
            ('Type', dbus.String('notify')),
            ('NotifyAccess', dbus.String('main')),
            ('TimeoutStartUSec', _usec(timeout)),
            ('TimeoutStopUSec', _usec(stop_timeout)),
            ('Restart', dbus.String('always')),
            ('RestartUSec', _usec(RESTART_SEC)),
            ('RestartPreventExitStatus', dbus.Struct(
                (dbus.Array([EXIT_BAD_CONFIG, EXIT_ALREADY_RUNNING],
                            signature='i'), dbus.Array([], signature='i')),
                signature='aiai')),
            # A failed unit must not block the next start ("unit exists").
            ('CollectMode', dbus.String('inactive-or-failed')),
        ]
        if environment:
            props.append(('Environment',
                          dbus.Array(list(environment), signature='s')))
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._manager.StartTransientUnit(
                    unit, 'fail', dbus.Array(props, signature='(sv)'),
                    dbus.Array([], signature='(sa(sv))'))
                break
            except dbus.DBusException as e:
                if e.get_dbus_name() != \
                        'org.freedesktop.systemd1.UnitExists' or \
                        time.monotonic() > deadline:
                    raise _dbus_error('start', unit, e) from None
            # stopped, not yet collected; or started by a concurrent caller
            state = self.unit_state(unit)
            if state and state['ActiveState'] == 'active':
                return state
            time.sleep(0.02)
        return self._wait(unit, lambda s: not s or (s['Job'] == 0 and (
            s['ActiveState'] != 'activating' or
            s['SubState'] == 'auto-restart')),
            max(1.0, deadline - time.monotonic()) + 5, 'start')

    def reload(self, unit):
        """SIGHUP to the unit's main process (the agent re-reads its list)."""
        try:
            self._manager.KillUnit(unit, 'main', dbus.Int32(signal.SIGHUP))
        except dbus.DBusException as e:
            raise _dbus_error('reload', unit, e) from None

    def stop(self, unit, timeout=90, wait=True):
        """Ask systemd to stop the unit; with wait, until it has stopped
        (the agent's teardown included)."""
        try:
            self._manager.StopUnit(unit, 'replace')
        except dbus.DBusException as e:
            if e.get_dbus_name() == 'org.freedesktop.systemd1.NoSuchUnit':
                return None
            raise _dbus_error('stop', unit, e) from None
        if not wait:
            return None
        return self._wait(unit, lambda s: not s or (
            s['Job'] == 0 and s['ActiveState'] in ('inactive', 'failed')),
            timeout, 'stop')

    def _wait(self, unit, done, timeout, action):
        last = []    # the state seen last, for the error

        def finished():
            last[:] = [self.unit_state(unit)]
            return done(last[0])

        if not wait_until(finished, timeout):
            raise SystemdError('systemd: %s of %s did not finish within '
                               '%ds (state: %s)' % (action, unit, timeout,
                                                    last[0]))
        return last[0]
