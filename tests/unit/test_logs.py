"""Structured logs: journald fields under systemd, plain lines otherwise."""
import json
import logging
import os
import shutil
import subprocess
import sys

import pytest

from tests import rig
from vdsm_dhcp import logs

ROOT = os.path.dirname(rig.HERE)
QID = '3f2a9c1b-7e0d-4c55-9d6e-0123456789ab'
SYSTEM_PYTHON = '/usr/bin/python3'


@pytest.fixture
def root_logger():
    """logs.setup() replaces the root logger's handlers: put them back."""
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    yield root
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])


def test_plain_lines_when_stderr_is_not_the_journal(capsys, root_logger):
    assert logs.setup(journal=False) == 'stderr'
    logging.getLogger('vdsm_dhcp.agent').info(
        'network %s: recovered', 'red', extra=logs.network(QID, 'red'))
    err = capsys.readouterr().err
    assert err.count('\n') == 1
    assert 'INFO vdsm_dhcp.agent: network red: recovered' in err


def test_journal_stream_must_be_stderr_itself(tmp_path, monkeypatch):
    with open(tmp_path / 'f', 'w') as f:
        st = os.fstat(f.fileno())
        env = {'JOURNAL_STREAM': '%d:%d' % (st.st_dev, st.st_ino)}
        assert logs.stderr_is_journal(env, f.fileno())
        assert not logs.stderr_is_journal(env, 0 if f.fileno() else 1)
        assert not logs.stderr_is_journal({}, f.fileno())
        assert not logs.stderr_is_journal({'JOURNAL_STREAM': 'x:y'},
                                          f.fileno())


# In a mount namespace of its own (so that no other test's view of /run
# changes): a tmpfs on /run/systemd, a datagram socket where journald's
# native socket is, then the lines of logs.setup() read off it.
JOURNAL = r'''
import json, logging, os, socket, subprocess, sys
subprocess.run(['mount', '-t', 'tmpfs', 'tmpfs', '/run/systemd'], check=True)
os.makedirs('/run/systemd/journal')
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind('/run/systemd/journal/socket')
sys.path.insert(0, sys.argv[1])
from vdsm_dhcp import logs
assert logs.setup(journal=True) == 'journal'
log = logging.getLogger('vdsm_dhcp.agent')
log.info('network %s: recovered', 'red', extra=logs.network(sys.argv[2], 'red'))
log.warning('readiness gate: %s not ready', 'fa:16:3e:00:00:01',
            extra=logs.mac('fa:16:3e:00:00:01'))
log.info('agent started')
sock.settimeout(10)
out = []
for _ in range(3):
    data = sock.recv(1 << 20)
    fields = {}
    while data:                  # the native protocol's two forms
        line, _, rest = data.partition(b'\n')
        if b'=' in line:
            key, _, value = line.partition(b'=')
            data = rest
        else:
            key, size = line, int.from_bytes(rest[:8], 'little')
            value, data = rest[8:8 + size], rest[9 + size:]
        fields[key.decode()] = value.decode()
    out.append(fields)
print(json.dumps(out))
'''


def test_journal_gets_fields_to_filter_on():
    """Through the real python-systemd (Debian's python3-systemd, for the
    system Python: building it for the venv needs libsystemd-dev, whose
    install would upgrade this machine's libsystemd0)."""
    if not os.path.exists(SYSTEM_PYTHON) or subprocess.run(
            [SYSTEM_PYTHON, '-c', 'import systemd.journal'],
            capture_output=True).returncode != 0:
        pytest.skip('python3-systemd is not installed for %s '
                    '(scripts/install-deps installs it)' % SYSTEM_PYTHON)
    if not os.path.isdir('/run/systemd') or not shutil.which('unshare'):
        pytest.skip('no /run/systemd to mount over, or no unshare')
    r = subprocess.run(['unshare', '--mount', '--propagation', 'private',
                        SYSTEM_PYTHON, '-c', JOURNAL, ROOT, QID],
                       capture_output=True, text=True, timeout=60,
                       cwd='/')
    assert r.returncode == 0, r.stderr
    recovered, gate, plain = json.loads(r.stdout)
    assert recovered['MESSAGE'] == 'network red: recovered'
    assert recovered['VDSM_DHCP_NETWORK'] == QID
    assert recovered['VDSM_DHCP_NETWORK_NAME'] == 'red'
    assert recovered['SYSLOG_IDENTIFIER'] == 'vdsm-dhcp-agent'
    assert recovered['PRIORITY'] == '6'
    assert gate['VDSM_DHCP_MAC'] == 'fa:16:3e:00:00:01'
    assert gate['PRIORITY'] == '4'
    assert 'VDSM_DHCP_NETWORK' not in plain and 'VDSM_DHCP_MAC' not in plain


def test_front_modules_stay_importable_by_the_system_python():
    """logs.py imports the standard library and python-systemd only (the
    test above runs it with the system Python)."""
    r = subprocess.run([sys.executable, '-I', '-S', '-c',
                        'import sys; sys.path.insert(0, %r); '
                        'import vdsm_dhcp.logs' % ROOT],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
