"""Figure 6: resources at N networks / P ports (P/N ports each, file
source). The agent's RSS (VmRSS, and VmHWM: the peak) and CPU (utime +
stime from /proc over the window, in % of one core), idle for IDLE s after
all is served, then under churn (CHURN_RATE creates+deletes per second
spread over every network, as in figure 5, for the same time; the servable
p99 under that churn is reported too). dnsmasq: RSS and PSS per network
(PSS divides the shared binary and libraries among the processes).

Past ~64 networks the agent raises fs.inotify.max_user_instances (one
instance per dnsmasq); that limit is host-wide: what the agent raised is
put back after the run, as figure 4 does."""
import threading
import time

from bench import _lab
from bench.fig4_cold_start import read_limit, restore_limit
from bench.fig5_churn import Churn, one_rate

TITLE = 'Resources: agent RSS/CPU idle and under churn; dnsmasq per network'
CHURN_RATE = 100


def sample_rss(pid, stop, out):
    while not stop.is_set():
        try:
            out.append(_lab.rss_mb(pid))
        except OSError:
            return
        stop.wait(0.25)


def hwm_mb(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) / 1024.0


def run(quick):
    n, ports = (50, 2000) if quick else (200, 10000)
    return measure(n, ports, 5.0 if quick else 10.0, full=not quick)


def measure(n, ports, window, full):
    """The rows at n networks / ports ports, idle and churn for window s;
    full: judge the target (only at the goal's size)."""
    ports = ports // n * n
    original = read_limit()
    overlap = _lab.Overlap()
    bench = _lab.Bench()
    rows = []
    try:
        bench.networks(n, ports // n)
        bench.listed()
        t = time.monotonic()
        agent = bench.agent(wait=False)
        st, _ = _lab.wait_until(lambda: _lab.servable(bench.status()) and
                                bench.status(), 300, interval=0.1)
        served_in = time.monotonic() - t
        if not st:
            raise RuntimeError('not served within 300 s')
        pid = agent.proc.pid
        time.sleep(1.0)   # let the first rounds settle
        overlap.sample()
        # idle
        rss = []
        stop = threading.Event()
        sampler = threading.Thread(target=sample_rss, args=(pid, stop, rss))
        c0, w0 = _lab.cpu_seconds_live(pid), time.monotonic()
        sampler.start()
        time.sleep(window)
        stop.set()
        sampler.join()
        idle_cpu = (_lab.cpu_seconds_live(pid) - c0) / (
            time.monotonic() - w0)
        idle_rss = max(rss)
        idle_peak = hwm_mb(pid)
        last = bench.status()['last_reconcile']
        resync_note = ('; a 30 s resync fell in the window'
                       if last and last > time.time() - window - 0.5
                       else '; no 30 s resync in the window')
        overlap.sample()
        # churn
        # a 3 MB IPAM document takes ~30 ms to write: once per 100 ms
        churn = Churn(bench, tick=0.1)
        rss2 = []
        stop = threading.Event()
        sampler = threading.Thread(target=sample_rss, args=(pid, stop, rss2))
        c0, w0 = _lab.cpu_seconds(pid), time.monotonic()
        sampler.start()
        r = one_rate(churn, CHURN_RATE, window)
        stop.set()
        sampler.join()
        churn_cpu = (_lab.cpu_seconds(pid) - c0) / (time.monotonic() - w0)
        churn_rss = max(rss2)
        peak = hwm_mb(pid)
        overlap.sample()
        # dnsmasq
        st = bench.status()
        dpids = [x['dnsmasq_pid'] for x in st['networks'] if x['dnsmasq_pid']]
        d_rss = [_lab.rss_mb(p) for p in dpids]
        d_pss = [_lab.pss_mb(p) for p in dpids]
        note = overlap.note()
        scale = '%d networks / %d ports' % (n, ports)
        target = '<= 60 MB at 200 networks / 10,000 ports'
        met_idle = idle_rss <= 60 if full else None
        met_churn = max(churn_rss, peak) <= 60 if full else None
        rows.append(_lab.row(
            'agent RSS idle, %s' % scale, round(idle_rss, 1), 'MB', target,
            met_idle, runs=[round(x, 1) for x in rss],
            notes='max VmRSS over %.0f s idle (sampled every 250 ms); '
                  'VmHWM by then %.1f MB (start-up and first rounds); all '
                  'served %.1f s after spawn; %s%s'
                  % (window, idle_peak, served_in, note,
                     '; TARGET MISSED' if met_idle is False else '')))
        rows.append(_lab.row(
            'agent RSS under churn, %s' % scale, round(churn_rss, 1), 'MB',
            target, met_churn, runs=[round(x, 1) for x in rss2],
            notes='%d changes/s for %.0f s; peak VmHWM over the whole run '
                  '%.1f MB%s' % (CHURN_RATE, window, peak,
                                 '; TARGET MISSED' if met_churn is False
                                 else '')))
        rows.append(_lab.row(
            'agent CPU idle, %s' % scale, round(100 * idle_cpu, 2),
            '% of a core', None, None,
            notes='on-CPU time of its threads (schedstat) over %.0f s; '
                  'supervise_interval 0.25 s (default)%s'
                  % (window, resync_note)))
        rows.append(_lab.row(
            'agent CPU under churn, %s' % scale, round(100 * churn_cpu, 1),
            '% of a core', None, None,
            notes='%d changes/s achieved %.0f/s, IPAM rewritten every 100 '
                  'ms; servable p50 %.1f ms, p99 %.1f ms, never servable %d '
                  '(the whole IPAM file, %d ports, is re-read and '
                  're-planned per write)'
                  % (CHURN_RATE, r['achieved'], 1000 * r['p50'],
                     1000 * r['p99'], r['lost'], ports)))
        rows.append(_lab.row(
            'dnsmasq RSS per network, %s' % scale,
            round(_lab.median(d_rss), 2), 'MB', None, None,
            runs=[round(x, 2) for x in d_rss],
            notes='median VmRSS of %d dnsmasq; PSS median %.2f MB, total '
                  'PSS %.0f MB for all networks'
                  % (len(dpids), _lab.median(d_pss), sum(d_pss))))
    finally:
        logs = ''.join(a.log() for a in bench.host.agents[:1]) \
            if bench.host is not None else ''
        left = bench.close()
        limit_note = restore_limit(original, logs)
        if rows and limit_note:
            rows[0]['notes'] += '; ' + limit_note
        if left and rows:
            rows[-1]['notes'] += '; SURVIVORS killed: %s' % left
    return rows
