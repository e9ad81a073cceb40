"""Two hosts serve one network: two agents, each with its own network and
mount namespaces (so both create qdhcp-<same uuid>), the same IPAM content
with one DHCP port per host, the two bridges `red` joined by a veth.

Host A is the test session's own isolated host (tests/isolated); host B is
tests/remote_host.py under `unshare --net --mount`, whose PID is B's agent.
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest
from pyroute2 import IPRoute

from vdsm_dhcp import options
from vdsm_dhcp.agent import control
from vdsm_dhcp.host.netns_exec import netns_preexec
from tests import rig
from tests.rig import mac, wait_for

REPO = os.path.dirname(rig.HERE)
UNSHARE = ['unshare', '--net', '--mount', '--propagation', 'private', '--']
MAC_A, MAC_B = mac(0xda0001), mac(0xdb0001)


def _del_link(name):
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=name)
        if index:
            ipr.link('del', index=index[0])


class RemoteHost:
    """Host B: a process of its own namespaces running vdsm-dhcp-agent."""

    def __init__(self, base, name='host-b'):
        self.base = base
        os.makedirs(base, mode=0o755, exist_ok=True)
        self.conf_path = rig.write_conf(os.path.join(base, 'vdsm-dhcp.conf'),
                                        base, host=name)
        self.conf = options.load(self.conf_path)
        self.ipam = rig.Ipam(self.conf.file.path)
        self.agent = rig.AgentProcess(self.conf_path, self.conf,
                                      os.path.join(base, 'agent.log'))
        self.uplink = None

    def networks(self, *pairs):
        rig.write_networks(self.base, pairs)

    def _remote_host(self, *args):
        return UNSHARE + [sys.executable, '-m', 'tests.remote_host',
                          '--config-file', self.conf_path] + list(args)

    def start(self, bridge, uplink_a='uplinka', uplink_b='uplinkb'):
        ready = os.path.join(self.base, 'ready')
        log = open(self.agent.log_path, 'ab')
        self.agent.proc = subprocess.Popen(
            self._remote_host('--bridge', bridge, '--uplink', uplink_b,
                              '--ready', ready),
            cwd=REPO, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        pid = self.agent.proc.pid

        def bridge_ready():
            if self.agent.proc.poll() is not None:
                raise AssertionError('host B exited:\n' + self.agent.log())
            return os.path.exists(ready)
        wait_for(bridge_ready, what="host B's bridge")
        assert os.readlink('/proc/%d/ns/net' % pid) != \
            os.readlink('/proc/self/ns/net')
        # the wire between the hosts: A's end on A's bridge, B's end moved
        # into B's network namespace (B enslaves it to its bridge)
        self.uplink = uplink_a
        with IPRoute() as ipr:
            ipr.link('add', ifname=uplink_a, kind='veth',
                     peer={'ifname': uplink_b})
            ipr.link('set', index=ipr.link_lookup(ifname=uplink_b)[0],
                     net_ns_pid=pid)
            ipr.link('set', index=ipr.link_lookup(ifname=uplink_a)[0],
                     master=ipr.link_lookup(ifname=bridge)[0], state='up')
        wait_for(self.agent.answers, what="host B's agent")
        return self.agent

    def close(self):
        """Tear down as an operator would (empty list, SIGTERM), then by
        force: B's PID, the uplink, B's leftover dnsmasq (it would keep
        B's namespaces alive)."""
        proc = self.agent.proc
        try:
            rig.write_networks(self.base, [])
            if proc and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
        finally:
            if proc and proc.poll() is None:
                proc.kill()
                proc.wait()
            if self.uplink:
                _del_link(self.uplink)
            # --cleanup on an empty private host: only B's state dir is
            # looked at (run here, it would remove A's qdhcp-* namespaces)
            subprocess.run(self._remote_host('--cleanup'), cwd=REPO,
                           timeout=60, capture_output=True)
            rig.kill_leftover_dnsmasq(self.conf.state_dir)


@pytest.fixture
def remote(host, lab):
    base = tempfile.mkdtemp(prefix='vdsm-dhcp-test-')
    os.chmod(base, 0o755)
    remote = RemoteHost(os.path.join(base, 'host-b'))
    try:
        yield remote
    finally:
        try:
            remote.close()
        finally:
            shutil.rmtree(base, ignore_errors=True)


def shared_network(host, remote, lab):
    """One network in both IPAM files, same content: a DHCP port for each
    host (own MAC and IP), one VM port."""
    ipam = host.ipam
    net = ipam.network(mtu=1500)
    sub = ipam.subnet(net, '10.40.0.0/24', gateway='10.40.0.1',
                      dns=['10.40.0.53'])
    ipam.dhcp_port(net, MAC_A, [(sub, '10.40.0.2')], host='host-a')
    ipam.dhcp_port(net, MAC_B, [(sub, '10.40.0.3')], host='host-b')
    port = ipam.port(net, mac(0x50001), [(sub, '10.40.0.10')])
    remote.ipam.networks = ipam.networks
    remote.ipam.subnets = ipam.subnets
    remote.ipam.ports = ipam.ports
    ipam.save()
    remote.ipam.save()
    lab.bridge('red')
    host.networks(('red', net['id']))
    remote.networks(('red', net['id']))
    return net, port


def dnsmasq_file(conf, net, name):
    try:
        with open(os.path.join(conf.state_dir, net['id'], name)) as f:
            return f.read()
    except FileNotFoundError:
        return ''


def test_two_hosts_serve_one_network_identically(host, remote, lab):
    net, port = shared_network(host, remote, lab)
    namespace = 'qdhcp-' + net['id']
    agent_b = remote.start('red')
    agent_a = host.agent()
    st_a = agent_a.wait_served('red')
    st_b = agent_b.wait_served('red')
    assert st_a['dhcp_ips'] == ['10.40.0.2/24']
    assert st_b['dhcp_ips'] == ['10.40.0.3/24']
    assert st_a['namespace'] == st_b['namespace'] == namespace
    assert st_a['hosts'] == st_b['hosts'] == 1
    status_b = control.call(remote.conf, 'status')
    assert status_b['host'] == 'host-b'
    assert status_b['pid'] == agent_b.proc.pid     # B's process is B's agent
    assert st_a['dnsmasq_pid'] != st_b['dnsmasq_pid']
    # each host has its own /run/netns: B's qdhcp namespace is not A's
    assert os.path.exists('/run/netns/' + namespace)
    assert os.readlink('/proc/%d/ns/net' % st_a['dnsmasq_pid']) != \
        os.readlink('/proc/%d/ns/net' % st_b['dnsmasq_pid'])

    # both up: each dnsmasq offers the VM the same address, and the VM
    # takes it from whichever answered first
    vm = lab.vm('red', port['mac_address'])
    assert vm.offers() == [('10.40.0.2', '10.40.0.10'),
                           ('10.40.0.3', '10.40.0.10')]
    lease = vm.dhcp()
    assert lease is not None, agent_a.log() + agent_b.log()
    assert lease['ip'] == '10.40.0.10'
    assert lease['serverid'] in ('10.40.0.2', '10.40.0.3')

    # A's agent stops with an empty list: A's DHCP is gone, B alone serves
    host.networks()
    agent_a.stop()
    assert not os.path.exists('/run/netns/' + namespace)
    assert agent_b.network('red')['served']
    lease = vm.dhcp()
    assert lease is not None, agent_b.log()
    assert (lease['ip'], lease['serverid']) == ('10.40.0.10', '10.40.0.3')
    assert ' %s 10.40.0.10 ' % port['mac_address'] in dnsmasq_file(
        remote.conf, net, 'leases')

    # and vice versa: A back, B drops the network (told over its control
    # socket) and keeps running
    host.networks(('red', net['id']))
    agent_a = host.agent()
    agent_a.wait_served('red')
    remote.networks()
    assert control.call(remote.conf, 'sync')['queued']
    wait_for(lambda: control.call(remote.conf, 'status')['networks'] == [],
             what='B drops the network')
    wait_for(lambda: not os.path.exists(
        os.path.join(remote.conf.state_dir, net['id'])),
        what="B's dnsmasq state removed")
    assert not os.path.exists('/proc/%d' % st_b['dnsmasq_pid'])
    assert agent_b.proc.poll() is None
    lease = vm.dhcp()
    assert lease is not None, agent_a.log()
    assert (lease['ip'], lease['serverid']) == ('10.40.0.10', '10.40.0.2')
    assert ' %s 10.40.0.10 ' % port['mac_address'] in dnsmasq_file(
        host.conf, net, 'leases')


class Dhclient4:
    """dhclient (IPv4) in a VM with a lease database that survives runs, as
    in a real guest: a second run starts with INIT-REBOOT (a broadcast
    REQUEST of its last address, no server id)."""

    def __init__(self, vm, reboot_timeout=3):
        self.vm = vm
        self.leases = vm.out + '.dhclient4.leases'
        self.conf = vm.out + '.dhclient4.conf'
        with open(self.conf, 'w') as f:
            # INIT-REBOOT gives up after this many seconds, then DISCOVER
            f.write('reboot %d;\n' % reboot_timeout)

    def run(self, timeout=30):
        """(lease env or None, seconds until bound)."""
        out = self.vm.out
        try:
            os.unlink(out)
        except FileNotFoundError:
            pass
        argv = ['dhclient', '-4', '-d', '-v', '-cf', self.conf,
                '-sf', rig.DHCP_SCRIPT, '-lf', self.leases,
                '-pf', out + '.dhclient4.pid',
                '-e', 'VDSM_DHCP_LEASE_OUT=' + out, 'eth0']
        log_path = out + '.dhclient4.log'
        with open(log_path, 'ab') as log, \
                netns_preexec(self.vm.ns) as enter:
            start_of_log = log.tell()
            proc = subprocess.Popen(argv, preexec_fn=enter, stdout=log,
                                    stderr=log, stdin=subprocess.DEVNULL,
                                    cwd=self.vm.lab.dir)
        started = time.monotonic()

        def bound():
            # "bound to" comes after the lease database is written: ended
            # earlier, the next run would not know its lease
            with open(log_path, 'rb') as f:
                f.seek(start_of_log)
                return b'bound to ' in f.read()
        try:
            took = None
            while proc.poll() is None and \
                    time.monotonic() - started < timeout:
                if took is None and os.path.exists(out):
                    took = time.monotonic() - started
                if took is not None and bound():
                    break
                time.sleep(0.01)
        finally:
            rig.stop_process(proc)
        return (rig.read_env(out) if os.path.exists(out) else None), took


def test_vm_leased_by_a_is_acked_by_b_when_it_reboots(host, remote, lab):
    net, port = shared_network(host, remote, lab)
    remote.networks()                    # B runs, not serving this network
    agent_b = remote.start('red')
    agent_a = host.agent()
    agent_a.wait_served('red')
    vm = lab.vm('red', port['mac_address'])
    client = Dhclient4(vm)
    lease, _ = client.run()
    assert lease is not None, agent_a.log()
    assert (lease['new_ip_address'], lease['new_dhcp_server_identifier']) \
        == ('10.40.0.10', '10.40.0.2')
    # B serves the network (the port was in its IPAM from the start); A
    # goes away with an empty list
    remote.networks(('red', net['id']))
    control.call(remote.conf, 'sync')
    agent_b.wait_served('red')
    host.networks()
    agent_a.stop()
    # the VM reboots: B does give it its address, but only after the
    # client gave up INIT-REBOOT and started over with DISCOVER
    lease, took = client.run(timeout=45)
    assert lease is not None, agent_b.log()
    assert (lease['new_ip_address'], lease['new_dhcp_server_identifier']) \
        == ('10.40.0.10', '10.40.0.3')
    assert lease['reason'] == 'REBOOT', (
        'B ignored the INIT-REBOOT REQUEST; bound by %s after %.1fs'
        % (lease['reason'], took))
