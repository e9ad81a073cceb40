"""Figure 4: cold start and agent restart.

Cold: N networks (5 ports each), bridges up, the networks file written, no
agent, nothing of ours on the host; from spawning the agent until `status`
says every network is served with hosts_loaded == hosts. Networks/s = N
over that time (the agent's own start-up, imports included, counted).

Restart: with those networks up, SIGTERM the agent, start a new one; from
the SIGTERM until every network is served again, adopted (the same
dnsmasq PIDs), all hosts loaded. dnsmasq restarts: networks whose dnsmasq
PID changed, plus the agents' own restart counters.

Each dnsmasq (--dhcp-hostsdir) holds an inotify instance charged to its
user (nobody): fs.inotify.max_user_instances (128 by default) caps the
networks one host can serve. A size past what is left of it is still run
and reported as missed, with the reason; the largest size that fits is
measured too (full mode)."""
import time

from bench import _lab

TITLE = 'Cold start of N networks; agent restart with them up'
PORTS = 5


def run(quick):
    sizes = [50] if quick else [50, 200]
    restarts = 2 if quick else 3
    rows = []
    limit, used = _lab.inotify_budget()
    fits = limit - used - 4
    stand_in = None
    if not quick and fits < 200:
        stand_in = fits // 10 * 10
        sizes.insert(1, stand_in)
    for n in sizes:
        rows += measure(n, restarts, (limit, used), n == stand_in)
    return rows


def measure(n, restarts, budget, stand_in=False):
    overlap = _lab.Overlap()
    bench = _lab.Bench()
    rows = []
    limit, used = budget
    over = n > limit - used
    try:
        bench.networks(n, PORTS)
        bench.listed()
        names = {name for name, _, _, _ in bench.nets}
        last = [None]

        def ready(adopted=None):
            st = last[0] = bench.status()
            return (_lab.servable(st, names, adopted) and
                    all(x['hosts'] == PORTS for x in st['networks']) and st)

        started = time.monotonic()
        agent = bench.agent(wait=False)
        st, _ = _lab.wait_until(ready, 30 if over else 120, interval=0.05)
        cold = time.monotonic() - started
        overlap.sample()
        if not st:
            missing = _lab.not_served(last[0])
            rows.append(_lab.row(
                'cold start, %d networks x %d ports' % (n, PORTS), 0,
                'networks/s', '>= 20/s', False,
                notes='NOT ALL SERVABLE after %.0f s: %d of %d not served: '
                      '%s; fs.inotify.max_user_instances=%d, %d held by '
                      'nobody before the run; %s; TARGET MISSED'
                % (cold, sum(missing.values()), n, missing, limit, used,
                   overlap.note())))
            return rows
        rate = n / cold
        pids = bench.dnsmasq_pids(st)
        times, from_spawn, changed, stops, sockets = [], [], 0, [], []
        for _ in range(restarts):
            t0 = time.monotonic()
            agent.proc.terminate()
            agent.proc.wait(60)
            stops.append(time.monotonic() - t0)
            t1 = time.monotonic()
            agent = bench.agent(wait=False)
            _lab.wait_until(lambda: agent.answers(), 30, 0.01)
            sockets.append(time.monotonic() - t1)
            st, _ = _lab.wait_until(lambda: ready(adopted=True), 60,
                                    interval=0.02)
            done = time.monotonic()
            overlap.sample()
            if not st:
                raise RuntimeError('restart of %d networks not reconciled '
                                   'within 60 s: %s'
                                   % (n, _lab.not_served(last[0])))
            times.append(done - t0)
            from_spawn.append(done - t1)
            now = bench.dnsmasq_pids(st)
            changed += sum(now[k] != pids[k] for k in pids)
            changed += sum(x.get('restarts', 0) for x in st['networks'])
            pids = now
        note = overlap.note()
        rows.append(_lab.row(
            'cold start, %d networks x %d ports' % (n, PORTS), round(rate, 1),
            'networks/s', '>= 20/s', rate >= 20, runs=[round(rate, 1)],
            notes='%.2f s from spawning the agent to all servable; %s%s'
            % (cold, note, '' if rate >= 20 else '; TARGET MISSED')))
        worst = max(times)
        met = worst <= 2.0 if n >= 200 else None
        target = '<= 2 s at 200 networks' if n >= 200 else None
        if stand_in:
            # 200 cannot start here: the largest size that can stands in;
            # over 2 s already is a miss, under it proves nothing for 200
            target = '<= 2 s at 200 (200 impossible here: see below)'
            met = False if worst > 2.0 else None
        rows.append(_lab.row(
            'agent restart, %d networks: reconciled' % n,
            round(_lab.median(times), 3), 's', target, met,
            runs=[round(t, 3) for t in times],
            notes='from SIGTERM; old agent exits in %.0f ms, new agent '
                  'answers its socket %.0f ms after spawn, all adopted and '
                  'loaded %.0f ms after spawn (medians); %s%s'
                  % (1000 * _lab.median(stops), 1000 * _lab.median(sockets),
                     1000 * _lab.median(from_spawn), note,
                     '; TARGET MISSED' if met is False else '')))
        rows.append(_lab.row(
            'agent restart, %d networks: dnsmasq restarts' % n, changed,
            'restarts', '0', changed == 0,
            notes='over %d restarts x %d networks (PIDs compared)'
                  % (restarts, n)))
    finally:
        t = time.monotonic()
        left = bench.close()
        if rows:
            rows[0]['notes'] += '; teardown of %d networks took %.1f s' % (
                n, time.monotonic() - t)
            if left:
                rows[-1]['notes'] += '; SURVIVORS killed: %s' % left
    return rows
