"""Faults injected into a real agent (real namespaces, dnsmasq, systemd):
what issue 10 found broken, each with the test that would have caught it.

Every test records what it injected and what came of it (tests/faultlog).
Pass/fail never depends on timing: waits are generous hang bounds.
"""
import errno
import os
import random
import signal
import subprocess
import threading
import time

import pytest
from pyroute2 import IPRoute, netns

from tests import faultlog, rig
from tests.rig import mac, wait_for
from tests.integration.test_agent_e2e import one_network
from vdsm_dhcp.agent import service as agent_mod
from vdsm_dhcp import options
from vdsm_dhcp.agent import control
from vdsm_dhcp.dnsmasq import conf as dnsmasq_conf
from vdsm_dhcp.dnsmasq import pids
from vdsm_dhcp.setdhcp import verb
from vdsm_dhcp.host.interface import device_names


def configure(host, **extra):
    """Rewrite the host's config with extra options (same paths)."""
    rig.write_conf(host.conf_path, host.base, host=host.conf.host, **extra)
    host.conf = options.load(host.conf_path)


def files_of(host, qid):
    return dnsmasq_conf.Files(host.conf.state_dir, qid)


def dnsmasq_pid(host, qid):
    """The running dnsmasq of this network, checked by its command line."""
    files = files_of(host, qid)
    pid = pids.read_pid(files)
    argv = pids.proc_cmdline(pid) if pid else None
    if argv and '--pid-file=' + files.pid in argv and pids.pid_alive(pid):
        return pid
    return None


def status_or_none(host):
    try:
        return control.call(host.conf, 'status', timeout=5)
    except control.ControlError:
        return None


def network_status(host, name):
    st = status_or_none(host) or {'networks': []}
    return next((n for n in st['networks'] if n['name'] == name), None)


def gone(pid):
    return not pids.pid_alive(pid)


# -- 10.1: two quick setDHCP calls; SIGTERM during start-up -------------------
@pytest.fixture
def unit_host(host, systemd_manager):
    from vdsm_dhcp.setdhcp.systemd import Systemd
    host.systemd = Systemd()
    return host


RED = '3f2a9c1b-7e0d-4c55-9d6e-0123456789ab'
BLUE = '9b1e4c2a-1111-4a2b-8c3d-abcdefabcdef'


def test_quick_setdhcp_calls_always_leave_a_running_agent(unit_host,
                                                         systemd_manager):
    """set; set (reload SIGHUP right after the start); clear without
    waiting; set again at once (the unit still stopping): every round ends
    with one ready agent serving the last list."""
    host = unit_host
    red = {'name': 'red', 'quantumId': RED}
    blue = {'name': 'blue', 'quantumId': BLUE}
    rounds = 12
    for i in range(rounds):
        for networks in ([red], [red, blue]):
            env = verb.set_dhcp(networks, conf=host.conf)
            assert env['status']['code'] == 0, (i, env)
        st = host.systemd.unit_state(host.conf.agent_unit)
        assert st and st['ActiveState'] == 'active', (i, st)
        wait_for(lambda: [n['name'] for n in (status_or_none(host) or {})
                          .get('networks', [])] == ['red', 'blue'],
                 what='round %d: the agent lists both networks' % i)
        assert status_or_none(host)['pid'] == st['MainPID']
        # clear does not wait for the teardown; the next set must
        env = verb.set_dhcp([], conf=host.conf)
        assert env['status']['code'] == 0, (i, env)
    env = verb.set_dhcp([red], conf=host.conf)
    assert env['status']['code'] == 0, env
    st = host.systemd.unit_state(host.conf.agent_unit)
    assert st['ActiveState'] == 'active'
    wait_for(lambda: status_or_none(host), what='the last agent answers')
    shown = systemd_manager.systemctl(
        'show', host.conf.agent_unit, '-p',
        'Type,NotifyAccess,Restart,RestartPreventExitStatus').stdout
    assert set(shown.split()) >= {'Type=notify', 'NotifyAccess=main',
                                  'Restart=always'}, shown
    assert '2' in shown and '3' in shown, shown
    faultlog.record('setDHCP twice in quick succession (reload of a starting '
                    'agent), then setDHCP([]) and set again at once',
                    rounds, 'an agent ran and answered after every round; '
                    'no call failed')


def sigterm_blocked(pid):
    """The agent holds SIGTERM blocked (from the moment its module is
    loaded until its handlers are in place). Checked after the exec (the
    command line is the agent's): between fork and exec, subprocess blocks
    every signal of the child."""
    argv = pids.proc_cmdline(pid) or []
    if not any(a.endswith('vdsm-dhcp-agent') for a in argv):
        return False
    try:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith('SigBlk:'):
                    return bool(int(line.split()[1], 16) &
                                1 << (signal.SIGTERM - 1))
    except OSError:
        pass
    return False


def test_sigterm_during_start_up_with_empty_list_tears_down(host, lab):
    """A stop (SIGTERM) that reaches the agent while it is still starting
    (from its first Python statement on; before that the interpreter is
    still loading), the list just emptied: everything is torn down, never
    left behind. Under systemd the verb never signals an agent that has not
    said READY (test_quick_setdhcp_calls_always_leave_a_running_agent)."""
    net, sub, (port,) = one_network(host, lab)
    qid = net['id']
    delays = [0.0, 0.005, 0.02, 0.05, 0.1, 0.2]
    for delay in delays:
        host.networks(('red', qid))
        first = host.agent()
        first.wait_served('red')
        pid = dnsmasq_pid(host, qid)
        first.kill()             # dnsmasq and namespace stay
        second = host.agent(start=False)
        second.start(wait=False)
        host.networks()
        wait_for(lambda: sigterm_blocked(second.proc.pid), interval=0.001,
                 what='the starting agent holding SIGTERM')
        time.sleep(delay)
        second.proc.send_signal(signal.SIGTERM)
        assert second.proc.wait(rig.HANG) == 0, second.log()
        assert gone(pid), 'delay %s: dnsmasq left running' % delay
        assert not os.path.exists('/run/netns/qdhcp-' + qid), delay
        assert not os.path.exists(files_of(host, qid).base), delay
    faultlog.record('SIGTERM to a starting agent (0-200 ms after exec), '
                    'list emptied', len(delays),
                    'agent exited 0 every time after tearing down dnsmasq, '
                    'namespace and state')


# -- 10.7: veth drift ---------------------------------------------------------
def test_deleted_veth_and_recreated_bridge_are_served_again(host, lab):
    net, sub, (port,) = one_network(host, lab)
    qid = net['id']
    host.networks(('red', qid))
    agent = host.agent()
    agent.wait_served('red')
    vm = lab.vm('red', port['mac_address'])
    vm_host_if = 'vm%s%d' % (lab.tag, rig.VM.count)
    assert vm.dhcp()['ip'] == '10.10.0.10'
    host_if = device_names(qid)[0]
    with IPRoute() as ipr:
        ipr.link('del', index=ipr.link_lookup(ifname=host_if)[0])
    wait_for(lambda: (vm.dhcp(tries=1) or {}).get('ip') == '10.10.0.10',
             what='served again after its veth was deleted')
    # the bridge goes and comes back (VDSM re-creating a network) while the
    # agent is busy (stopped: it sees both events only afterwards, and the
    # bridge present every time it looks); our veth and the VM's are
    # released from the old bridge
    agent.proc.send_signal(signal.SIGSTOP)
    try:
        lab.del_bridge('red')
        lab.bridge('red')
        with IPRoute() as ipr:
            ipr.link('set', index=ipr.link_lookup(ifname=vm_host_if)[0],
                     master=ipr.link_lookup(ifname='red')[0], state='up')
    finally:
        agent.proc.send_signal(signal.SIGCONT)
    wait_for(lambda: (vm.dhcp(tries=1) or {}).get('ip') == '10.10.0.10',
             what='served again on the re-created bridge')
    assert agent.network('red')['served']
    faultlog.record('veth of a served network deleted; its bridge deleted and '
                    're-created', 2, 'veth re-created / re-enslaved, the VM '
                    'leased again', leases_lost=0)


# -- 10.8: corrupt networks file at start ---------------------------------------
def test_corrupt_networks_file_at_start_tears_nothing_down(host, lab):
    net, sub, (port,) = one_network(host, lab)
    qid = net['id']
    host.networks(('red', qid))
    first = host.agent()
    first.wait_served('red')
    pid = dnsmasq_pid(host, qid)
    first.kill()
    with open(host.conf.networks_file, 'w') as f:
        f.write('{"version": 1, "networks": [')
    second = host.agent()
    wait_for(lambda: second.status()['networks_file_error'],
             what='the error in status')
    # a reconcile round or two, then nothing may have been touched
    second.reload()
    time.sleep(1)
    assert dnsmasq_pid(host, qid) == pid
    assert os.path.exists('/run/netns/qdhcp-' + qid)
    assert lab.vm('red', port['mac_address']).dhcp()['ip'] == '10.10.0.10'
    # a SIGTERM while the list is still unreadable: nothing torn down either
    second.stop()
    assert dnsmasq_pid(host, qid) == pid
    third = host.agent()
    # repaired (setDHCP rewrites it): the same dnsmasq, adopted, serves
    host.networks(('red', qid))
    third.reload()
    st = wait_for(lambda: (network_status(host, 'red') or {}).get('served')
                  and network_status(host, 'red'), what='red served')
    assert st['dnsmasq_pid'] == pid and st['adopted']
    faultlog.record('networks file corrupt when the agent starts (and stops)',
                    2, 'nothing torn down; the running dnsmasq adopted once '
                    'the file was good', leases_lost=0)


# -- 10.9: crash-looping dnsmasq ------------------------------------------------
def test_crash_looping_dnsmasq_is_restarted_with_back_off(host, lab):
    configure(host, retry_max=4)
    net, sub, (port,) = one_network(host, lab)
    qid = net['id']
    host.networks(('red', qid))
    agent = host.agent()
    first = agent.wait_served('red')['dnsmasq_pid']
    seen, stop = {first}, threading.Event()
    window = 10.0

    def killer():    # every dnsmasq of this network dies soon after start
        while not stop.is_set():
            pid = dnsmasq_pid(host, qid)
            if pid:
                seen.add(pid)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)
    thread = threading.Thread(target=killer)
    thread.start()
    try:
        time.sleep(window)
        st = agent.network('red')
    finally:
        stop.set()
        thread.join()
    starts = len(seen) - 1
    # without back-off: ~46 starts in 10 s; with it: 0, .5, 1, 2, 4, 4 s...
    assert starts <= 12, starts
    assert st['error'] and 'crashes' in st, st
    assert agent.proc.poll() is None
    st = agent.wait_served('red')
    assert lab.vm('red', port['mac_address']).dhcp()['ip'] == '10.10.0.10'
    faultlog.record('dnsmasq killed right after each start for %ds' % window,
                    starts, 'restarted %d times (back-off visible in status: '
                    'crashes, retry_in, error), served once it stayed up'
                    % starts)


# -- 10.14: two agents ---------------------------------------------------------
def test_second_agent_exits_and_leaves_the_first_ones_socket(host, lab):
    net, sub, (port,) = one_network(host, lab)
    host.networks(('red', net['id']))
    first = host.agent()
    first.wait_served('red')
    second = host.agent(start=False)
    second.start(wait=False)
    assert second.proc.wait(rig.HANG) == agent_mod.EXIT_ALREADY_RUNNING
    assert 'another vdsm-dhcp agent (pid %d)' % first.proc.pid in \
        second.log()
    st = first.status()
    assert st['pid'] == first.proc.pid
    assert first.network('red')['served']
    # a --cleanup refuses too, while an agent runs
    r = subprocess.run([os.path.join(rig.BIN, 'vdsm-dhcp-agent'),
                        '--config-file', host.conf_path, '--cleanup'],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == agent_mod.EXIT_ALREADY_RUNNING, r.stderr
    assert first.network('red')['served']
    from vdsm_dhcp.setdhcp import systemd
    assert systemd.EXIT_ALREADY_RUNNING == agent_mod.EXIT_ALREADY_RUNNING
    faultlog.record('a second agent (and a --cleanup) started beside a '
                    'running one', 2, 'each exited with status 3 and a clear '
                    'message; the first agent kept its socket and served')


# -- 10.17: PID reuse, foreign namespaces, temp files --------------------------
def _spawn_with_pid(pid, attempts=300):
    """A `sleep` whose PID is `pid` (free again), through ns_last_pid; None
    when other processes of the machine keep taking it first."""
    for _ in range(attempts):
        with open('/proc/sys/kernel/ns_last_pid', 'w') as f:
            f.write(str(pid - 1))
        proc = subprocess.Popen(['sleep', '600'])
        if proc.pid == pid:
            return proc
        proc.kill()
        proc.wait()
    return None


def test_stranger_with_a_reused_pid_is_never_signalled(host, lab):
    net, sub, (port,) = one_network(host, lab)
    qid = net['id']
    host.networks(('red', qid))
    first = host.agent()
    first.wait_served('red')
    first.kill()
    agent = host.agent()
    st = agent.wait_served('red')
    assert st['adopted']
    pid = st['dnsmasq_pid']
    stranger = None
    agent.proc.send_signal(signal.SIGSTOP)
    try:
        os.kill(pid, signal.SIGKILL)
        try:
            wait_for(lambda: not os.path.exists('/proc/%d' % pid),
                     timeout=10, what='the adopted dnsmasq reaped')
        except AssertionError:
            pytest.skip('nothing reaps orphans here: PID %d stays a zombie'
                        % pid)
        stranger = _spawn_with_pid(pid)
        if stranger is None:
            pytest.skip('could not get PID %d again (a busy machine)' % pid)
    finally:
        agent.proc.send_signal(signal.SIGCONT)
    try:
        # the agent must see its dnsmasq gone (not the stranger alive)...
        new = wait_for(lambda: agent.network('red')['dnsmasq_pid'] not in
                       (None, pid) and agent.network('red')['served'] and
                       agent.network('red')['dnsmasq_pid'],
                       what='a new dnsmasq')
        # ...and tear down only its own
        host.networks()
        agent.reload()
        wait_for(lambda: gone(new), what='the new dnsmasq stopped')
        wait_for(lambda: not os.path.exists('/run/netns/qdhcp-' + qid),
                 what='red torn down')
        assert stranger.poll() is None, 'the stranger was signalled'
    finally:
        stranger.kill()
        stranger.wait()
    faultlog.record('adopted dnsmasq killed and its PID taken by another '
                    'process, then the network torn down', 1,
                    'the stranger was never signalled; a new dnsmasq served '
                    'until the teardown')


def test_foreign_namespace_and_device_survive_clean_stale(host, lab):
    foreign_ns = 'qdhcp-' + rig.new_id()       # e.g. neutron-dhcp-agent's
    foreign_dev = 'vdhforeign0'
    netns.create(foreign_ns)
    lab.namespaces.append(foreign_ns)
    with IPRoute() as ipr:
        ipr.link('add', ifname=foreign_dev, kind='veth', peer='vdhforeign1')
    try:
        # ours, left by a killed agent, no longer listed: removed
        net, sub, (port,) = one_network(host, lab)
        host.networks(('red', net['id']))
        first = host.agent()
        first.wait_served('red')
        first.kill()
        host.networks()
        second = host.agent()
        wait_for(lambda: not os.path.exists('/run/netns/qdhcp-' + net['id']),
                 what='our stale namespace removed')
        second.stop()
        assert second.proc.returncode == 0
        r = subprocess.run([os.path.join(rig.BIN, 'vdsm-dhcp-agent'),
                            '--config-file', host.conf_path, '--cleanup'],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert foreign_ns in netns.listnetns()
        with IPRoute() as ipr:
            assert ipr.link_lookup(ifname=foreign_dev)
    finally:
        with IPRoute() as ipr:
            if ipr.link_lookup(ifname=foreign_dev):
                ipr.link('del', ifname=foreign_dev)
    faultlog.record('a qdhcp-* namespace and a vdh* device not made by us '
                    '(shared host), agent start with an empty list and '
                    '--cleanup', 2, 'both left alone; our own stale namespace '
                    'removed')


def test_temp_files_of_a_crashed_write_are_removed_at_start(host, lab):
    net, sub, (port,) = one_network(host, lab)
    qid = net['id']
    host.networks(('red', qid))
    first = host.agent()
    first.wait_served('red')
    first.kill()
    files = files_of(host, qid)
    leftovers = [os.path.join(files.base, '.opts.k2j4h5g6.tmp'),
                 os.path.join(files.tmp, '.batch-0123.abcdefgh.tmp')]
    for path in leftovers:
        with open(path, 'w') as f:
            f.write('half written')
    second = host.agent()
    second.wait_served('red')
    assert not any(os.path.exists(p) for p in leftovers)
    faultlog.record('temp files of an atomic write cut short by a crash',
                    len(leftovers), 'removed by the next agent at start')


# -- SIGKILL at random points of reconcile, under churn -------------------------
def test_agent_sigkill_at_random_points_under_churn(host, lab):
    rounds = 50
    rng = random.Random(1010)
    net, sub, stable = one_network(host, lab, vms=3)
    qid = net['id']
    host.networks(('red', qid))
    agent = host.agent()
    agent.wait_served('red')
    vms = [lab.vm('red', p['mac_address']) for p in stable]
    for i, vm in enumerate(vms):
        assert vm.dhcp()['ip'] == '10.10.0.%d' % (10 + i)
    pid = dnsmasq_pid(host, qid)
    agent.kill()
    churn, next_ip, leases_lost, started = [], 100, 0, 0
    for i in range(rounds):
        killed = host.agent(start=False)
        killed.start(wait=False)
        # from before its imports end to well into its reconcile rounds
        time.sleep(rng.uniform(0.05, 0.6))
        if churn and rng.random() < 0.4:
            host.ipam.remove(churn.pop(rng.randrange(len(churn))))
        else:
            churn.append(host.ipam.port(net, mac(0x50000 + next_ip),
                                        [(sub, '10.10.0.%d' % next_ip)]))
            next_ip += 1
        host.ipam.save()
        time.sleep(rng.uniform(0, 0.4))
        killed.kill()
        if 'agent started (pid %d,' % killed.proc.pid in killed.log():
            started += 1
        assert dnsmasq_pid(host, qid) == pid, 'round %d: dnsmasq gone' % i
        if i % 5 == 0:
            vm = vms[(i // 5) % len(vms)]
            if (vm.dhcp() or {}).get('ip') != '10.10.0.%d' % (
                    10 + vms.index(vm)):
                leases_lost += 1
    assert leases_lost == 0
    final = host.agent()
    expected = len(stable) + len(churn)
    st = wait_for(lambda: final.network('red')['served'] and
                  final.network('red')['hosts'] == expected and
                  final.network('red')['hosts_loaded'] == expected and
                  final.network('red'), what='converged')
    assert st['dnsmasq_pid'] == pid and st['restarts'] == 0
    for i, vm in enumerate(vms):
        assert vm.dhcp()['ip'] == '10.10.0.%d' % (10 + i)
    if churn:
        last = churn[-1]
        vm = lab.vm('red', last['mac_address'])
        assert vm.dhcp()['ip'] == last['fixed_ips'][0]['ip_address']
    assert not os.listdir(files_of(host, qid).tmp)
    faultlog.record('agent SIGKILL at a random point of start-up/reconcile '
                    'while ports are added and removed', rounds,
                    'converged; dnsmasq never restarted; %d hosts; %d of '
                    'the killed agents had reached their main loop'
                    % (expected, started),
                    leases_lost=leases_lost)


# -- a full and a read-only state_dir ------------------------------------------
def _mount(*args):
    subprocess.run(['mount'] + list(args), check=True, capture_output=True)


def _fill(directory):
    path = os.path.join(directory, 'filler')
    chunk = b'\0' * 65536
    with open(path, 'wb') as f:
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC
    return path


def test_full_and_read_only_state_dir_show_in_status_and_recover(host, lab):
    configure(host, retry_max=1)
    state = host.conf.state_dir
    os.makedirs(state, exist_ok=True)
    _mount('-t', 'tmpfs', '-o', 'size=4m,mode=0755', 'tmpfs', state)
    mounts = [state]
    agent = None
    try:
        net, sub, (port,) = one_network(host, lab)
        qid = net['id']
        host.networks(('red', qid))
        agent = host.agent()
        pid = agent.wait_served('red')['dnsmasq_pid']
        vm = lab.vm('red', port['mac_address'])
        assert vm.dhcp()['ip'] == '10.10.0.10'

        def add_port(n):
            p = host.ipam.port(net, mac(0x60000 + n), [(sub, '10.10.0.%d' % n)])
            host.ipam.save()
            return p

        def error_with(words):
            st = agent.network('red')
            return words in (st['error'] or '') and st

        # ENOSPC
        filler = _fill(state)
        new = add_port(60)
        wait_for(lambda: error_with('No space left'), what='ENOSPC in status')
        assert agent.proc.poll() is None
        assert vm.dhcp()['ip'] == '10.10.0.10'
        os.unlink(filler)
        wait_for(lambda: agent.network('red')['hosts'] == 2 and
                 not agent.network('red')['error'], what='recovered')
        assert lab.vm('red', new['mac_address']).dhcp()['ip'] == '10.10.0.60'
        # read-only, also across an agent restart
        _mount('--bind', state, state)
        mounts.append(state)
        _mount('-o', 'remount,bind,ro', state)
        new = add_port(61)
        wait_for(lambda: error_with('Read-only'), what='EROFS in status')
        agent.kill()
        agent = host.agent()
        wait_for(lambda: error_with('Read-only'), what='EROFS after restart')
        assert agent.proc.poll() is None
        assert agent.network('red')['dnsmasq_pid'] == pid
        assert vm.dhcp()['ip'] == '10.10.0.10'
        subprocess.run(['umount', mounts.pop()], check=True)
        wait_for(lambda: agent.network('red')['hosts'] == 3 and
                 not agent.network('red')['error'], what='recovered')
        assert lab.vm('red', new['mac_address']).dhcp()['ip'] == '10.10.0.61'
        assert agent.network('red')['dnsmasq_pid'] == pid
    finally:
        # tear down while the file system is still there
        host.networks()
        if agent is not None and agent.proc.poll() is None:
            agent.stop()
        host._sweep()
        for path in reversed(mounts):
            subprocess.run(['umount', '-l', path], capture_output=True)
    faultlog.record('state_dir full (ENOSPC), then read-only (also across an '
                    'agent restart)', 2, 'error in status, retried; the agent '
                    'never exited, dnsmasq kept serving, recovered when '
                    'writable', leases_lost=0)


def test_agent_starts_on_a_read_only_file_system_and_recovers(host, lab):
    """state_dir cannot even be created (read-only file system) when the
    agent starts: it runs, says why in status, and serves once it can."""
    ro = os.path.join(host.base, 'ro')
    os.makedirs(ro)
    _mount('-t', 'tmpfs', '-o', 'size=4m,mode=0755,ro', 'tmpfs', ro)
    configure(host, retry_max=1, state_dir=os.path.join(ro, 'state'))
    agent = None
    try:
        net, sub, (port,) = one_network(host, lab)
        host.networks(('red', net['id']))
        agent = host.agent()
        st = wait_for(lambda: 'Read-only' in (
            agent.network('red')['error'] or '') and agent.network('red'),
            what='EROFS in status')
        assert not st['served'] and agent.proc.poll() is None
        _mount('-o', 'remount,rw', ro)
        agent.wait_served('red')
        assert lab.vm('red', port['mac_address']).dhcp()['ip'] == '10.10.0.10'
    finally:
        host.networks()
        if agent is not None and agent.proc.poll() is None:
            agent.stop()
        host._sweep()
        subprocess.run(['umount', '-l', ro], capture_output=True)
    faultlog.record('agent started with a state_dir on a read-only file '
                    'system', 1, 'ran, error in status, retried; served once '
                    'writable')


def test_plug_checks_what_exists_and_writes_nothing_when_right(lab, tmp_path):
    """The veth driver in process: a second plug with everything in place
    touches no netlink; a deleted veth, a re-created bridge or a missing
    namespace is seen (sysfs, by ifindex) and repaired."""
    from vdsm_dhcp.model import InterfacePlan, namespace_name
    from vdsm_dhcp.host.veth import VethDriver
    lab.bridge('drift0')
    qid = rig.new_id()
    driver = VethDriver(str(tmp_path / 'marks'))
    iface = InterfacePlan(namespace_name(qid), 'drift0', mac(0xd1), (
        '10.77.0.2/24',))
    host_if = device_names(qid)[0]
    slow = []
    real_plug = driver._plug

    def counting(*args):
        slow.append(args)
        return real_plug(*args)
    driver._plug = counting
    try:
        driver.plug(qid, iface)
        driver.plug(qid, iface)
        assert len(slow) == 1          # all in place: no netlink at all
        with IPRoute() as ipr:
            ipr.link('del', ifname=host_if)
        driver.plug(qid, iface)
        assert len(slow) == 2
        lab.del_bridge('drift0')
        lab.bridge('drift0')
        driver.plug(qid, iface)
        assert len(slow) == 3
        with IPRoute() as ipr:
            master = ipr.get_links(ipr.link_lookup(ifname=host_if)[0])[0] \
                .get_attr('IFLA_MASTER')
            assert master == ipr.link_lookup(ifname='drift0')[0]
        driver.plug(qid, iface)
        assert len(slow) == 3
        namespaces, devices = driver.ours()
        assert namespace_name(qid) in namespaces and host_if in devices
    finally:
        driver.unplug(qid)
    assert namespace_name(qid) not in netns.listnetns()
    assert not os.listdir(str(tmp_path / 'marks'))
