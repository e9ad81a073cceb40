"""Figure 8: what the VDSM hooks and the CLI's query commands cost.

A hook is a new process for every VM start, run by VDSM as vdsm:kvm; an
operator scripts `vdsm-dhcp why/list/...`. Measured: the wall time of the
installed before_vm_start hook (make install-host, run by tests/
vdsm_hooks.py exactly as VDSM runs it), for a VM only on unlisted bridges
and for a VM whose MACs dnsmasq has already loaded; and of the CLI's query
commands, as root. Each side by side with the code before the lean hook
(commit BEFORE, extracted from git into a temp dir and run with the same
interpreter), and with `python -c pass` for what the interpreter alone
costs on this machine.
"""
import os
import subprocess
import sys
import tempfile
import time

from bench import _lab
from tests.vdsm_hooks import install_hooks, run_hooks_dir

TITLE = 'VDSM hooks and CLI queries: wall time per call'
BEFORE = '1b83eca'      # the last commit with the oslo-loading hook
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOMXML = ("<domain type='kvm'><devices>%s</devices></domain>")
NIC = ("<interface type='bridge'><mac address='%s'/><source bridge='%s'/>"
       "</interface>")


def _old_tree(base):
    """The package and hook as they were at BEFORE, or None if git cannot
    give them (a tarball without history)."""
    old = os.path.join(base, 'old')
    os.makedirs(old)
    archive = subprocess.run(['git', '-C', ROOT, 'archive', BEFORE,
                              'vdsm_dhcp', 'hooks'], capture_output=True)
    if archive.returncode != 0:
        return None
    subprocess.run(['tar', '-x', '-C', old], input=archive.stdout,
                   check=True)
    for dirpath, dirnames, filenames in os.walk(old):
        os.chmod(dirpath, 0o755)
    return old


def _times(call, n):
    times = []
    for _ in range(n):
        started = time.monotonic()
        call()
        times.append(time.monotonic() - started)
    return times


def _ms(values):
    return round(1000 * _lab.median(values), 1)


def _spread(values):
    return '%.0f-%.0f ms' % (1000 * min(values), 1000 * max(values))


def run(quick):
    n = 10 if quick else 40
    bench = _lab.Bench(control_group='kvm', hooks__wait_timeout=30)
    base = tempfile.mkdtemp(prefix='vdsm-dhcp-bench-hooks-')
    os.chmod(base, 0o755)
    rows = []
    try:
        (name, net, sub, prefix), = bench.networks(1, 5)
        bench.listed()
        bench.agent()
        _lab.wait_until(lambda: _lab.servable(bench.status()), 60)
        loaded_mac = next(p['mac_address'] for p in bench.ipam.ports
                          if p['device_owner'].startswith('compute:'))
        _lab.wait_until(lambda: not bench.call('wait', {
            'macs': [loaded_mac], 'timeout': 5})['not_ready'], 30)
        new = install_hooks(ROOT, os.path.join(base, 'new'), sys.executable)
        # as the RPM installs it: the system's python3, no venv, no .pth
        # files (the editable install's finder alone costs ~10 ms)
        system = '/usr/bin/python3'
        rpm_like = None
        if subprocess.run([system, '-c', 'import sys; sys.exit(sys.version_'
                           'info < (3, 9))']).returncode == 0:
            rpm_like = install_hooks(ROOT, os.path.join(base, 'sys'),
                                     system)
        old_tree = _old_tree(base)
        env = {'VDSM_DHCP_CONFIG': bench.host.conf_path}
        cases = [('VM only on unlisted bridges', NIC % (loaded_mac, 'nope'),
                  40), ('VM on a listed network, MAC already loaded',
                        NIC % (loaded_mac, name), 60)]
        baseline = _times(lambda: subprocess.run(
            [sys.executable, '-c', 'pass'], check=True), n)
        for label, nic, target in cases:
            xml = DOMXML % nic

            def hook_with(hookdir, extra_env):
                r = run_hooks_dir(hookdir, 'before_vm_start', xml,
                                  env=dict(env, **extra_env))
                assert r.error is None, r.stderr
                return r.runs[0][3]
            ours = [hook_with(new, {}) for _ in range(n)]
            system_times = [hook_with(rpm_like, {'PYTHONPATH': ROOT})
                            for _ in range(n)] if rpm_like else []
            old = []
            if old_tree:
                old_hooks = os.path.join(old_tree, 'hooks')
                old = [hook_with(old_hooks, {'PYTHONPATH': old_tree,
                                             'PATH': os.path.dirname(
                                                 sys.executable) + ':'
                                             + '/usr/sbin:/usr/bin'})
                       for _ in range(n)]
            rows.append(_lab.row(
                'before_vm_start hook: %s' % label, _ms(ours), 'ms',
                '<= %d ms' % target, _lab.median(ours) * 1000 <= target,
                runs=[round(1000 * t, 1) for t in ours],
                notes='venv python (editable install); spread %s; before '
                '(%s): %s; python -c pass: %s ms' % (
                    _spread(ours), BEFORE, '%s ms, spread %s' % (
                        _ms(old), _spread(old)) if old else 'not run',
                    _ms(baseline))))
            if system_times:
                rows.append(_lab.row(
                    'before_vm_start hook: %s, system python3' % label,
                    _ms(system_times), 'ms', '<= %d ms' % target,
                    _lab.median(system_times) * 1000 <= target,
                    runs=[round(1000 * t, 1) for t in system_times],
                    notes='/usr/bin/python3 with the package on its path, '
                    'as the RPM installs it; spread %s'
                    % _spread(system_times)))
        cli = os.path.join(os.path.dirname(sys.executable), 'vdsm-dhcp')
        cli_env = dict(os.environ, **env)
        for argv in (['list'], ['why', loaded_mac], ['hosts', name]):
            ours = _times(lambda: subprocess.run(
                [cli] + argv, env=cli_env, check=True,
                capture_output=True), n)
            old = []
            if old_tree:
                old = _times(lambda: subprocess.run(
                    [sys.executable, '-m', 'vdsm_dhcp.front.cli'] + argv,
                    env=dict(cli_env, PYTHONPATH=old_tree), check=True,
                    capture_output=True, cwd=base), n)
            rows.append(_lab.row(
                'vdsm-dhcp %s' % argv[0], _ms(ours), 'ms', '<= 100 ms',
                _lab.median(ours) * 1000 <= 100,
                runs=[round(1000 * t, 1) for t in ours],
                notes='spread %s; before (%s): %s' % (
                    _spread(ours), BEFORE, '%s ms' % _ms(old) if old
                    else 'not run')))
    finally:
        subprocess.run(['rm', '-rf', '--one-file-system', base])
        left = bench.close()
        if left and rows:
            rows[-1]['notes'] += '; SURVIVORS killed: %s' % left
    return rows
