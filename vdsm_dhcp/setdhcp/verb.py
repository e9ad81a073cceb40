"""setDHCP(networks): the VDSM verb, run as root (supervdsm or the CLI).

Non-empty list: validate, persist, start the agent unit or make it reload.
Empty list: persist, ask systemd to stop the unit (the agent tears
everything down when it is stopped with an empty list). The same list
again changes nothing. Returns VDSM's envelope; never raises for bad
input, and bad input changes nothing.

How long a call blocks (VDSM holds its network semaphore around it, so
setupNetworks waits as long):
* the lock: up to `set_lock_timeout` (60 s) while another setDHCP holds it;
* setDHCP([]): one StopUnit call; the agent's teardown goes on after the
  verb returned. When no agent runs but one left dnsmasq behind (its
  unit failed), an agent is started first (until READY, as below) to
  tear that down. With wait_stopped=True (`vdsm-dhcp clear`: an operator
  wants to know), up to `agent_stop_timeout` (90 s) more for the teardown.
* a non-empty list, agent running: one KillUnit call (SIGHUP).
* a non-empty list, agent not running: its start until READY (the agent
  is ready once it can take a signal and answer on its socket, before it
  adopts or configures any network), at most AGENT_START_TIMEOUT (30 s:
  systemd kills an agent that is not ready by then). If the unit is still
  stopping (a setDHCP([]) just before) or between two tries of an
  automatic restart, first up to `agent_stop_timeout` +
  AGENT_START_TIMEOUT for it to settle: never "unit exists".
Worst case: set_lock_timeout + agent_stop_timeout + 2 x AGENT_START_TIMEOUT
(180 s with the defaults), plus D-Bus's own 25 s per call if systemd itself
hangs. Usual: milliseconds for a reload, well under a second for a start.
"""
import logging
import os
import shutil
import sys

from vdsm_dhcp import options
from vdsm_dhcp import errors
from vdsm_dhcp.setdhcp import networks_file
from vdsm_dhcp.fileutil import remove_leftovers

log = logging.getLogger('vdsm_dhcp.verb')

AGENT_START_TIMEOUT = 30


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


def _systemd(systemd):
    if systemd is not None:
        return systemd
    from vdsm_dhcp.setdhcp.systemd import Systemd   # dbus: only when needed
    return Systemd()


def set_dhcp(networks, conf=None, config_file=None, systemd=None,
             wait_stopped=False):
    """wait_stopped: for an empty list, return only once the agent has
    torn everything down and stopped (bounded by agent_stop_timeout)."""
    try:
        conf = conf or options.load(config_file)
        wanted = networks_file.parse_networks(networks)
        with networks_file.locked(conf.networks_file, conf.set_lock_timeout):
            _apply(conf, wanted, systemd, wait_stopped)
    except errors.VdsmDhcpError as e:
        log.error('setDHCP failed: %s', e)
        return e.envelope()
    except Exception as e:  # the verb answers, whatever happened
        log.exception('setDHCP failed unexpectedly')
        return errors.VdsmDhcpError('setDHCP failed: %s' % e).envelope()
    return errors.DONE


def _apply(conf, wanted, systemd, wait_stopped):
    # under the lock no other write runs: a temp file is a crash's leftover
    remove_leftovers(os.path.dirname(os.path.abspath(conf.networks_file)),
                     os.path.basename(conf.networks_file))
    try:
        current = networks_file.read(conf.networks_file)
    except errors.NetworksFileError as e:
        log.warning('%s; replacing it', e)  # setDHCP is how one repairs it
        current = None
    if current != wanted:
        networks_file.write(conf.networks_file, wanted)
        log.info('setDHCP: networks file %s now lists %s', conf.networks_file,
                 ', '.join(n.name for n in wanted) or 'nothing')
    systemd = _systemd(systemd)
    if not wanted:
        if not systemd.is_running(conf.agent_unit) and left_behind(conf):
            # an agent that died for good (a failed unit) left dnsmasq
            # serving: only an agent tears that down, so start one; it
            # cleans up what is not listed, then stops like any other
            log.info('setDHCP([]): no agent runs, but %s holds what one '
                     'left behind: starting one to tear it down',
                     conf.state_dir)
            start_agent(conf, systemd)
        systemd.stop(conf.agent_unit, timeout=conf.agent_stop_timeout,
                     wait=wait_stopped)
        return
    ensure_running(conf, systemd, reload=current != wanted)


def left_behind(conf):
    """Does the state dir hold a network's files, or a namespace's mark
    (an agent's leftovers)?"""
    try:
        names = os.listdir(conf.state_dir)
    except OSError:
        return False
    if any(not n.startswith('.') for n in names):
        return True
    try:
        return bool(os.listdir(os.path.join(conf.state_dir, '.netns')))
    except OSError:
        return False


def ensure_running(conf, systemd, reload):
    """Start the agent, or SIGHUP it (reload) when it runs. A unit in
    transition is waited for first: a stopping agent must be gone before a
    new one can start, and a starting one must be ready before a signal
    can reach its handler."""
    unit = conf.agent_unit
    state = systemd.settle(unit, conf.agent_stop_timeout +
                           AGENT_START_TIMEOUT)
    if state and state['ActiveState'] == 'active':
        if reload:
            systemd.reload(unit)
        return
    start_agent(conf, systemd)


def start_agent(conf, systemd):
    unit = conf.agent_unit
    state = systemd.start_transient(
        unit, agent_argv(conf), 'vdsm-dhcp agent: DHCP for VDSM networks',
        timeout=AGENT_START_TIMEOUT, stop_timeout=conf.agent_stop_timeout)
    if not state or state['ActiveState'] != 'active':
        raise errors.SystemdError(
            'agent unit %s failed to start (%s); see its journal'
            % (unit, '%s/%s, %s' % (state['ActiveState'], state['SubState'],
                                     state['Result'])
               if state else 'exited before it was ready'))
    log.info('started %s, pid %s', unit, state['MainPID'])


def restore(conf=None, config_file=None, systemd=None):
    """At boot: bring the agent back if the networks file lists anything."""
    try:
        conf = conf or options.load(config_file)
        with networks_file.locked(conf.networks_file, conf.set_lock_timeout):
            if not networks_file.read(conf.networks_file):
                return errors.DONE
            ensure_running(conf, _systemd(systemd), reload=False)
    except errors.VdsmDhcpError as e:
        log.error('restore failed: %s', e)
        return e.envelope()
    return errors.DONE
