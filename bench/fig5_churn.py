"""Figure 5: churn. Ports are created and deleted at a steady rate (half
each; the oldest port goes first, freed IPs are reused last) on a few
networks of the IPAM file source, for a fixed time per rate. The IPAM file
is rewritten every TICK with the changes due by then (at 400/s: 8 per
write), as a busy IPAM would.

Servable latency of a change, from the IPAM write that holds it:
  created: until `why` says dnsmasq has loaded the entry (in_dnsmasq: the
           readiness gate's truthful criterion);
  deleted: until the `hosts` request no longer lists the MAC (the entry is
           gone from the agent's written set, its file unlinked and
           dnsmasq signalled to re-read).
Polled over one persistent control-socket connection (every ~2 ms). The
highest rate whose p99 stays under 200 ms is the result; rates above a
failing one are not run."""
import collections
import threading
import time

from bench import _lab

TITLE = 'Churn: highest create+delete rate with p99 servable < 200 ms'
TICK = 0.02
NETS = 4
BASE_PORTS = 100
P99_LIMIT = 0.200
DRAIN = 5.0


class Churn:
    def __init__(self, bench, tick=TICK):
        self.bench = bench
        self.tick = tick
        self.fifo = collections.deque()     # (net tuple, port) oldest first
        self.free = {}
        for item in bench.nets:
            _, net, _, _ = item
            self.free[net['id']] = collections.deque(
                bench.free_ips[net['id']])
        by_net = {n[1]['id']: n for n in bench.nets}
        for port in bench.ipam.ports:
            if port['device_owner'] != 'network:dhcp':
                self.fifo.append((by_net[port['network_id']], port))
        self.turn = 0
        self.lock = threading.Lock()
        self.pending_add = {}      # mac -> written at
        self.pending_del = {}      # mac -> (network name, written at)
        self.latency = []          # (written at, seconds, kind)

    def change(self):
        """One change into the IPAM (not saved): create or delete."""
        self.turn += 1
        if self.turn % 2:
            item = self.bench.nets[self.turn // 2 % len(self.bench.nets)]
            name, net, sub, prefix = item
            host_no = self.free[net['id']].popleft()
            port = self.bench.port(net, sub, prefix, host_no, save=False)
            self.fifo.append((item, port))
            return 'add', name, port['mac_address']
        item, port = self.fifo.popleft()
        self.bench.ipam.remove(port)
        ip = port['fixed_ips'][0]['ip_address']
        self.free[item[1]['id']].append(int(ip.rsplit('.', 1)[1]))
        return 'del', item[0], port['mac_address']

    def write(self, rate, duration):
        start = time.monotonic()
        done = 0
        while True:
            now = time.monotonic()
            if now - start >= duration:
                break
            due = int(rate * (now - start)) + 1 - done
            if due > 0:
                changes = [self.change() for _ in range(due)]
                self.bench.save()
                at = time.monotonic()
                with self.lock:
                    for kind, name, mac in changes:
                        if kind == 'add':
                            self.pending_add[mac] = at
                        else:
                            self.pending_add.pop(mac, None)
                            self.pending_del[mac] = (name, at)
                done += due
            time.sleep(max(0.0, self.tick - (time.monotonic() - now)))
        return done, time.monotonic() - start

    def poll(self, stop):
        conn = _lab.Connection(self.bench.conf)
        try:
            while True:
                with self.lock:
                    adds = list(self.pending_add.items())
                    dels = list(self.pending_del.items())
                if stop.is_set() and not adds and not dels:
                    return
                for mac, at in adds:
                    if conn.call('why', mac=mac).get('in_dnsmasq'):
                        self._done(mac, at, 'add', self.pending_add)
                names = {name for _, (name, _) in dels}
                listed = {}
                for name in names:
                    entries = conn.call('hosts', network=name)['hosts']
                    listed[name] = {e['entry'].split(',', 1)[0]
                                    for e in entries}
                for mac, (name, at) in dels:
                    if mac not in listed[name]:
                        self._done(mac, at, 'del', self.pending_del)
                time.sleep(0.002)
        finally:
            conn.close()

    def _done(self, mac, at, kind, pending):
        now = time.monotonic()
        with self.lock:
            if pending.get(mac) is not None and (
                    pending[mac] if kind == 'add' else pending[mac][1]) == at:
                del pending[mac]
                self.latency.append((at, now - at, kind))


def one_rate(churn, rate, duration):
    churn.latency = []
    stop = threading.Event()
    poller = threading.Thread(target=churn.poll, args=(stop,), daemon=True)
    poller.start()
    t0 = time.monotonic()
    changes, took = churn.write(rate, duration)
    deadline = time.monotonic() + DRAIN
    while time.monotonic() < deadline:
        with churn.lock:
            if not churn.pending_add and not churn.pending_del:
                break
        time.sleep(0.01)
    with churn.lock:
        lost = len(churn.pending_add) + len(churn.pending_del)
        churn.pending_add.clear()
        churn.pending_del.clear()
    stop.set()
    poller.join(10)
    lat = [s for _, s, _ in churn.latency]
    lat += [float('inf')] * lost
    adds = [s for _, s, k in churn.latency if k == 'add']
    dels = [s for _, s, k in churn.latency if k == 'del']
    per_second = collections.defaultdict(list)
    for at, s, _ in churn.latency:
        per_second[int(at - t0)].append(s)
    return {'rate': rate, 'achieved': changes / took, 'changes': changes,
            'p50': _lab.pct(lat, 50), 'p99': _lab.pct(lat, 99),
            'max': max(lat) if lat else None, 'lost': lost,
            'p99_add': _lab.pct(adds, 99), 'p99_del': _lab.pct(dels, 99),
            'per_second_p99': [round(1000 * _lab.pct(v, 99), 1)
                               for _, v in sorted(per_second.items())]}


def run(quick):
    rates = [50, 100, 200, 400, 800] if quick else [50, 100, 200, 400, 800,
                                                   1600]
    # 30 s per rate: p99 over ~12,000 changes at 400/s, and `make bench`
    # stays within its 20 minutes
    return measure(rates, 3.0 if quick else 30.0)


def measure(rates, duration):
    """The rows for these rates (ascending; stops at the first whose p99
    misses), `duration` s each."""
    overlap = _lab.Overlap()
    bench = _lab.Bench()
    rows, results = [], []
    try:
        bench.networks(NETS, BASE_PORTS)
        bench.listed()
        agent = bench.agent()
        _lab.wait_until(lambda: _lab.servable(bench.status()), 60)
        pids = bench.dnsmasq_pids()
        cpu0 = _lab.cpu_seconds(agent.proc.pid)
        churn = Churn(bench)
        for rate in rates:
            c0, w0 = _lab.cpu_seconds(agent.proc.pid), time.monotonic()
            r = one_rate(churn, rate, duration)
            r['agent_cpu'] = (_lab.cpu_seconds(agent.proc.pid) - c0) / (
                time.monotonic() - w0)
            overlap.sample()
            results.append(r)
            met = r['p99'] < P99_LIMIT
            rows.append(_lab.row(
                'p99 servable at %d changes/s' % rate,
                round(1000 * r['p99'], 1), 'ms', '< 200 ms', met,
                runs=r['per_second_p99'],
                notes='%d changes in %.0f s (%.0f/s achieved); p50 %.1f ms, '
                      'max %.1f ms; p99 created %.1f ms, deleted %.1f ms; '
                      'never servable within %.0f s: %d; agent CPU %.0f%% '
                      'of a core; runs = p99 per second (ms)'
                % (r['changes'], duration, r['achieved'], 1000 * r['p50'],
                   1000 * r['max'], 1000 * (r['p99_add'] or 0),
                   1000 * (r['p99_del'] or 0), DRAIN, r['lost'],
                   100 * r['agent_cpu'])))
            if not met:
                break
        st = bench.status()
        restarted = pids != bench.dnsmasq_pids(st)
        reloads = sum(n.get('reloads', 0) for n in st['networks'])
        ok = [r['rate'] for r in results if r['p99'] < P99_LIMIT]
        best = max(ok) if ok else 0
        met = best >= 800
        rows.append(_lab.row(
            'highest rate with p99 < 200 ms', best, 'changes/s',
            '>= 800/s', met, runs=[r['rate'] for r in results],
            notes='%d networks x %d ports, file source, %s s per rate, '
                  'IPAM written every %d ms; dnsmasq SIGHUP reloads %d, '
                  'restarted: %s; agent CPU over the run %.0f s; %s%s'
                  % (NETS, BASE_PORTS, duration, TICK * 1000, reloads,
                     restarted, _lab.cpu_seconds(agent.proc.pid) - cpu0,
                     overlap.note(), '' if met else '; TARGET MISSED')))
    finally:
        left = bench.close()
        if left and rows:
            rows[-1]['notes'] += '; SURVIVORS killed: %s' % left
    return rows
