"""The agent's transient unit, driven over systemd's D-Bus API.

What `systemd-run --unit=U -p Restart=on-failure ... CMD` does, without a
subprocess: Manager.StartTransientUnit, KillUnit (reload by SIGHUP),
StopUnit. dbus.SystemBus() honours DBUS_SYSTEM_BUS_ADDRESS, which is how
the tests reach a private manager.
"""
import signal
import time

import dbus

from vdsm_dhcp.errors import SystemdError

BUS_NAME = 'org.freedesktop.systemd1'
MANAGER_PATH = '/org/freedesktop/systemd1'
MANAGER_IFACE = 'org.freedesktop.systemd1.Manager'
UNIT_IFACE = 'org.freedesktop.systemd1.Unit'
SERVICE_IFACE = 'org.freedesktop.systemd1.Service'
PROPS_IFACE = 'org.freedesktop.DBus.Properties'


def _dbus_error(action, unit, e):
    return SystemdError('systemd: cannot %s %s: %s'
                        % (action, unit, e.get_dbus_message() or e))


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
        """{'ActiveState', 'SubState', 'MainPID', ...}, or None if the unit
        is not loaded."""
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
        state = {
            'unit': unit,
            'ActiveState': str(unit_props['ActiveState']),
            'SubState': str(unit_props['SubState']),
            'LoadState': str(unit_props['LoadState']),
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

    def start_transient(self, unit, argv, description, environment=(),
                        timeout=30):
        """Start `argv` as a transient service, as systemd-run would, and
        wait until it is active (or fails)."""
        props = [
            ('Description', dbus.String(description)),
            ('ExecStart', dbus.Array(
                [(dbus.String(argv[0]), dbus.Array(argv, signature='s'),
                  dbus.Boolean(False))], signature='(sasb)')),
            # The agent spawns dnsmasq; on an agent restart or crash, only
            # the agent is killed: DHCP keeps answering and the next agent
            # adopts the running dnsmasq processes.
            ('KillMode', dbus.String('process')),
            ('Restart', dbus.String('on-failure')),
            ('RestartUSec', dbus.UInt64(1_000_000)),
            # A failed unit must not block the next start ("unit exists").
            ('CollectMode', dbus.String('inactive-or-failed')),
            ('Type', dbus.String('exec')),
        ]
        if environment:
            props.append(('Environment',
                          dbus.Array(list(environment), signature='s')))
        try:
            self._manager.StartTransientUnit(
                unit, 'fail', dbus.Array(props, signature='(sv)'),
                dbus.Array([], signature='(sa(sv))'))
        except dbus.DBusException as e:
            raise _dbus_error('start', unit, e) from None
        return self._wait(unit, lambda s: s and s['ActiveState'] in
                          ('active', 'failed'), timeout, 'start')

    def reload(self, unit):
        """SIGHUP to the unit's main process (the agent re-reads its list)."""
        try:
            self._manager.KillUnit(unit, 'main', dbus.Int32(signal.SIGHUP))
        except dbus.DBusException as e:
            raise _dbus_error('reload', unit, e) from None

    def stop(self, unit, timeout=90):
        try:
            self._manager.StopUnit(unit, 'replace')
        except dbus.DBusException as e:
            if e.get_dbus_name() == 'org.freedesktop.systemd1.NoSuchUnit':
                return None
            raise _dbus_error('stop', unit, e) from None
        return self._wait(unit, lambda s: not s or s['ActiveState'] in
                          ('inactive', 'failed'), timeout, 'stop')

    def _wait(self, unit, done, timeout, action):
        deadline = time.monotonic() + timeout
        while True:
            state = self.unit_state(unit)
            if done(state):
                return state
            if time.monotonic() > deadline:
                raise SystemdError('systemd: %s of %s did not finish within '
                                   '%ds (state: %s)' % (action, unit, timeout,
                                                        state))
            time.sleep(0.01)
