"""make bench / make bench-quick: every figure, a table on stdout, JSON in
bench/results/. Run inside tests/isolated (the Makefile does).

Each figure is a module bench/figN_*.py with
    TITLE = '...'
    def run(quick: bool) -> list[dict]
returning rows {'name', 'ours', 'neutron' (or None), 'unit', 'target'
(a human string or None), 'met' (True/False/None), 'runs' (list of raw
numbers, for the spread), 'notes'}."""
import importlib
import json
import os
import pkgutil
import platform
import statistics
import sys
import time

from tests import leftovers

HERE = os.path.dirname(os.path.abspath(__file__))
# `make bench` must stay under 20 minutes on the 2-core reference machine:
# the planned share of each figure at full size (seconds), checked after
# each run (a figure far over its share is reported, not stopped)
LIMIT = 20 * 60
PLAN = {'fig1_port_change': 330, 'fig2_burst': 90, 'fig3_boot_storm': 45,
        'fig4_cold_start': 150, 'fig5_churn': 200, 'fig6_resources': 70,
        'fig7_setdhcp': 60, 'fig8_hooks': 60, 'fig9_recovery': 40,
        'fig10_metrics': 55}
# fig5's share assumes 30 s per rate; at 60 s per rate (6 rates) it takes
# ~390 s and make bench ~20.5 min


def figures(only=None):
    names = sorted(m.name for m in pkgutil.iter_modules([HERE])
                   if m.name.startswith('fig'))
    return [n for n in names if not only or any(o in n for o in only)]


def machine():
    return {'cpus': os.cpu_count(), 'python': platform.python_version(),
            'kernel': platform.release(), 'machine': platform.machine()}


def fmt(value):
    if value is None:
        return '-'
    if isinstance(value, float):
        return '%.3g' % value if abs(value) < 100 else '%.0f' % value
    return str(value)


def table(results):
    lines = ['| figure | measure | ours | Neutron | ratio ours/Neutron | '
             'unit | target | met |', '|' + ' --- |' * 8]
    for fig in results:
        for row in fig['rows']:
            ours, theirs = row.get('ours'), row.get('neutron')
            ratio = (ours / theirs if isinstance(ours, (int, float)) and
                     isinstance(theirs, (int, float)) and theirs else None)
            met = {True: 'yes', False: '**MISSED**', None: '-'}[
                row.get('met')]
            lines.append('| %s | %s | %s | %s | %s | %s | %s | %s |' % (
                fig['figure'], row['name'], fmt(ours), fmt(theirs),
                fmt(ratio), row.get('unit', ''), row.get('target') or '-',
                met))
    return '\n'.join(lines)


def markdown(doc):
    """bench/RESULTS.md from a results document."""
    m = doc['machine']
    out = ['# Benchmark results', '',
           '%s run of %s on %d CPUs, Linux %s, Python %s (%s).' % (
               'Quick' if doc['quick'] else 'Full', doc['when'], m['cpus'],
               m['kernel'], m['python'], m['machine']), '',
           'Medians of several runs; spreads and raw runs are in the JSON. '
           '"Neutron" is Neutron 29\'s own DHCP agent code (dhcp.Dnsmasq) on '
           'the same data and dnsmasq binary.', '', table(doc['figures']),
           '', '## Notes per row', '']
    for fig in doc['figures']:
        for row in fig['rows']:
            if row.get('notes'):
                out.append('- **%s / %s**: %s' % (fig['figure'], row['name'],
                                                  row['notes']))
    return '\n'.join(out) + '\n'


def main(argv):
    if argv[:1] == ['--markdown']:     # --markdown RESULTS.json > RESULTS.md
        with open(argv[1]) as f:
            print(markdown(json.load(f)), end='')
        return 0
    # what the figures start and make is marked as this run's; a SIGTERM
    # (a timeout, `kill`) raises like Ctrl-C, so every clean-up runs
    run = leftovers.Run().begin()
    leftovers.raise_on_sigterm()
    try:
        status = measure(argv)
    finally:
        left = run.finish()
        if left:
            print('\nLEFT BEHIND by this benchmark run (now removed):\n  '
                  + '\n  '.join(left), flush=True)
    return 1 if left else status


def measure(argv):
    quick = '--quick' in argv
    only = [a for a in argv if not a.startswith('--')]
    results = []
    for name in figures(only):
        module = importlib.import_module('bench.' + name)
        started = time.monotonic()
        print('== %s: %s' % (name, module.TITLE), flush=True)
        rows = module.run(quick)
        for row in rows:
            runs = row.get('runs') or []
            if len(runs) > 1:
                row.setdefault('spread', [min(runs), max(runs)])
                row.setdefault('stdev', statistics.pstdev(runs))
        results.append({'figure': name, 'title': module.TITLE, 'rows': rows,
                        'seconds': round(time.monotonic() - started, 1)})
    total = round(sum(f['seconds'] for f in results), 1)
    doc = {'when': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
           'quick': quick, 'machine': machine(), 'figures': results,
           'seconds': total}
    out = os.environ.get('VDSM_DHCP_BENCH_RESULTS',
                         os.path.join(HERE, 'results'))
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, '%s%s.json' % (
        time.strftime('%Y%m%d-%H%M%S'), '-quick' if quick else ''))
    with open(path, 'w') as f:
        json.dump(doc, f, indent=2)
    print()
    print(table(results))
    print()
    print(budget(results, quick))
    print('\nJSON: %s' % path)
    return 0


def budget(results, quick):
    """Seconds per figure against its planned share of `make bench`."""
    lines = ['time: %.0f s in all%s' % (
        sum(f['seconds'] for f in results),
        '' if quick else ' (make bench limit %d s)' % LIMIT)]
    for fig in results:
        plan = PLAN.get(fig['figure'])
        over = not quick and plan and fig['seconds'] > 1.25 * plan
        lines.append('  %-18s %6.1f s%s%s' % (
            fig['figure'], fig['seconds'],
            '' if quick or not plan else ' (plan %d s)' % plan,
            '  OVER PLAN' if over else ''))
    if not quick and sum(f['seconds'] for f in results) > LIMIT:
        lines.append('OVER THE make bench LIMIT of %d s' % LIMIT)
    return '\n'.join(lines)


if __name__ == '__main__':
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt as e:     # Ctrl-C or SIGTERM, cleaned up
        print('interrupted: %s' % (e or 'Ctrl-C'), file=sys.stderr)
        sys.exit(130)
