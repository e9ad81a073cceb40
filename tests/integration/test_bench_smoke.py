"""make bench-quick runs every figure and writes valid JSON (timings are not
judged here: benchmarks are not pass/fail tests)."""
import glob
import json
import os
import signal
import subprocess
import sys

from bench.run import figures
from tests import rig

ROOT = os.path.dirname(rig.HERE)


def test_quick_bench_runs_and_writes_json(tmp_path, lab):
    env = dict(os.environ, VDSM_DHCP_BENCH_RESULTS=str(tmp_path))
    env.pop('DBUS_SYSTEM_BUS_ADDRESS', None)
    proc = subprocess.Popen([sys.executable, '-m', 'bench.run', '--quick'],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=1200)
    except subprocess.TimeoutExpired:
        # SIGTERM first: bench.run then cleans up (a SIGKILL leaves its
        # systemd manager, dnsmasq and temp dirs behind)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        raise
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    (path,) = glob.glob(str(tmp_path / '*-quick.json'))
    with open(path) as f:
        doc = json.load(f)
    assert doc['quick'] is True and doc['machine']['cpus']
    assert [f['figure'] for f in doc['figures']] == figures()
    for fig in doc['figures']:
        assert fig['rows'], fig['figure']
        for row in fig['rows']:
            assert row['name'] and row['unit']
            assert isinstance(row['ours'], (int, float)), row
            assert row.get('met') in (True, False, None)
    assert '| figure | measure | ours |' in stdout
