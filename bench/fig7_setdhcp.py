"""Figure 7: setDHCP verb latency (vdsm_dhcp.setdhcp.verb.set_dhcp, in process, as
supervdsm calls it) with 1 and 100 networks, through a real systemd
manager over real D-Bus (tests/systemd_manager: `systemd --user` in its
own cgroup, reached by DBUS_SYSTEM_BUS_ADDRESS).

  first start:    no unit -> networks file written, transient unit started,
                  returns once the unit is active (not once DHCP serves:
                  that time is in the notes)
  identical list: nothing written, nothing signalled (a no-op)
  changed list:   networks file rewritten + SIGHUP to the agent (reload)
  clear:          empty list: the unit stopped; the agent tears down every
                  network (namespaces, dnsmasq) before it exits
The networks are real: bridges, an IPAM with a DHCP port and one VM port
each, so the agent does its real work behind the verb."""
import os
import time

from bench import _lab
from vdsm_dhcp import errors
from vdsm_dhcp.setdhcp import verb

TITLE = 'setDHCP verb latency through the real systemd manager'


def arg(nets):
    return [{'name': name, 'quantumId': net['id']}
            for name, net, _, _ in nets]


def timed(bench, networks):
    started = time.monotonic()
    result = verb.set_dhcp(networks, config_file=bench.host.conf_path)
    took = time.monotonic() - started
    if result != errors.DONE:
        raise RuntimeError('setDHCP failed: %s' % (result,))
    return took


def served(bench, nets, timeout=120):
    names = {n[0] for n in nets}

    def check():
        st = bench.status(timeout=2)
        return st and {n['name'] for n in st['networks']} == names and \
            _lab.servable(st, names)
    return _lab.wait_until(check, timeout, interval=0.05)[1]


def cycle(bench, nets, spare, identical_runs):
    out = {}
    out['first start'] = [timed(bench, arg(nets))]
    out['serve'] = served(bench, nets)
    out['identical list (no-op)'] = [timed(bench, arg(nets))
                                     for _ in range(identical_runs)]
    changed = []
    for variant in (nets[:-1] + [spare], nets):
        changed.append(timed(bench, arg(variant)))
        served(bench, variant)
    out['changed list (reload)'] = changed
    out['clear'] = [timed(bench, [])]
    return out


def run(quick):
    from tests.systemd_manager import SystemdManager
    cycles = {1: 3, 100: 1} if quick else {1: 5, 100: 3}
    overlap = _lab.Overlap()
    old_bus = os.environ.get('DBUS_SYSTEM_BUS_ADDRESS')
    manager = bench = None
    rows = []
    try:
        manager = SystemdManager().start()
        os.environ['DBUS_SYSTEM_BUS_ADDRESS'] = manager.bus
        bench = _lab.Bench()
        nets = bench.networks(101, 1)
        for size, count in sorted(cycles.items()):
            chosen, spare = nets[:size], nets[100]
            runs = {}
            serve = []
            for _ in range(count):
                out = cycle(bench, chosen, spare, 5)
                serve.append(out.pop('serve'))
                for k, v in out.items():
                    runs.setdefault(k, []).extend(v)
                overlap.sample()
            for step in ('first start', 'identical list (no-op)',
                         'changed list (reload)', 'clear'):
                values = runs[step]
                notes = '%d runs' % len(values)
                if step == 'first start':
                    notes += ('; the agent then served all %d in %.2f s '
                              '(median, after the verb returned)'
                              % (size, _lab.median(serve)))
                if step == 'clear':
                    notes += ('; includes the agent tearing down %d '
                              'networks (namespace + dnsmasq each)' % size)
                rows.append(_lab.row(
                    'setDHCP %d network%s: %s' % (size, 's' if size > 1
                                                 else '', step),
                    round(1000 * _lab.median(values), 1), 'ms', None, None,
                    runs=[round(1000 * v, 1) for v in values], notes=notes))
        rows[0]['notes'] += '; ' + overlap.note()
    finally:
        left = []
        if bench is not None:
            left = bench.close()
        if manager is not None:
            try:
                manager.stop()
            except RuntimeError as e:   # bench.run's leftover check reports
                left.append(str(e))
        if old_bus is None:
            os.environ.pop('DBUS_SYSTEM_BUS_ADDRESS', None)
        else:
            os.environ['DBUS_SYSTEM_BUS_ADDRESS'] = old_bus
        if left and rows:
            rows[-1]['notes'] += '; SURVIVORS killed: %s' % left
    return rows
