"""make bench-quick runs every figure and writes valid JSON (timings are not
judged here: benchmarks are not pass/fail tests)."""
import glob
import json
import os
import subprocess
import sys

from tests import rig

ROOT = os.path.dirname(rig.HERE)
FIGURES = ['fig1_port_change', 'fig2_burst', 'fig3_boot_storm',
           'fig4_cold_start', 'fig5_churn', 'fig6_resources', 'fig7_setdhcp']


def test_quick_bench_runs_and_writes_json(tmp_path, lab):
    env = dict(os.environ, VDSM_DHCP_BENCH_RESULTS=str(tmp_path))
    env.pop('DBUS_SYSTEM_BUS_ADDRESS', None)
    r = subprocess.run([sys.executable, '-m', 'bench.run', '--quick'],
                       cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (path,) = glob.glob(str(tmp_path / '*-quick.json'))
    with open(path) as f:
        doc = json.load(f)
    assert doc['quick'] is True and doc['machine']['cpus']
    assert [f['figure'] for f in doc['figures']] == FIGURES
    for fig in doc['figures']:
        assert fig['rows'], fig['figure']
        for row in fig['rows']:
            assert row['name'] and row['unit']
            assert isinstance(row['ours'], (int, float)), row
            assert row.get('met') in (True, False, None)
    assert '| figure | measure | ours |' in r.stdout
