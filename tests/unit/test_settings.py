"""settings.py (what the hooks read, standard library only) agrees with
oslo.config (what the agent reads) on every option they share; the
credentials live in a root-only file that only oslo's readers see."""
import os

import pytest

from vdsm_dhcp import options
from vdsm_dhcp import settings

SHARED = [('networks_file', lambda c: c.networks_file),
          ('state_dir', lambda c: c.state_dir),
          ('run_dir', lambda c: c.run_dir),
          ('agent_unit', lambda c: c.agent_unit),
          ('wait_timeout', lambda c: c.hooks.wait_timeout),
          ('strict', lambda c: c.hooks.strict)]

CASES = [
    '',
    '[DEFAULT]\nnetworks_file = /srv/n.json\nrun_dir = /srv/run\n',
    '[DEFAULT]\nnetworks_file = "/srv/quoted.json"\nrun_dir=\'/srv/r\'\n',
    '[DEFAULT]\nrun_dir = /a\nrun_dir = /b\n',                 # last wins
    '[DEFAULT]\nstate_dir = /srv/state\nrun_dir = $state_dir/run\n',
    '[DEFAULT]\nstate_dir = /srv/s\nrun_dir = ${state_dir}/r\n',
    '# a comment\n; another\n[hooks]\nwait_timeout = 2.5\nstrict = True\n',
    '[hooks]\nstrict = on\n', '[hooks]\nstrict = 1\n',
    '[hooks]\nstrict = no\n', '[hooks]\nstrict = OFF\n',
    '[hooks]\nwait_timeout = 0\n',
    '[DEFAULT]\nagent_unit = other.service\n[neutron]\nauth_type = none\n',
    '[hooks]\nwait_timeout = 7\n[hooks]\nstrict = yes\n',     # reopened
]


@pytest.mark.parametrize('text', CASES)
def test_settings_agree_with_oslo(tmp_path, text):
    path = tmp_path / 'vdsm-dhcp.conf'
    path.write_text(text)
    lean = settings.load(str(path))
    full = options.load(str(path))
    assert lean.problem is None
    for name, get in SHARED:
        assert getattr(lean, name) == get(full), name


def test_defaults_agree_with_oslo(tmp_path, monkeypatch):
    monkeypatch.setenv(settings.CONFIG_ENV, str(tmp_path / 'absent.conf'))
    path = tmp_path / 'empty.conf'
    path.write_text('')
    full = options.load(str(path))
    lean = settings.Settings()
    for name, get in SHARED:
        assert getattr(lean, name) == get(full), name


@pytest.mark.parametrize('text, problem', [
    ('[hooks]\nwait_timeout = soon\n', 'wait_timeout'),
    ('[hooks]\nwait_timeout = -1\n', 'wait_timeout'),
    ('[hooks]\nstrict = perhaps\n', 'strict'),
    ('no section header\n', 'cannot read'),
])
def test_bad_values_fall_back_to_defaults_with_a_reason(tmp_path, text,
                                                        problem):
    path = tmp_path / 'vdsm-dhcp.conf'
    path.write_text(text)
    lean = settings.load(str(path))
    assert problem in lean.problem
    assert lean.wait_timeout == settings.DEFAULTS['wait_timeout']
    assert lean.strict == settings.DEFAULTS['strict']


def test_unreadable_file_gives_the_defaults(tmp_path):
    lean = settings.load(str(tmp_path / 'missing.conf'))
    assert lean.path is None and 'cannot read' in lean.problem
    assert lean.run_dir == settings.DEFAULTS['run_dir']


def test_secrets_file_is_read_by_oslo_and_never_by_settings(tmp_path):
    main = tmp_path / 'vdsm-dhcp.conf'
    main.write_text('[DEFAULT]\nsource = neutron\n[neutron]\n'
                    'auth_type = password\nusername = u\n'
                    'auth_url = http://127.0.0.1:5000/v3\n')
    secrets = tmp_path / 'secrets.conf'
    secrets.write_text('[neutron]\npassword = s3cr3t-pw\n'
                       'transport_url = rabbit://u:s3cr3t-pw@h:5672/\n')
    os.chmod(secrets, 0o600)
    full = options.load(str(main))
    # keystoneauth registers the options of the plugin auth_type names
    from keystoneauth1 import loading
    auth = loading.load_auth_from_conf_options(full, 'neutron')
    assert auth._password == 's3cr3t-pw'
    assert full.neutron.transport_url.startswith('rabbit://')
    assert full.neutron.username == 'u'
    assert options.config_files(str(main)) == [str(main), str(secrets)]
    assert 's3cr3t' not in repr(settings.load(str(main)))


def test_credentials_in_a_readable_main_file_are_named(tmp_path, caplog):
    main = tmp_path / 'vdsm-dhcp.conf'
    main.write_text('[neutron]\npassword = hunter2\n')
    os.chmod(main, 0o640)
    assert options.warn_misplaced_secrets(str(main)) == ['[neutron] password']
    assert 'secrets.conf' in caplog.text and 'hunter2' not in caplog.text
    os.chmod(main, 0o600)
    assert options.misplaced_secrets(str(main)) == []
