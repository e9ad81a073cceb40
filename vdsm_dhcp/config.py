"""Configuration of the verb and the agent (oslo.config).

Two files, so that the VM hooks (vdsm:kvm) can read what they need and no
secret:
- the main file: --config-file, else $VDSM_DHCP_CONFIG, else
  /etc/vdsm-dhcp/vdsm-dhcp.conf when it exists (installed 0640 root:kvm);
- secrets.conf beside it, when it exists (installed 0600 root): the
  [neutron] credentials and transport_url. Read after the main file, so
  its values win.
The hooks and the CLI's query commands read the main file through
settings.py (standard library only), with the defaults declared there.
"""
import configparser
import logging
import os
import socket

from oslo_config import cfg

from vdsm_dhcp import settings

DEFAULT_CONFIG_FILE = settings.DEFAULT_CONFIG_FILE
CONFIG_ENV = settings.CONFIG_ENV
D = settings.DEFAULTS

# Options that hold credentials: they belong in secrets.conf.
SECRET_OPTIONS = {
    'DEFAULT': ('transport_url',),
    'neutron': ('password', 'token', 'transport_url', 'secret',
                'application_credential_secret', 'passcode'),
}

log = logging.getLogger(__name__)

common_opts = [
    cfg.StrOpt('networks_file', default=D['networks_file'],
               help='The list of networks this host serves DHCP for, as '
                    'written by setDHCP.'),
    cfg.StrOpt('state_dir', default=D['state_dir'],
               help='Per-network dnsmasq files live in STATE_DIR/<quantumId>/.'),
    cfg.StrOpt('run_dir', default=D['run_dir'],
               help='Run-time files: the agent control socket, locks.'),
    cfg.StrOpt('host', default=socket.gethostname(),
               sample_default='<the host name>',
               help='This host as the IPAM knows it (binding:host_id of '
                    'its DHCP ports).'),
    cfg.StrOpt('agent_unit', default=D['agent_unit'],
               help='Name of the transient systemd unit running the agent.'),
    cfg.IntOpt('set_lock_timeout', default=60, min=0,
               help='Seconds a setDHCP call waits for a concurrent one '
                    'before failing with code 40 (resource unavailable).'),
    cfg.IntOpt('agent_stop_timeout', default=90, min=1,
               help='Seconds to wait for the agent to tear down and stop.'),
]


# Read by the VM hooks (with the standard library: settings.py), declared
# here for oslo-config-generator and the sample file.
hooks_opts = [
    cfg.FloatOpt('wait_timeout', default=D['wait_timeout'], min=0,
                 help='Longest a VM start (or NIC hot-plug) waits for its '
                      'vNICs to be servable by DHCP.'),
    cfg.BoolOpt('strict', default=D['strict'],
                help='Refuse to start the VM (hook exit 2) when a vNIC is '
                     'not servable in time; otherwise start it with a '
                     'warning in vdsm.log.'),
]


config_file_from = settings.config_file_from


def config_files(main):
    """The files oslo reads for this main file: it, then secrets.conf
    beside it when that exists."""
    if main is None:
        return []
    secrets = settings.secrets_file_for(main)
    return [main] + ([secrets] if os.path.exists(secrets) else [])


def load(config_file=None):
    """A fresh ConfigOpts with every option registered and the files read.

    An explicitly named file that does not exist is an error (oslo raises
    ConfigFilesNotFoundError); the implicit default may be absent.
    """
    from vdsm_dhcp import opts  # every module's options, declared beside it
    conf = cfg.ConfigOpts()
    for group, group_opts in opts.list_opts(sample=False):
        conf.register_opts(group_opts,
                           group=None if group == 'DEFAULT' else group)
    path = config_file_from(config_file)
    conf([], project='vdsm-dhcp', default_config_files=config_files(path),
         default_config_dirs=[], use_env=False)
    conf.config_path = path
    return conf


def misplaced_secrets(path):
    """Credentials found in a main file that others may read: a list of
    "[section] option" (never the values)."""
    try:
        if path is None or not os.stat(path).st_mode & 0o044:
            return []
        parser = configparser.ConfigParser(interpolation=None, strict=False,
                                           default_section='\x00none')
        parser.read(path, encoding='utf-8')
    except (OSError, UnicodeDecodeError, configparser.Error):
        return []
    return ['[%s] %s' % (section, option)
            for section, options in SECRET_OPTIONS.items()
            for option in options
            if parser.has_option(section, option)
            and parser.get(section, option).strip()]


def warn_misplaced_secrets(path):
    found = misplaced_secrets(path)
    if found:
        log.warning('%s is readable by others (the VM hooks read it) but '
                    'holds credentials: %s; move them to %s (mode 0600)',
                    path, ', '.join(found), settings.secrets_file_for(path))
    return found
