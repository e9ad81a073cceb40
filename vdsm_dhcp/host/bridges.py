"""Which bridges exist, and a pyudev watch that says when that changes."""
import logging
import os
import threading

import pyudev

log = logging.getLogger('vdsm_dhcp.bridges')
SYS_NET = '/sys/class/net'


def present(names):
    """The subset of names that are Linux bridges in this namespace."""
    return {n for n in names if os.path.isdir(os.path.join(SYS_NET, n,
                                                            'bridge'))}


def mtu(name):
    try:
        with open(os.path.join(SYS_NET, name, 'mtu')) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def udev_running():
    return os.path.exists('/run/udev/control')


class BridgeWatch:
    """Calls on_change(ifname) when a net device appears or goes away.

    Uses udev's events where udevd runs (a real host), the kernel's own
    uevents otherwise (containers, the test rig)."""

    def __init__(self, on_change):
        context = pyudev.Context()
        source = 'udev' if udev_running() else 'kernel'
        self.monitor = pyudev.Monitor.from_netlink(context, source=source)
        self.monitor.filter_by('net')
        self.source = source
        self._on_change = on_change
        self._stopped = threading.Event()

    def start(self):
        self.monitor.start()
        threading.Thread(target=self._loop, name='bridge-watch',
                         daemon=True).start()

    def _loop(self):
        while not self._stopped.is_set():
            device = self.monitor.poll(timeout=1.0)
            if device is not None and device.action in ('add', 'remove',
                                                        'move'):
                self._on_change(device.sys_name)

    def stop(self):
        self._stopped.set()
