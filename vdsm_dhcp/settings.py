"""The few settings the VM hooks and the CLI's query commands need, read
with the standard library only.

A VDSM hook is a new process for every VM start: importing oslo.config
alone costs more than the whole gate when the vNIC is already ready. So
these front programs read the main config file with configparser, with
oslo's rules for what they use (last value wins, surrounding quotes
stripped, $name substitution, oslo's booleans), and never the secrets file
beside it, which is root-only. options.py declares the same options for oslo
with these defaults; a test checks that both readings agree.

A file that cannot be read is not an error here: the hooks must never fail
a VM start over it, so the defaults are used and `problem` says why.
"""
import configparser
import os
import string

DEFAULT_CONFIG_FILE = '/etc/vdsm-dhcp/vdsm-dhcp.conf'
CONFIG_ENV = 'VDSM_DHCP_CONFIG'
SECRETS_NAME = 'secrets.conf'   # beside the main file, root-only

DEFAULTS = {
    'networks_file': '/var/lib/vdsm/dhcp/networks.json',
    'state_dir': '/var/lib/vdsm-dhcp',
    'run_dir': '/run/vdsm-dhcp',
    'agent_unit': 'vdsm-dhcp-agent.service',
    'wait_timeout': 30.0,
    'strict': False,
}

_TRUE = ('true', '1', 'on', 'yes')
_FALSE = ('false', '0', 'off', 'no')


def parse_bool(text):
    """oslo's booleans: True or False, or None for anything else."""
    word = text.strip().lower()
    return True if word in _TRUE else False if word in _FALSE else None


class Settings:
    def __init__(self, path=None, problem=None, **values):
        self.path = path          # the file read, or None for the defaults
        self.problem = problem    # why the file was not (fully) used
        for key, default in DEFAULTS.items():
            setattr(self, key, values.get(key, default))

    def __repr__(self):
        return 'Settings(%r, %s)' % (self.path, ', '.join(
            '%s=%r' % (k, getattr(self, k)) for k in DEFAULTS))


def config_file_from(explicit=None):
    """The main config file to read, or None for the defaults:
    --config-file, else $VDSM_DHCP_CONFIG, else the default file if it
    exists."""
    if explicit:
        return os.path.abspath(explicit)
    env = os.environ.get(CONFIG_ENV)
    if env:
        return os.path.abspath(env)
    if os.path.exists(DEFAULT_CONFIG_FILE):
        return DEFAULT_CONFIG_FILE
    return None


def secrets_file_for(main_path):
    """The root-only file beside the main one that holds credentials."""
    return os.path.join(os.path.dirname(main_path), SECRETS_NAME)


def _unquote(value):
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in '"\'':
        return value[1:-1]
    return value


def _substitute(value, defaults):
    # oslo.config expands $name / ${name} from [DEFAULT]; $$ is a '$'
    if '$' not in value:
        return value
    return string.Template(value).safe_substitute(defaults)


def load(explicit=None):
    """Settings from the main config file; never raises."""
    path = config_file_from(explicit)
    if path is None:
        return Settings()
    parser = configparser.ConfigParser(interpolation=None, strict=False,
                                       default_section='\x00none')
    try:
        with open(path, encoding='utf-8') as f:
            parser.read_file(f)
    except (OSError, UnicodeDecodeError, configparser.Error) as e:
        reason = getattr(e, 'strerror', None) or str(e).splitlines()[0]
        return Settings(None, 'cannot read %s (%s): using the defaults'
                        % (path, reason))
    defaults = {k: _unquote(v) for k, v in parser.items('DEFAULT')} \
        if parser.has_section('DEFAULT') else {}
    values, problems = {}, []
    for key in ('networks_file', 'state_dir', 'run_dir', 'agent_unit'):
        if key in defaults:
            values[key] = _substitute(defaults[key], defaults)
    hooks = {k: _unquote(v) for k, v in parser.items('hooks')} \
        if parser.has_section('hooks') else {}
    if 'wait_timeout' in hooks:
        try:
            timeout = float(hooks['wait_timeout'])
            if not timeout >= 0:
                raise ValueError
            values['wait_timeout'] = timeout
        except ValueError:
            problems.append('[hooks] wait_timeout = %r is not a number of '
                            'seconds >= 0' % hooks['wait_timeout'])
    if 'strict' in hooks:
        strict = parse_bool(hooks['strict'])
        if strict is not None:
            values['strict'] = strict
        else:
            problems.append('[hooks] strict = %r is not a boolean'
                            % hooks['strict'])
    problem = ('%s: %s; using the default' % (path, '; '.join(problems))
               if problems else None)
    return Settings(path, problem, **values)
