"""What ships: the sample config, the host install layout."""
import configparser
import grp
import io
import os
import pwd
import re
import shutil
import subprocess
import tarfile
import tomllib

import pytest

from tests import rig
from tests.vdsm_hooks import ensure_vdsm_user

ROOT = os.path.dirname(rig.HERE)


def test_sample_config_is_generated_from_the_options(tmp_path):
    out = tmp_path / 'sample.conf'
    subprocess.run([os.path.join(rig.BIN, 'oslo-config-generator'),
                    '--namespace', 'vdsm_dhcp', '--output-file', str(out)],
                   check=True)
    with open(os.path.join(ROOT, 'etc', 'vdsm-dhcp.conf.sample')) as f:
        assert f.read() == out.read_text(), 'run make sample-config'


SITE = '/usr/lib/python3/site-packages/vdsm'


def readme_installed_files():
    """{path: (mode, owner)} from the README's installed-files table."""
    with open(os.path.join(ROOT, 'README.md')) as f:
        text = f.read()
    block = text.split('<!-- installed-files')[1].split(
        '<!-- /installed-files -->')[0]
    files = {}
    for line in block.splitlines():
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if len(cells) == 4 and cells[0].startswith('`'):
            files[cells[0].strip('`').replace('<vdsm>', SITE)] = (
                int(cells[1], 8), cells[2])
    return files


def _owner(st):
    return '%s:%s' % (pwd.getpwuid(st.st_uid).pw_name,
                      grp.getgrgid(st.st_gid).gr_name)


def install_host(destdir, *extra):
    ensure_vdsm_user()           # the kvm group the config is shared with
    return subprocess.run(['make', '-s', '-C', ROOT, 'install-host',
                           'DESTDIR=%s' % destdir] + list(extra),
                          capture_output=True, text=True)


def test_install_host_lays_out_what_the_readme_says(tmp_path):
    r = install_host(tmp_path, 'VDSM_SITE=' + SITE)
    assert r.returncode == 0, r.stderr
    documented = readme_installed_files()
    assert len(documented) >= 13
    installed = {}
    for dirpath, dirnames, filenames in os.walk(tmp_path):
        for name in filenames:
            path = os.path.join(dirpath, name)
            installed['/' + os.path.relpath(path, tmp_path)] = path
    documented_files = {p for p in documented
                        if not os.path.isdir(str(tmp_path) + p)}
    assert set(installed) == documented_files
    for path, (mode, owner) in documented.items():
        st = os.stat(str(tmp_path) + path)
        assert (oct(st.st_mode & 0o7777), _owner(st)) == (oct(mode), owner), \
            path
    for point in ('before_vm_start', 'before_nic_hotplug', 'after_get_caps',
                  'after_network_setup'):
        hook = tmp_path / 'usr/libexec/vdsm/hooks' / point / '50_vdsm_dhcp'
        assert not hook.is_symlink()
        assert hook.read_text().startswith('#!/usr/bin/python3\n')
    unit = (tmp_path / 'usr/lib/systemd/system/vdsm-dhcp-restore.service')
    assert 'ExecStart=/usr/bin/vdsm-dhcp restore' in unit.read_text()
    secrets = (tmp_path / 'etc/vdsm-dhcp/secrets.conf').read_text()
    main = (tmp_path / 'etc/vdsm-dhcp/vdsm-dhcp.conf').read_text()
    assert '[neutron]' in secrets and 'password' in secrets
    assert '\npassword' not in main and '\n#password' not in main


def sysctl_settings(text):
    """{key: value} of a sysctl.d(5) file (read here, never applied: the
    settings are host-wide)."""
    settings = {}
    for line in text.splitlines():
        line = line.strip()
        if line and line[0] not in '#;':
            key, _, value = line.partition('=')
            settings[key.strip().replace('/', '.')] = value.strip()
    return settings


def test_install_host_ships_the_inotify_limit_the_agent_raises_to(tmp_path):
    """Boot (the sysctl.d file) and the agent at start agree: a host with
    many networks never depends on which one came first."""
    from vdsm_dhcp.agent import lifecycle
    assert install_host(tmp_path, 'VDSM_SITE=' + SITE).returncode == 0
    shipped = tmp_path / 'usr/lib/sysctl.d/60-vdsm-dhcp.conf'
    assert sysctl_settings(shipped.read_text()) == {
        'fs.inotify.max_user_instances': str(lifecycle.INOTIFY_RAISE_TO)}
    assert lifecycle.INOTIFY_LIMIT == \
        '/proc/sys/fs/inotify/max_user_instances'
    # 200 networks fit under it with the host's share: no raise needed
    assert lifecycle.inotify_target(200, lifecycle.INOTIFY_RAISE_TO) is None


def test_install_host_keeps_an_admins_config(tmp_path):
    conf = tmp_path / 'etc/vdsm-dhcp'
    conf.mkdir(parents=True)
    (conf / 'vdsm-dhcp.conf').write_text('[hooks]\nstrict = true\n')
    (conf / 'secrets.conf').write_text('[neutron]\npassword = mine\n')
    assert install_host(tmp_path, 'VDSM_SITE=' + SITE).returncode == 0
    assert (conf / 'vdsm-dhcp.conf').read_text() == '[hooks]\nstrict = true\n'
    assert (conf / 'secrets.conf').read_text() == '[neutron]\npassword = mine\n'


def test_install_host_needs_vdsm(tmp_path):
    """No importable vdsm and no VDSM_SITE: a clear error, nothing
    installed (not /usr/local/... where VDSM never looks)."""
    r = install_host(tmp_path, 'VDSM_PYTHON=/usr/bin/python3')
    assert r.returncode != 0
    assert 'cannot import vdsm' in r.stderr and 'VDSM_SITE' in r.stderr
    assert not any(tmp_path.iterdir())


def test_install_host_finds_vdsm_where_vdsm_python_has_it(tmp_path):
    site = tmp_path / 'site-packages'
    (site / 'vdsm').mkdir(parents=True)
    (site / 'vdsm' / '__init__.py').write_text('')
    python = tmp_path / 'vdsm-python'
    python.write_text('#!/bin/sh\nPYTHONPATH=%s exec /usr/bin/python3 "$@"\n'
                      % site)
    python.chmod(0o755)
    dest = tmp_path / 'dest'
    r = install_host(dest, 'VDSM_PYTHON=%s' % python)
    assert r.returncode == 0, r.stderr
    assert (dest / str(site / 'vdsm/supervdsm_api/vdsm_dhcp.py')
            .lstrip('/')).exists()


# --- the RPM (make rpm) --------------------------------------------------------

EL9_SITELIB = '/usr/lib/python3.9/site-packages'
HOOK_POINTS = ('before_vm_start', 'before_nic_hotplug', 'after_get_caps',
               'after_network_setup')
# pyproject.toml's dependencies (names normalized as pip does) under their
# EL package names.
EL_PACKAGES = {'dbus-python': 'python3-dbus', 'pyudev': 'python3-pyudev',
               'netaddr': 'python3-netaddr',
               'oslo-config': 'python3-oslo-config',
               'pyroute2': 'python3-pyroute2',
               'keystoneauth1': 'python3-keystoneauth1',
               'oslo-messaging': 'python3-oslo-messaging',
               'prometheus-client': 'python3-prometheus_client'}


def pyproject():
    with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
        return tomllib.load(f)


@pytest.fixture(scope='module')
def rpm_package(tmp_path_factory):
    if not shutil.which('rpmbuild'):
        pytest.skip('no rpmbuild (scripts/install-deps installs it)')
    topdir = tmp_path_factory.mktemp('rpm')
    r = subprocess.run(['make', '-s', '-C', ROOT, 'rpm',
                        'RPM_TOPDIR=%s' % topdir],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    [package] = (topdir / 'RPMS' / 'noarch').glob('vdsm-dhcp-*.noarch.rpm')
    return str(package)


def rpm_query(package, *args):
    return subprocess.run(['rpm', '-qp', *args, package], check=True,
                          capture_output=True, text=True).stdout


def rpm_dump(package):
    """{path: (mode, owner, is_config)} from rpm --dump."""
    files = {}
    for line in rpm_query(package, '--dump').splitlines():
        # path size mtime digest mode owner group isconfig isdoc rdev symlink
        fields = line.split(' ')
        path, mode, owner, group, config = (fields[0], fields[4], fields[5],
                                            fields[6], fields[7])
        files[path] = (int(mode, 8) & 0o7777, '%s:%s' % (owner, group),
                       config == '1')
    return files


def rpm_payload(package):
    """{path: bytes} of the package's regular files."""
    archive = subprocess.run(['rpm2archive', '-'], stdin=open(package, 'rb'),
                             check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {m.name[1:]: tar.extractfile(m).read()
                for m in tar.getmembers() if m.isfile()}


def test_rpm_lays_out_what_the_readme_says(rpm_package):
    files = rpm_dump(rpm_package)
    assert set(rpm_query(rpm_package, '-l').split()) == set(files)
    documented = readme_installed_files()
    assert len(documented) >= 13
    for path, (mode, owner) in documented.items():
        path = path.replace(SITE, EL9_SITELIB + '/vdsm')
        assert files[path][:2] == (mode, owner), path
    for point in HOOK_POINTS:
        hook = '/usr/libexec/vdsm/hooks/%s/50_vdsm_dhcp' % point
        assert files[hook][:2] == (0o755, 'root:root')
    assert files['/etc/vdsm-dhcp'][:2] == (0o750, 'root:kvm')
    assert files['/etc/vdsm-dhcp/vdsm-dhcp.conf'] == (0o640, 'root:kvm', True)
    assert files['/etc/vdsm-dhcp/secrets.conf'] == (0o600, 'root:root', True)
    for path in ('/usr/bin/vdsm-dhcp', '/usr/bin/vdsm-dhcp-agent'):
        assert files[path][:2] == (0o755, 'root:root')
    # Every module of the package, where EL 9's python3 imports from.
    for package in pyproject()['tool']['setuptools']['packages']:
        source = os.path.join(ROOT, *package.split('.'))
        for name in os.listdir(source):
            if name.endswith('.py'):
                path = '%s/%s/%s' % (EL9_SITELIB, package.replace('.', '/'),
                                     name)
                assert files[path][:2] == (0o644, 'root:root'), path


def test_rpm_config_files_are_kept_on_upgrade(rpm_package):
    assert set(rpm_query(rpm_package, '--configfiles').split()) == {
        '/etc/vdsm-dhcp/vdsm-dhcp.conf', '/etc/vdsm-dhcp/secrets.conf'}
    flags = dict(line.split(' ', 1) for line in rpm_query(
        rpm_package, '--qf', '[%{FILENAMES} %{FILEFLAGS:fflags}\n]'
    ).splitlines())
    # c = %config, n = noreplace: an admin's edits survive an upgrade
    assert flags['/etc/vdsm-dhcp/vdsm-dhcp.conf'] == 'cn'
    assert flags['/etc/vdsm-dhcp/secrets.conf'] == 'cn'


def test_rpm_requires_vdsm_dnsmasq_and_the_python_dependencies(rpm_package):
    requires = {line.split()[0] for line in
                rpm_query(rpm_package, '--requires').splitlines()}
    assert {'vdsm', 'dnsmasq', 'nftables'} <= requires
    for dependency in pyproject()['project']['dependencies']:
        name = re.sub(r'[-_.]+', '-', re.split(r'[<>=!~ ;\[]', dependency,
                                               1)[0]).lower()
        assert name in EL_PACKAGES, 'name %s in EL_PACKAGES' % name
        assert EL_PACKAGES[name] in requires, dependency


def test_rpm_files_match_the_sources(rpm_package):
    payload = rpm_payload(rpm_package)

    def source(path):
        with open(os.path.join(ROOT, path), 'rb') as f:
            return f.read()

    hook = source('hooks/50_vdsm_dhcp')
    for point in HOOK_POINTS:
        installed = payload['/usr/libexec/vdsm/hooks/%s/50_vdsm_dhcp' % point]
        assert installed.split(b'\n', 1) == [b'#!/usr/bin/python3',
                                             hook.split(b'\n', 1)[1]]
    vdsm = EL9_SITELIB + '/vdsm'
    assert payload[vdsm + '/supervdsm_api/vdsm_dhcp.py'] == source(
        'vdsm_dhcp/vdsm/supervdsm_api.py')
    assert payload[vdsm + '/tool/vdsm_dhcp.py'] == source(
        'vdsm_dhcp/vdsm/vdsm_tool.py')
    # every module of every package, as it is in the tree
    for base, dirs, files in os.walk(os.path.join(ROOT, 'vdsm_dhcp')):
        dirs[:] = [d for d in dirs if d != '__pycache__']
        for name in files:
            if name.endswith('.py'):
                path = os.path.relpath(os.path.join(base, name), ROOT)
                assert payload.get(EL9_SITELIB + '/' + path) == \
                    source(path), path
    assert payload['/usr/lib/systemd/system/vdsm-dhcp-restore.service'] == \
        source('systemd/vdsm-dhcp-restore.service')
    assert payload['/usr/lib/tmpfiles.d/vdsm-dhcp.conf'] == source(
        'systemd/vdsm-dhcp.tmpfiles')
    assert payload['/usr/lib/sysctl.d/60-vdsm-dhcp.conf'] == source(
        'systemd/vdsm-dhcp.sysctl')
    assert payload['/etc/vdsm-dhcp/vdsm-dhcp.conf'] == source(
        'etc/vdsm-dhcp.conf')
    assert payload['/etc/vdsm-dhcp/secrets.conf'] == source(
        'etc/secrets.conf')

    # The commands and entry points are those pyproject.toml declares.
    project = pyproject()['project']
    version = project['version']
    entry_points = configparser.ConfigParser(delimiters=('=',))
    entry_points.read_string(payload[
        '%s/vdsm_dhcp-%s.dist-info/entry_points.txt' % (EL9_SITELIB, version)
    ].decode())
    assert dict(entry_points['console_scripts']) == project['scripts']
    assert dict(entry_points['oslo.config.opts']) == project['entry-points'][
        'oslo.config.opts']
    for command, target in project['scripts'].items():
        module, function = target.split(':')
        script = payload['/usr/bin/' + command].decode()
        assert script.startswith('#!/usr/bin/python3\n')
        assert 'from %s import %s\n' % (module, function) in script


def test_rpm_scriptlets_manage_the_restore_unit(rpm_package):
    scripts = rpm_query(rpm_package, '--scripts')
    post = scripts.split('postinstall scriptlet')[1].split('scriptlet')[0]
    preun = scripts.split('preuninstall scriptlet')[1].split('scriptlet')[0]
    assert 'vdsm-dhcp-restore.service' in post
    assert 'vdsm-dhcp-restore.service' in preun
    # the inotify limit applies on install, not only at the next boot
    assert 'systemd-sysctl 60-vdsm-dhcp.conf' in post
    postun = scripts.split('postuninstall scriptlet')[1]
    assert 'vdsm-dhcp-agent.service' in postun   # restarted on upgrade
    # %post presets the unit; the preset enables it (EL's default: disable)
    preset = rpm_payload(rpm_package)[
        '/usr/lib/systemd/system-preset/85-vdsm-dhcp.preset'].decode()
    assert 'enable vdsm-dhcp-restore.service' in preset.splitlines()
