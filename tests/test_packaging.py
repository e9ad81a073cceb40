"""What ships: the sample config, the host install layout."""
import os
import subprocess

from tests import rig

ROOT = os.path.dirname(rig.HERE)


def test_sample_config_is_generated_from_the_options(tmp_path):
    out = tmp_path / 'sample.conf'
    subprocess.run([os.path.join(rig.BIN, 'oslo-config-generator'),
                    '--namespace', 'vdsm_dhcp', '--output-file', str(out)],
                   check=True)
    with open(os.path.join(ROOT, 'etc', 'vdsm-dhcp.conf.sample')) as f:
        assert f.read() == out.read_text(), 'run make sample-config'


def test_install_host_layout(tmp_path):
    subprocess.run(['make', '-s', '-C', ROOT, 'install-host',
                    'DESTDIR=%s' % tmp_path, 'VDSM_SITE=/usr/lib/python3/'
                    'site-packages/vdsm'], check=True, capture_output=True)
    for point in ('before_vm_start', 'before_nic_hotplug', 'after_get_caps',
                  'after_network_setup'):
        hook = tmp_path / 'usr/libexec/vdsm/hooks' / point / '50_vdsm_dhcp'
        assert os.access(hook, os.X_OK) and not hook.is_symlink()
    site = tmp_path / 'usr/lib/python3/site-packages/vdsm'
    assert (site / 'supervdsm_api/vdsm_dhcp.py').exists()
    assert (site / 'tool/vdsm_dhcp.py').exists()
    unit = (tmp_path / 'usr/lib/systemd/system/vdsm-dhcp-restore.service')
    assert 'ExecStart=/usr/bin/vdsm-dhcp restore' in unit.read_text()
    conf = tmp_path / 'etc/vdsm-dhcp/vdsm-dhcp.conf'
    assert oct(conf.stat().st_mode & 0o777) == '0o600'
