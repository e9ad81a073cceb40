"""setDHCP against a real systemd manager over real D-Bus."""
import json
import os
import signal
import subprocess

import pytest

from tests import rig
from tests.rig import wait_for
from vdsm_dhcp.setdhcp import networks_file
from vdsm_dhcp.setdhcp import verb
from vdsm_dhcp.setdhcp.systemd import Systemd

RED = '3f2a9c1b-7e0d-4c55-9d6e-0123456789ab'
BLUE = '9b1e4c2a-1111-4a2b-8c3d-abcdefabcdef'


def cli(host, *args, stdin=None):
    return subprocess.run(
        [os.path.join(rig.BIN, 'vdsm-dhcp'), '--config-file', host.conf_path]
        + list(args), capture_output=True, text=True, input=stdin,
        timeout=120)


@pytest.fixture
def unit_host(host, systemd_manager):
    host.systemd = Systemd()
    return host


def state(host):
    return host.systemd.unit_state(host.conf.agent_unit)


def test_set_starts_the_agent_as_a_transient_unit(unit_host):
    host = unit_host
    r = cli(host, 'set', 'red=' + RED)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == 'Done'
    st = state(host)
    assert st['ActiveState'] == 'active'
    assert os.path.basename(st['ExecStart'][0]) == 'vdsm-dhcp-agent'
    assert st['ExecStart'][1:] == ['--config-file', host.conf_path]
    with open('/proc/%d/cmdline' % st['MainPID'], 'rb') as f:
        assert b'vdsm-dhcp-agent' in f.read()
    assert networks_file.read(host.conf.networks_file) == [
        networks_file.Network('red', RED)]
    # the agent in the unit answers on its socket and lists the network
    agent = wait_for(lambda: _agent_status(host), what='agent socket')
    assert agent['pid'] == st['MainPID']
    assert [n['name'] for n in agent['networks']] == ['red']


def _agent_status(host):
    from vdsm_dhcp.agent import control
    try:
        return control.call(host.conf, 'status', timeout=2)
    except control.ControlError:
        return None


def test_same_list_restarts_nothing_changed_list_reloads(unit_host):
    host = unit_host
    assert cli(host, 'set', 'red=' + RED).returncode == 0
    first = state(host)
    wait_for(lambda: _agent_status(host), what='agent socket')
    before = os.stat(host.conf.networks_file)
    assert cli(host, 'set', 'red=' + RED.upper()).returncode == 0
    again = state(host)
    assert again['MainPID'] == first['MainPID']
    assert again['NRestarts'] == first['NRestarts']
    # not even rewritten
    assert os.stat(host.conf.networks_file).st_mtime_ns == before.st_mtime_ns
    params = os.path.join(host.base, 'params.json')
    with open(params, 'w') as f:
        json.dump({'networks': [{'name': 'red', 'quantumId': RED},
                                {'name': 'blue', 'quantumId': BLUE}]}, f)
    assert cli(host, 'set', '--json', params).returncode == 0
    changed = state(host)
    assert changed['MainPID'] == first['MainPID']
    # the agent observed the reload: it now lists both networks
    wait_for(lambda: [n['name'] for n in _agent_status(host)['networks']]
             == ['red', 'blue'], what='agent reloaded the list')


def test_clear_stops_and_restore_brings_back(unit_host):
    host = unit_host
    assert cli(host, 'set', 'red=' + RED).returncode == 0
    assert state(host)['ActiveState'] == 'active'
    r = cli(host, 'clear')
    assert r.returncode == 0, r.stderr
    assert state(host) is None    # stopped and collected
    assert networks_file.read(host.conf.networks_file) == []
    # restore with an empty list starts nothing
    assert cli(host, 'restore').returncode == 0
    assert state(host) is None
    # a "reboot": the transient unit is gone, the file stays
    assert cli(host, 'set', 'red=' + RED).returncode == 0
    host.systemd.stop(host.conf.agent_unit)
    assert state(host) is None
    assert cli(host, 'restore').returncode == 0
    assert state(host)['ActiveState'] == 'active'


def test_agent_crash_is_restarted_by_systemd(unit_host):
    host = unit_host
    assert cli(host, 'set', 'red=' + RED).returncode == 0
    pid = state(host)['MainPID']
    os.kill(pid, signal.SIGKILL)
    # activating until the new agent says READY=1 (Type=notify)
    st = wait_for(lambda: (state(host) or {}).get('MainPID') not in
                  (None, 0, pid) and state(host)['ActiveState'] == 'active'
                  and state(host),
                  what='systemd restarting the agent')
    assert st['NRestarts'] >= 1


def test_status_shows_unit_and_list(unit_host):
    host = unit_host
    assert cli(host, 'set', 'red=' + RED).returncode == 0
    wait_for(lambda: _agent_status(host), what='agent socket')
    r = cli(host, 'status', '--json')
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc['unit']['ActiveState'] == 'active'
    assert doc['networks_file'] == [{'name': 'red', 'quantumId': RED}]
    assert doc['agent']['networks'][0]['reason']
    r = cli(host, 'status')
    assert 'unit %s: active (running)' % host.conf.agent_unit in r.stdout
    assert r.stdout.startswith('PROBLEMS')
    assert 'red: NOT SERVED: ' in r.stdout.split('\n\n')[0]
    assert doc['version'] == 2


def test_bad_input_changes_nothing_and_names_the_entry(unit_host):
    host = unit_host
    assert cli(host, 'set', 'red=' + RED).returncode == 0
    pid = state(host)['MainPID']
    with open(host.conf.networks_file, 'rb') as f:
        before = f.read()
    r = cli(host, 'set', 'red=' + RED, 'bad.name=' + BLUE)
    assert r.returncode == 27
    assert "network #1 ('bad.name')" in r.stderr and "'.'" in r.stderr
    r = cli(host, 'set', 'red=' + RED, 'blue=nope')
    assert r.returncode == 21 and "quantumId 'nope' is not a UUID" in r.stderr
    env = verb.set_dhcp([{'name': 'red', 'quantumId': RED, 'x': 1}],
                        conf=host.conf)
    assert env['status']['code'] == 21
    assert "unknown key(s) 'x'" in env['status']['message']
    with open(host.conf.networks_file, 'rb') as f:
        assert f.read() == before
    assert state(host)['MainPID'] == pid


def served_by_unit(host):
    """The status of the first network once the unit's agent serves it."""
    def first():
        networks = (_agent_status(host) or {}).get('networks')
        return networks and networks[0]['served'] and networks[0]
    return wait_for(first, what='served by the unit')


def test_clear_tears_down_everything_before_the_unit_stops(unit_host, lab):
    from tests.integration.test_agent_e2e import one_network
    host = unit_host
    net, sub, (port,) = one_network(host, lab)
    assert cli(host, 'set', 'red=' + net['id']).returncode == 0
    st = served_by_unit(host)
    assert lab.vm('red', port['mac_address']).dhcp()['ip'] == '10.10.0.10'
    r = cli(host, 'clear')
    assert r.returncode == 0, r.stderr
    assert state(host) is None
    assert not os.path.exists('/proc/%d' % st['dnsmasq_pid'])
    assert not os.path.exists('/run/netns/qdhcp-' + net['id'])
    assert not os.path.exists(os.path.join(host.conf.state_dir, net['id']))


def test_agent_crash_under_the_unit_keeps_dnsmasq(unit_host, lab):
    from tests.integration.test_agent_e2e import one_network
    host = unit_host
    net, sub, (port,) = one_network(host, lab)
    assert cli(host, 'set', 'red=' + net['id']).returncode == 0
    st = served_by_unit(host)
    agent_pid = state(host)['MainPID']
    os.kill(agent_pid, signal.SIGKILL)
    assert os.path.exists('/proc/%d' % st['dnsmasq_pid'])
    again = wait_for(lambda: (state(host) or {}).get('MainPID') not in
                     (None, 0, agent_pid) and _agent_status(host) and
                     _agent_status(host)['networks'][0]['served'] and
                     _agent_status(host)['networks'][0],
                     what='restarted agent serving red')
    assert again['dnsmasq_pid'] == st['dnsmasq_pid'] and again['adopted']


def test_clear_with_no_agent_left_tears_down_what_a_dead_one_left(
        unit_host, lab):
    """An agent that died for good (here: killed, its unit stopped from
    restarting it) leaves dnsmasq serving; setDHCP([]) must still stop
    DHCP on this host."""
    from tests.integration.test_agent_e2e import one_network
    host = unit_host
    net, sub, (port,) = one_network(host, lab)
    host.networks(('red', net['id']))
    agent = host.agent()              # run by hand: no unit at all
    served = agent.wait_served('red')
    dnsmasq_pid = served['dnsmasq_pid']
    agent.kill()                      # SIGKILL: dnsmasq keeps serving
    assert os.path.exists('/proc/%d' % dnsmasq_pid)
    assert state(host) is None
    r = cli(host, 'clear')
    assert r.returncode == 0, r.stderr
    wait_for(lambda: not os.path.exists('/proc/%d' % dnsmasq_pid),
             timeout=60, what='the dead agent\'s dnsmasq gone')
    assert not os.path.exists('/run/netns/qdhcp-' + net['id'])
    assert not os.path.exists(os.path.join(host.conf.state_dir, net['id']))
    assert state(host) is None
    assert networks_file.read(host.conf.networks_file) == []
