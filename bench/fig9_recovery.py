"""Figure 9: recovery times, measured here because pass/fail tests keep
only generous hang bounds (a loaded 2-core machine misses tight ones):

  dnsmasq SIGKILL -> served again: a network's dnsmasq killed; until
                     `status` shows it served by a new dnsmasq pid
  late bridge -> served:           a listed network whose bridge is
                                   created while the agent runs; until
                                   `status` shows it served

Both measured from this process by polling the control socket every 5 ms.
"""
import os
import signal
import time

from bench import _lab

TITLE = 'Recovery: dnsmasq SIGKILL -> served again; late bridge -> served'
SETTLE = 2.0      # s between rounds: each kill hits a dnsmasq that ran a while


def _network(bench, name):
    for n in (bench.status() or {}).get('networks', []):
        if n['name'] == name:
            return n
    return None


def _respawned(bench, name, old_pid):
    n = _network(bench, name)
    return n and n['served'] and n['dnsmasq_pid'] not in (None, old_pid)


def _measure(rounds, step, what, errors):
    """rounds x step() -> the times in ms of the rounds that finished."""
    times = []
    for _ in range(rounds):
        took = step()
        if took is None:
            errors.append('%s: not within 60 s' % what)
        else:
            times.append(round(took * 1000, 1))
        time.sleep(SETTLE)
    return times


def run(quick):
    rounds = 3 if quick else 10
    overlap = _lab.Overlap()
    bench = _lab.Bench()
    errors = []
    try:
        (kept,) = bench.networks(1, 1)
        (late,) = bench.networks(1, 1, bridges=False)
        kept_name, late_name = kept[0], late[0]
        bench.listed([kept, late])
        bench.agent()
        served, _ = _lab.wait_until(
            lambda: _lab.servable(bench.status(), {kept_name}), 60)
        if not served:
            raise RuntimeError('%s not served: %s' % (
                kept_name, _lab.not_served(bench.status())))

        def kill_dnsmasq():
            pid = _network(bench, kept_name)['dnsmasq_pid']
            os.kill(pid, signal.SIGKILL)
            done, took = _lab.wait_until(
                lambda: _respawned(bench, kept_name, pid), 60, 0.005)
            return took if done else None

        def late_bridge():
            if late_name in bench.lab.bridges:
                bench.lab.del_bridge(late_name)
                _lab.wait_until(lambda: not (_network(bench, late_name) or
                                             {}).get('served'), 60)
            started = time.monotonic()
            bench.lab.bridge(late_name)
            done, _ = _lab.wait_until(
                lambda: (_network(bench, late_name) or {}).get('served'),
                60, 0.005)
            return time.monotonic() - started if done else None

        respawn = _measure(rounds, kill_dnsmasq, 'dnsmasq respawn', errors)
        overlap.sample()
        bridge = _measure(rounds, late_bridge, 'late bridge', errors)
    finally:
        left = bench.close()
    notes = '%d rounds, %.0f s apart; %s' % (rounds, SETTLE, overlap.note())
    if errors:
        notes += '; ERRORS: %s' % '; '.join(errors)
    if left:
        notes += '; SURVIVORS killed: %s' % left
    return [
        _lab.row('dnsmasq SIGKILL -> served again', _lab.median(respawn),
                 'ms', runs=respawn, notes=notes),
        _lab.row('late bridge -> served', _lab.median(bridge), 'ms',
                 runs=bridge, notes=notes)]
