"""setDHCP(networks): the VDSM verb, run as root (supervdsm or the CLI).

Non-empty list: validate, persist, start the agent unit or make it reload.
Empty list: persist, stop the unit (the agent tears everything down when it
is stopped with an empty list). The same list again changes nothing.
Returns VDSM's envelope; never raises for bad input.
"""
import logging
import os
import shutil
import sys

from vdsm_dhcp import config
from vdsm_dhcp import errors
from vdsm_dhcp import networks_file
from vdsm_dhcp.systemd import Systemd

log = logging.getLogger(__name__)


def agent_argv(conf):
    """ExecStart of the agent unit: the agent installed beside this Python
    (a venv or /usr/bin), with the same config file as this call."""
    beside = os.path.join(os.path.dirname(sys.executable), 'vdsm-dhcp-agent')
    exe = beside if os.access(beside, os.X_OK) else shutil.which(
        'vdsm-dhcp-agent')
    argv = [exe] if exe else [sys.executable, '-m', 'vdsm_dhcp.agent']
    if conf.config_path:
        argv += ['--config-file', conf.config_path]
    return argv


def set_dhcp(networks, conf=None, config_file=None, systemd=None):
    try:
        conf = conf or config.load(config_file)
        wanted = networks_file.parse_networks(networks)
        with networks_file.locked(conf.networks_file, conf.set_lock_timeout):
            _apply(conf, wanted, systemd)
    except errors.VdsmDhcpError as e:
        log.error('setDHCP failed: %s', e)
        return e.envelope()
    except Exception as e:  # the verb answers, whatever happened
        log.exception('setDHCP failed unexpectedly')
        return errors.VdsmDhcpError('setDHCP failed: %s' % e).envelope()
    return errors.DONE


def _apply(conf, wanted, systemd):
    try:
        current = networks_file.read(conf.networks_file)
    except errors.NetworksFileError as e:
        log.warning('%s; replacing it', e)  # setDHCP is how one repairs it
        current = None
    if current != wanted:
        networks_file.write(conf.networks_file, wanted)
        log.info('setDHCP: networks file %s now lists %s', conf.networks_file,
                 ', '.join(n.name for n in wanted) or 'nothing')
    systemd = systemd or Systemd()
    unit = conf.agent_unit
    if not wanted:
        systemd.stop(unit, timeout=conf.agent_stop_timeout)
        return
    if systemd.is_running(unit):
        if current != wanted:
            systemd.reload(unit)
        return
    start_agent(conf, systemd)


def start_agent(conf, systemd):
    state = systemd.start_transient(conf.agent_unit, agent_argv(conf),
                                    'vdsm-dhcp agent: DHCP for VDSM networks')
    if state['ActiveState'] == 'failed':
        raise errors.SystemdError('agent unit %s failed to start (%s)'
                                  % (conf.agent_unit, state['Result']))
    log.info('started %s, pid %s', conf.agent_unit, state['MainPID'])


def restore(conf=None, config_file=None, systemd=None):
    """At boot: bring the agent back if the networks file lists anything."""
    try:
        conf = conf or config.load(config_file)
        with networks_file.locked(conf.networks_file, conf.set_lock_timeout):
            if not networks_file.read(conf.networks_file):
                return errors.DONE
            systemd = systemd or Systemd()
            if not systemd.is_running(conf.agent_unit):
                start_agent(conf, systemd)
    except errors.VdsmDhcpError as e:
        log.error('restore failed: %s', e)
        return e.envelope()
    return errors.DONE
