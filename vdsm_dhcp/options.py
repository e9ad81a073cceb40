"""Every oslo.config option of vdsm-dhcp, declared by concept, and the
loading of the configuration files.

Imports no behaviour module: the agent, the verb and oslo-config-generator
(list_opts, the `oslo.config.opts` entry point) read the options here; the
VM hooks and the CLI's query commands never do (they read the main file
with the standard library, through settings.py, whose defaults these
options share).

Two files, so that the VM hooks (vdsm:kvm) can read what they need and no
secret:
- the main file: --config-file, else $VDSM_DHCP_CONFIG, else
  /etc/vdsm-dhcp/vdsm-dhcp.conf when it exists (installed 0640 root:kvm);
- secrets.conf beside it, when it exists (installed 0600 root): the
  [neutron] credentials and transport_url. Read after the main file, so
  its values win.
"""
import configparser
import logging
import os
import itertools
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

log = logging.getLogger('vdsm_dhcp.config')

common_opts = [
    cfg.StrOpt('networks_file', default=D['networks_file'],
               help='The list of networks this host serves DHCP for, as '
                    'written by setDHCP.'),
    cfg.StrOpt('state_dir', default=D['state_dir'],
               help='Per-network dnsmasq files live in '
                    'STATE_DIR/<quantumId>/.'),
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


# interface driver name -> module:class (host/interface.load_driver)
INTERFACE_DRIVERS = {'veth': 'vdsm_dhcp.host.veth:VethDriver'}
METRICS_GROUP = 'metrics'
NEUTRON_GROUP = 'neutron'

agent_opts = [
    cfg.IntOpt('workers', default=8, min=1,
               help='Networks configured in parallel.'),
    cfg.FloatOpt('resync_interval', default=30.0, min=0.5,
                 help='Seconds between full reconciliations when nothing '
                      'changed (catches drift, e.g. a deleted namespace).'),
    cfg.FloatOpt('retry_max', default=30.0, min=0.1,
                 help='Longest back-off between retries of a failed '
                      'network.'),
    cfg.FloatOpt('supervise_interval', default=0.25, min=0.01,
                 help='Seconds between checks that every dnsmasq lives.'),
    cfg.BoolOpt('debug', default=False, help='Log at debug level.'),
    cfg.FloatOpt('wait_max', default=600.0, min=0,
                 help='Longest timeout a `wait` request may ask for.'),
]

control_opts = [
    cfg.StrOpt('control_group', default='kvm',
               help='Group allowed on the control socket besides root (the '
                    'VM hooks run as vdsm:kvm).'),
    cfg.FloatOpt('control_read_timeout', default=5.0, min=0.1,
                 help='Seconds a client may take to send a whole request.'),
    cfg.FloatOpt('control_send_timeout', default=5.0, min=0.1,
                 help='Seconds a client may take to read a reply; past it '
                      'the connection is dropped.'),
    cfg.IntOpt('control_clients_per_uid', default=128, min=1,
               help='Connections one user may hold at once (the VM hooks '
                    'all run as vdsm: at least as many as VMs started at '
                    'once). Root counts apart from the others.'),
]

metrics_opts = [
    cfg.StrOpt('textfile',
               help='Write the metrics to this file (atomically) every '
                    '`interval` seconds, e.g. for node_exporter\'s textfile '
                    'collector: /var/lib/node_exporter/textfile/'
                    'vdsm_dhcp.prom. Unset: no file.'),
    cfg.FloatOpt('interval', default=15.0, min=1.0,
                 help='Seconds between two writes of the textfile.'),
    cfg.StrOpt('listen',
               help='ADDRESS:PORT of an HTTP endpoint serving the metrics, '
                    'e.g. 127.0.0.1:9797. Unset (the default): none; the '
                    'metrics stay reachable through `vdsm-dhcp metrics`.'),
]

source_opts = [
    cfg.StrOpt('source', default='file', choices=['file', 'neutron'],
               help='Where networks, subnets and ports come from: a JSON '
                    'file ([file]), or the Neutron API ([neutron]).'),
]

file_opts = [
    cfg.StrOpt('path', default='/etc/vdsm-dhcp/ipam.json',
               help='A JSON document {"networks": [...], "subnets": [...], '
                    '"ports": [...]} in Neutron API v2 shape, re-read when '
                    'it changes.'),
]

dnsmasq_opts = [
    cfg.StrOpt('binary', default='dnsmasq', help='The dnsmasq program.'),
    cfg.IntOpt('lease_duration', default=86400, min=120,
               help='Lease time in seconds handed to clients.'),
    cfg.IntOpt('lease_max', default=65536, min=1,
               help='--dhcp-lease-max (dnsmasq refuses leases past it; its '
                    'own default of 1000 is too small for a big network).'),
    cfg.StrOpt('user', default='nobody',
               help='The unprivileged user dnsmasq drops to.'),
    cfg.StrOpt('group', default=None, sample_default='nogroup or nobody',
               help='Its group (default: nogroup where it exists, else '
                    'nobody).'),
    cfg.IntOpt('shard_size', default=600, min=1,
               help='Hosts per dnsmasq. A network with more hosts is '
                    'served by several dnsmasq ("shards"), each with its own '
                    'DHCP port of this host (the Neutron source makes them; '
                    'with the file source, list them): dnsmasq pays '
                    'O(leases x hosts) per change, so small shards keep '
                    'every change cheap.'),
    cfg.IntOpt('batch_threshold', default=2, min=2,
               help='New ports applied together, at least this many, go '
                    'into one batch file: one read by dnsmasq, not many.'),
    cfg.FloatOpt('start_timeout', default=10.0,
                 help='Seconds for dnsmasq to start and write its pid.'),
    cfg.IntOpt('log_max_bytes', default=10 * 1024 * 1024, min=4096,
               help='Rotate dnsmasq.log to dnsmasq.log.1 past this size '
                    '(dnsmasq reopens its log on SIGUSR2): a network\'s '
                    'logs take about twice this on disk.'),
    cfg.IntOpt('client_rate', default=50, min=0,
               help='DHCP packets per second one client (its Ethernet '
                    'source MAC) may send to a network\'s dnsmasq; the rest '
                    'are dropped by nftables in the DHCP namespace, so a VM '
                    'that floods cannot starve the others. 0: no limit.'),
    cfg.StrOpt('nft', default='nft',
               help='The nftables program (for client_rate).'),
]

interface_opts = [
    cfg.StrOpt('driver', default='veth', choices=sorted(INTERFACE_DRIVERS),
               help='How the DHCP namespace is plugged into the bridge.'),
]

neutron_opts = [
    cfg.FloatOpt('poll_interval', default=2.0, min=0.1,
                 help='Seconds between polls of (id, revision) of the '
                      'served networks\' resources.'),
    cfg.FloatOpt('retry_max', default=30.0, min=0.5,
                 help='Longest back-off between attempts while Neutron '
                      'is unreachable.'),
    cfg.StrOpt('transport_url', secret=True,
               help='oslo.messaging URL of Neutron\'s notifications '
                    '(rabbit://...); unset: poll only.'),
    cfg.StrOpt('notification_topic', default='notifications',
               help='The topic Neutron sends its notifications to.'),
    cfg.StrOpt('notification_exchange', default='neutron',
               help='The exchange Neutron publishes on (its '
                    'control_exchange).'),
    cfg.BoolOpt('manage_dhcp_port', default=True,
                help='Create this host\'s DHCP ports on each served network '
                     '(one per shard, see [dnsmasq] shard_size) and release '
                     'them when the network is dropped.'),
]


def neutron_opts_all(sample=False):
    """Ours, the session's, the adapter's, and auth_type. The sample also
    shows the password plugin's (the usual [neutron] section); at run time
    keystoneauth1 registers the options of whichever plugin auth_type names.
    """
    from keystoneauth1 import loading as ks_loading   # only when loading
    opts = (neutron_opts + ks_loading.get_session_conf_options()
            + ks_loading.get_auth_common_conf_options()
            + ks_loading.get_adapter_conf_options())
    if sample:
        opts += ks_loading.get_auth_plugin_conf_options('password')
    return opts


def list_opts(sample=True, neutron_auth=True):
    """oslo-config-generator's entry point; load() passes sample=False and
    neutron_auth=False (keystoneauth1's options are registered only when
    the Neutron source is configured: ~6 MB and 160 modules otherwise)."""
    return [
        ('DEFAULT', list(itertools.chain(common_opts, source_opts,
                                         agent_opts, control_opts))),
        ('file', list(file_opts)),
        ('dnsmasq', list(dnsmasq_opts)),
        ('interface', list(interface_opts)),
        ('hooks', list(hooks_opts)),
        (METRICS_GROUP, list(metrics_opts)),
        (NEUTRON_GROUP, neutron_opts_all(sample) if neutron_auth
         else list(neutron_opts)),
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
    conf = cfg.ConfigOpts()
    for group, group_opts in list_opts(sample=False, neutron_auth=False):
        conf.register_opts(group_opts,
                           group=None if group == 'DEFAULT' else group)
    path = config_file_from(config_file)
    conf([], project='vdsm-dhcp', default_config_files=config_files(path),
         default_config_dirs=[], use_env=False)
    if conf.source == 'neutron':
        # registered after the parse: oslo reads their values from the
        # files already parsed
        conf.register_opts(neutron_opts_all()[len(neutron_opts):],
                           group=NEUTRON_GROUP)
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
