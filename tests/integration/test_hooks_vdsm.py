"""The installed hooks, run as VDSM runs them, must never fail a VM start,
a hot-plug, the caps or a setupNetworks by accident.

Installed by `make install-host DESTDIR=...`, run by tests/vdsm_hooks.py
(VDSM's _runHooksDir, stood in for): as vdsm:kvm for the VM hooks, with
VDSM's environment, $_hook_domxml / $_hook_json, the VM's custom
properties, and VDSM's rule that any non-zero exit fails the operation.
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading

import pytest

from tests import rig
from tests.vdsm_hooks import install_hooks, run_hooks_dir

ROOT = os.path.dirname(rig.HERE)
VM_ID = 'c0ffee00-0000-4000-8000-000000000001'
DOMXML = '''<domain type='kvm'><name>vm1</name><devices>
%s
<disk type='file' device='disk'><source file='/dev/null'/></disk>
</devices></domain>'''
NIC = '''<interface type='bridge'><mac address='%s'/><source bridge='%s'/>
<model type='virtio'/></interface>'''
# the packages' __init__ modules are docstrings only
LEAN = {'vdsm_dhcp', 'vdsm_dhcp.front', 'vdsm_dhcp.front.hooks',
        'vdsm_dhcp.client', 'vdsm_dhcp.settings', 'vdsm_dhcp.setdhcp',
        'vdsm_dhcp.setdhcp.networks_file', 'vdsm_dhcp.errors',
        'vdsm_dhcp.fileutil'}


@pytest.fixture(scope='module')
def hookdir():
    base = tempfile.mkdtemp(prefix='vdsm-dhcp-hooks-')
    os.chmod(base, 0o755)
    try:
        yield install_hooks(ROOT, os.path.join(base, 'root'), sys.executable)
    finally:
        subprocess.run(['rm', '-rf', '--one-file-system', base], check=True)


@pytest.fixture
def site(tmp_path):
    """A host's config and networks file, readable as vdsm:kvm would need
    (pytest's tmp dirs are 0700)."""
    base = tempfile.mkdtemp(prefix='vdsm-dhcp-hooks-')
    os.chmod(base, 0o755)
    conf = rig.write_conf(os.path.join(base, 'vdsm-dhcp.conf'), base,
                          hooks__wait_timeout=2)
    os.makedirs(os.path.join(base, 'run'), mode=0o755)
    yield type('Site', (), {'base': base, 'conf': conf,
                            'env': {'VDSM_DHCP_CONFIG': conf}})
    subprocess.run(['rm', '-rf', '--one-file-system', base], check=True)


def listed(site, *names):
    rig.write_networks(site.base, [(n, rig.new_id()) for n in names])


def vm_start(hookdir, site, xml, **custom):
    return run_hooks_dir(hookdir, 'before_vm_start', xml, custom=custom,
                         vm_id=VM_ID, env=site.env)


def test_installed_hooks_are_what_vdsm_runs(hookdir):
    for point in ('before_vm_start', 'before_nic_hotplug', 'after_get_caps',
                  'after_network_setup'):
        hook = os.path.join(hookdir, point, '50_vdsm_dhcp')
        assert os.access(hook, os.X_OK) and not os.path.islink(hook)
        with open(hook) as f:
            assert f.readline() == '#!%s\n' % sys.executable


def test_nothing_listed_vm_starts_silently(hookdir, site):
    xml = DOMXML % (NIC % (rig.mac(1), 'red'))
    r = vm_start(hookdir, site, xml)
    assert r.error is None and r.rc == 0 and r.stderr == ''
    assert r.data == xml      # never modifies the XML
    listed(site, 'blue')      # the VM is only on an unlisted bridge
    r = vm_start(hookdir, site, xml)
    assert r.error is None and r.stderr == '' and r.data == xml


def test_listed_network_agent_down_proceeds_or_strict_refuses(hookdir,
                                                               site):
    listed(site, 'red')
    xml = DOMXML % (NIC % (rig.mac(2), 'red'))
    r = vm_start(hookdir, site, xml, dhcp_wait_timeout='1')
    assert r.error is None and r.rc == 0
    assert 'WARNING' in r.stderr and 'agent is not running' in r.stderr
    assert VM_ID in r.stderr and rig.mac(2) in r.stderr
    assert r.elapsed < 60      # a hang bound; bench/ measures the time
    r = vm_start(hookdir, site, xml, dhcp_wait_timeout='1',
                 dhcp_wait_strict='true')
    assert r.rc == 2 and isinstance(r.error, Exception)
    assert 'refused' in r.stderr
    # the host-wide strict setting, and the VM's override of it
    rig.write_conf(site.conf, site.base, hooks__wait_timeout=1,
                   hooks__strict='true')
    assert vm_start(hookdir, site, xml).rc == 2
    r = vm_start(hookdir, site, xml, dhcp_wait_strict='false')
    assert r.error is None and r.rc == 0
    r = run_hooks_dir(hookdir, 'before_nic_hotplug', NIC % (rig.mac(2), 'red'),
                      vm_id=VM_ID, env=site.env,
                      custom={'dhcp_wait_strict': 'false'})
    assert r.error is None and r.rc == 0 and 'hot-plug' in r.stderr


def test_unreadable_config_falls_back_to_defaults(hookdir, site):
    listed(site, 'red')
    os.chmod(site.conf, 0o600)          # root's, as the old install did
    r = vm_start(hookdir, site, DOMXML % (NIC % (rig.mac(3), 'red')))
    assert r.error is None and r.rc == 0
    assert 'cannot read %s' % site.conf in r.stderr
    # even when strict: the strict setting itself could not be read
    r = vm_start(hookdir, site, DOMXML % (NIC % (rig.mac(3), 'red')),
                 dhcp_wait_timeout='0.5')
    assert r.error is None


@pytest.mark.parametrize('content', [
    'not a config at all\n[[[',
    '[hooks]\nwait_timeout = soon\nstrict = perhaps\n',
    '[DEFAULT]\nnetworks_file = /nonexistent/dir/networks.json\n',
    '\xff\xfe binary',
])
def test_broken_config_never_fails_a_vm(hookdir, site, content):
    listed(site, 'red')
    with open(site.conf, 'w', encoding='latin-1') as f:
        f.write(content)
    r = vm_start(hookdir, site, DOMXML % (NIC % (rig.mac(4), 'red')),
                 dhcp_wait_timeout='0.5')
    assert r.error is None and r.rc == 0


def test_corrupt_networks_file_never_fails_a_vm(hookdir, site):
    with open(os.path.join(site.base, 'networks.json'), 'w') as f:
        f.write('{"version": 1, "networks": [{"name": ')
    r = vm_start(hookdir, site, DOMXML % (NIC % (rig.mac(5), 'red')))
    assert r.error is None and r.rc == 0
    assert 'without a DHCP check' in r.stderr


@pytest.mark.parametrize('xml', ['<domain><devices><interface',
                                 '', '\x00\x01 not xml'])
def test_garbage_xml_never_fails_a_vm(hookdir, site, xml):
    listed(site, 'red')
    r = vm_start(hookdir, site, xml)
    assert r.error is None and r.rc == 0
    assert 'cannot read its XML' in r.stderr
    assert r.data == xml


class GarbageAgent:
    """Listens where the agent would and answers each request with
    `reply` (bytes; b'' closes without answering)."""

    def __init__(self, run_dir, reply):
        self.path = os.path.join(run_dir, 'agent.sock')
        self.reply = reply
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(self.path)
        os.chmod(self.path, 0o666)
        self.sock.listen(16)
        self.requests = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    conn.recv(65536)
                    self.requests += 1
                    conn.sendall(self.reply)
                except OSError:
                    pass

    def close(self):
        self.sock.close()
        os.unlink(self.path)


@pytest.mark.parametrize('reply', [
    b'not json\n', b'[1, 2]\n', b'{"ok": true, "result": 5}\n',
    b'{"ok": true, "result": {"not_ready": [1]}}\n', b'{"ok": "yes"}\n',
    b'{"ok": false}\n', b'{"ok": false, "error": "no such command"}\n',
    b'[' * 100000 + b'\n', b''])
def test_agent_answering_garbage_never_fails_a_vm(hookdir, site, reply):
    listed(site, 'red')
    agent = GarbageAgent(os.path.join(site.base, 'run'), reply)
    try:
        xml = DOMXML % (NIC % (rig.mac(6), 'red'))
        r = vm_start(hookdir, site, xml, dhcp_wait_timeout='1')
        assert agent.requests >= 1
        assert r.error is None and r.rc == 0, r.stderr
        assert 'WARNING' in r.stderr and rig.mac(6) in r.stderr
        # strict: what the agent said is not a confirmation
        r = vm_start(hookdir, site, xml, dhcp_wait_timeout='1',
                     dhcp_wait_strict='true')
        assert r.rc == 2
    finally:
        agent.close()


def test_refusal_is_not_retried(hookdir, site):
    """An agent that answers "no" is asked once, not 20 times a second
    until the VM's timeout runs out."""
    listed(site, 'red')
    agent = GarbageAgent(os.path.join(site.base, 'run'),
                         b'{"ok": false, "error": "timeout too long"}\n')
    try:
        r = vm_start(hookdir, site, DOMXML % (NIC % (rig.mac(7), 'red')),
                     dhcp_wait_timeout='30')
        assert r.error is None and 'timeout too long' in r.stderr
        assert agent.requests == 1
    finally:
        agent.close()


def test_hook_without_vdsm_dhcp_installed_lets_the_vm_start(tmp_path, site):
    """The hooks installed for a Python that lacks the package (removed,
    or a broken dependency) still exit 0."""
    python = '/usr/bin/python3'
    check = subprocess.run([python, '-c', 'import vdsm_dhcp'], cwd='/',
                           capture_output=True)
    if check.returncode == 0:
        pytest.skip('%s has vdsm_dhcp: nothing to prove' % python)
    base = tempfile.mkdtemp(prefix='vdsm-dhcp-hooks-')
    os.chmod(base, 0o755)
    try:
        hookdir = install_hooks(ROOT, os.path.join(base, 'root'), python)
        listed(site, 'red')
        r = vm_start(hookdir, site, DOMXML % (NIC % (rig.mac(8), 'red')))
        assert r.error is None and r.rc == 0
        assert 'cannot import vdsm_dhcp' in r.stderr
        caps = run_hooks_dir(hookdir, 'after_get_caps', {'a': 1},
                             env=site.env)
        assert caps.data == {'a': 1} and caps.rc == 0
    finally:
        subprocess.run(['rm', '-rf', '--one-file-system', base], check=True)


@pytest.mark.parametrize('networks', ['{"broken', None])
def test_after_get_caps_never_fails_caps(hookdir, site, networks):
    if networks is None:
        listed(site, 'red')        # listed, agent down: reported as such
    else:
        with open(os.path.join(site.base, 'networks.json'), 'w') as f:
            f.write(networks)
    caps = {'kvmEnabled': 'true', 'networks': {'red': {'bridged': True}}}
    r = run_hooks_dir(hookdir, 'after_get_caps', caps, env=site.env)
    assert r.rc == 0, r.stderr
    assert {k: r.data[k] for k in caps} == caps
    if networks is None:
        assert r.data['dhcp']['agent'] == 'not answering'
        assert r.data['dhcp']['networks']['red']['served'] is False


def test_after_get_caps_leaves_unreadable_caps_untouched(hookdir, site):
    for bad in ('[1, 2]', '"a string"'):
        fd, path = tempfile.mkstemp()
        os.write(fd, bad.encode())
        os.close(fd)
        os.chmod(path, 0o666)
        env = dict(site.env, _hook_json=path, PATH='/usr/bin')
        p = subprocess.run([os.path.join(hookdir, 'after_get_caps',
                                         '50_vdsm_dhcp')], env=env,
                           capture_output=True, text=True, timeout=60)
        with open(path) as f:
            assert f.read() == bad
        os.unlink(path)
        assert p.returncode == 0 and 'left as they are' in p.stderr


def test_after_network_setup_never_fails_setup_networks(hookdir, site):
    listed(site, 'red')     # the agent is down: nothing to tell, exit 0
    request = {'request': {'networks': {'red': {'bridged': True}},
                           'bondings': {}, 'options': {}}}
    r = run_hooks_dir(hookdir, 'after_network_setup', request, env=site.env)
    assert r.rc == 0 and r.data == request
    assert 'not told to resync' in r.stderr


IMPORTS = r'''
import atexit, json, os, runpy, sys
def dump():
    with open(os.environ['MODULES_OUT'], 'w') as f:
        json.dump(sorted(sys.modules), f)
atexit.register(dump)
sys.argv = [sys.argv[1]] + sys.argv[2:]
runpy.run_path(sys.argv[0], run_name='__main__')
'''


def _loaded(argv, env):
    fd, out = tempfile.mkstemp()
    os.close(fd)
    try:
        subprocess.run([sys.executable, '-c', IMPORTS] + argv,
                       env=dict(env, MODULES_OUT=out), capture_output=True,
                       timeout=60, cwd='/')
        with open(out) as f:
            modules = json.load(f)
    finally:
        os.unlink(out)
    return {m for m in modules if m.split('.')[0] not in
            sys.stdlib_module_names and m != '__main__'} - _site_baseline()


def _site_baseline(cache=[]):
    """What the interpreter's site machinery loads for any program (.pth
    files: the editable install's finder, setuptools' hook ...)."""
    if not cache:
        fd, out = tempfile.mkstemp()
        os.close(fd)
        try:
            subprocess.run([sys.executable, '-c', 'import atexit, json, '
                            'sys; json.dump(sorted(sys.modules), open(%r, '
                            '"w"))' % out], check=True, timeout=60, cwd='/')
            with open(out) as f:
                cache.append(set(json.load(f)) - {'__main__'})
        finally:
            os.unlink(out)
    return cache[0]


def test_hook_imports_only_the_standard_library_and_lean_modules(hookdir,
                                                                 site):
    listed(site, 'red')
    fd, xml = tempfile.mkstemp()
    os.write(fd, (DOMXML % (NIC % (rig.mac(9), 'red'))).encode())
    os.close(fd)
    env = dict(site.env, _hook_domxml=xml, PATH='/usr/bin',
               dhcp_wait_timeout='0.3')
    try:
        loaded = _loaded([os.path.join(hookdir, 'before_vm_start',
                                       '50_vdsm_dhcp')], env)
    finally:
        os.unlink(xml)
    assert 'vdsm_dhcp.front.hooks' in loaded   # it ran the gate
    assert loaded <= LEAN, loaded - LEAN


@pytest.mark.parametrize('argv', [['list'], ['why', 'fa:16:3e:00:00:01'],
                                  ['wait', '--timeout', '0',
                                   'fa:16:3e:00:00:01'], ['sync'],
                                  ['hosts', 'red'], ['leases', 'red']])
def test_query_commands_import_nothing_heavy(site, argv):
    listed(site, 'red')
    cli = os.path.join(rig.BIN, 'vdsm-dhcp')
    loaded = _loaded([cli] + argv, dict(os.environ, **site.env))
    assert 'vdsm_dhcp.front.cli' in loaded
    assert loaded <= LEAN | {'vdsm_dhcp.front.cli'}, loaded - LEAN
