"""Configuration shared by the verb, the CLI and the agent (oslo.config).

Every program reads one file: --config-file, else $VDSM_DHCP_CONFIG, else
/etc/vdsm-dhcp/vdsm-dhcp.conf when it exists, else the defaults.
"""
import os
import socket

from oslo_config import cfg

DEFAULT_CONFIG_FILE = '/etc/vdsm-dhcp/vdsm-dhcp.conf'
CONFIG_ENV = 'VDSM_DHCP_CONFIG'

common_opts = [
    cfg.StrOpt('networks_file', default='/var/lib/vdsm/dhcp/networks.json',
               help='The list of networks this host serves DHCP for, as '
                    'written by setDHCP.'),
    cfg.StrOpt('state_dir', default='/var/lib/vdsm-dhcp',
               help='Per-network dnsmasq files live in STATE_DIR/<quantumId>/.'),
    cfg.StrOpt('run_dir', default='/run/vdsm-dhcp',
               help='Run-time files: the agent control socket, locks.'),
    cfg.StrOpt('host', default=socket.gethostname(),
               sample_default='<the host name>',
               help='This host as the IPAM knows it (binding:host_id of '
                    'its DHCP ports).'),
    cfg.StrOpt('agent_unit', default='vdsm-dhcp-agent.service',
               help='Name of the transient systemd unit running the agent.'),
    cfg.IntOpt('set_lock_timeout', default=60, min=0,
               help='Seconds a setDHCP call waits for a concurrent one '
                    'before failing with code 40 (resource unavailable).'),
    cfg.IntOpt('agent_stop_timeout', default=90, min=1,
               help='Seconds to wait for the agent to tear down and stop.'),
]


def config_file_from(explicit=None):
    """The config file to read, or None for the defaults."""
    if explicit:
        return os.path.abspath(explicit)
    env = os.environ.get(CONFIG_ENV)
    if env:
        return os.path.abspath(env)
    if os.path.exists(DEFAULT_CONFIG_FILE):
        return DEFAULT_CONFIG_FILE
    return None


def load(config_file=None):
    """A fresh ConfigOpts with every option registered and the file read.

    An explicitly named file that does not exist is an error (oslo raises
    ConfigFilesNotFoundError); the implicit default may be absent.
    """
    from vdsm_dhcp import opts  # every module's options, declared beside it
    conf = cfg.ConfigOpts()
    for group, group_opts in opts.list_opts(sample=False):
        conf.register_opts(group_opts,
                           group=None if group == 'DEFAULT' else group)
    path = config_file_from(config_file)
    conf([], project='vdsm-dhcp',
         default_config_files=[path] if path else [],
         default_config_dirs=[], use_env=False)
    conf.config_path = path
    return conf
