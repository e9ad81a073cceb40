"""Figure 10: what the metrics cost. The same host (N networks, P ports)
twice: metrics off (nobody asks; the counters still count), then on: the
textfile written every second and a scrape (`vdsm-dhcp metrics`, through
the control socket) every second, as a node_exporter and a Prometheus
would, only faster. Measured over the same idle window: the agent's CPU
(% of one core), its RSS, and the time one scrape takes."""
import os
import subprocess
import time

from bench import _lab

TITLE = 'Metrics: agent CPU and RSS with metrics on vs off; scrape time'


def measure(quick, metrics_on):
    n, ports = (10, 200) if quick else (50, 2500)
    window = 5.0 if quick else 20.0
    extra = {}
    bench = _lab.Bench()
    if metrics_on:
        extra = {'metrics__textfile': os.path.join(bench.root, 'vdsm.prom'),
                 'metrics__interval': 1}
        _lab.rig.write_conf(bench.host.conf_path, bench.host.base,
                            control_group='nogroup', supervise_interval=0.25,
                            **extra)
    try:
        bench.networks(n, ports // n)
        bench.listed()
        agent = bench.agent(wait=False)
        _lab.wait_until(lambda: _lab.servable(bench.status()), 300,
                        interval=0.1)
        time.sleep(1.0)     # settle after the cold start
        pid = agent.proc.pid
        cpu0, t0 = _lab.cpu_seconds(pid), time.monotonic()
        scrapes = []
        cli = os.path.join(os.path.dirname(_lab.rig.sys.executable),
                           'vdsm-dhcp')
        while time.monotonic() - t0 < window:
            if metrics_on:
                started = time.monotonic()
                bench.call('metrics')      # what `vdsm-dhcp metrics` asks
                scrapes.append(time.monotonic() - started)
            time.sleep(1.0)
        cpu = (_lab.cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
        rss = _lab.rss_mb(pid)
        size = None
        if metrics_on:
            out = subprocess.run([cli, '--config-file', bench.host.conf_path,
                                  'metrics'], capture_output=True, text=True,
                                 timeout=60, check=True).stdout
            size = len(out)
            assert os.path.exists(extra['metrics__textfile'])
        return {'cpu': 100 * cpu, 'rss': rss, 'scrapes': scrapes,
                'size': size, 'n': n, 'ports': ports}
    finally:
        left = bench.close()
        if left:
            raise RuntimeError('SURVIVORS killed: %s' % left)


def run(quick):
    off = measure(quick, False)
    on = measure(quick, True)
    label = '%d networks / %d ports' % (off['n'], off['ports'])
    scrape_ms = [1000 * s for s in on['scrapes']]
    return [
        _lab.row('agent CPU idle, metrics off, %s' % label,
                 round(off['cpu'], 2), '% core'),
        _lab.row('agent CPU idle, metrics on (textfile 1 s, scrape 1 s)',
                 round(on['cpu'], 2), '% core',
                 notes='off: %.2f %%' % off['cpu']),
        _lab.row('agent RSS, metrics off', round(off['rss'], 1), 'MB'),
        _lab.row('agent RSS, metrics on', round(on['rss'], 1), 'MB',
                 notes='off: %.1f MB' % off['rss']),
        _lab.row('one scrape (control socket)', round(
            _lab.median(scrape_ms), 1), 'ms', runs=[round(s, 1) for s in
                                                   scrape_ms],
            notes='%d bytes of exposition' % on['size']),
    ]
