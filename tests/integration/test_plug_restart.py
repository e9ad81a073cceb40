"""An agent restart adopts running networks by checking, not re-plumbing:
no netlink write, no process forked, no link or address event on the host
or in any namespace, every dnsmasq kept; and drift made while no agent ran
is still repaired."""
import os
import re
import shutil
import socket
import subprocess

import pytest
from pyroute2 import IPRoute, netns
from pyroute2.netlink.rtnl.marshal import MarshalRtnl

from tests import rig
from tests.integration.test_agent_e2e import one_network
from tests.rig import wait_for
from vdsm_dhcp.host.interface import device_names
from vdsm_dhcp.host.netns_exec import netns_preexec

RTMGRP_LINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR = 0x1, 0x10, 0x100
# RTM_NEWLINK, DELLINK, SETLINK, NEWADDR, DELADDR
WRITES = {16: 'RTM_NEWLINK', 17: 'RTM_DELLINK', 19: 'RTM_SETLINK',
          20: 'RTM_NEWADDR', 21: 'RTM_DELADDR'}
NETWORKS = 3


def in_namespace(namespace, make):
    """make() run in the namespace (None: here): a socket made there stays
    there (the test's main thread; pyroute2's pushns/popns)."""
    if namespace is None:
        return make()
    netns.pushns(namespace)
    try:
        return make()
    finally:
        netns.popns()


def ns_iproute(namespace):
    sock = in_namespace(namespace, lambda: socket.socket(
        socket.AF_NETLINK, socket.SOCK_DGRAM, 0))
    return IPRoute(use_socket=sock), sock


class Events:
    """Link and address events of one network namespace, from a socket
    bound before anything happens (none can be missed)."""

    def __init__(self, namespace=None):
        self.where = namespace or 'host'
        self.sock = in_namespace(namespace, self._socket)

    @staticmethod
    def _socket():
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
        sock.setblocking(False)
        return sock

    def read(self):
        """What came since the socket was bound, as readable strings."""
        seen = []
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                return seen
            for msg in MarshalRtnl().parse(data):
                name = msg.get_attr('IFLA_IFNAME') or \
                    msg.get_attr('IFA_ADDRESS') or ''
                seen.append('%s: %s %s' % (
                    self.where, WRITES.get(msg['header']['type'],
                                           msg['header']['type']), name))

    def close(self):
        self.sock.close()


def settled(namespaces):
    """No IPv6 address still tentative on the host or in a namespace:
    the end of duplicate address detection is an RTM_NEWADDR of the
    kernel's own, which must not count against the agent."""
    argv = ['ip', '-6', '-o', 'addr', 'show', 'tentative']
    for ns in [None] + namespaces:
        if ns is None:
            out = subprocess.run(argv, capture_output=True, timeout=30)
        else:
            with netns_preexec(ns) as enter:
                out = subprocess.run(argv, capture_output=True, timeout=30,
                                     preexec_fn=enter)
        if out.stdout.strip():
            return False
    return True


def serve(host, lab, count=NETWORKS):
    pairs = []
    for i in range(count):
        name = 'rs%d' % i
        net, _, _ = one_network(host, lab, name=name,
                                cidr='10.%d.0.0/24' % (80 + i),
                                prefix='10.%d.0' % (80 + i))
        pairs.append((name, net['id']))
    host.networks(*pairs)
    agent = host.agent()
    pids = {name: agent.wait_served(name)['dnsmasq_pid']
            for name, _ in pairs}
    agent.stop()
    return pairs, pids


def traced_agent(host, trace):
    """An agent run under strace (its netlink requests and forks), as
    AgentProcess runs it otherwise."""
    agent = host.agent(start=False)
    with open(agent.log_path, 'ab') as log:
        agent.proc = subprocess.Popen(
            ['strace', '-f', '-qq', '-o', trace, '-e', 'signal=none',
             '-e', 'trace=sendto,sendmsg,clone,clone3,fork,vfork,execve',
             os.path.join(rig.BIN, 'vdsm-dhcp-agent'), '--config-file',
             host.conf_path], stdout=log, stderr=log,
            stdin=subprocess.DEVNULL)
    return agent


def stop_traced(agent):
    """SIGTERM to the agent itself (strace's child): strace then ends."""
    kids = '/proc/%d/task/%d/children' % (agent.proc.pid, agent.proc.pid)
    try:
        with open(kids) as f:
            pids = [int(p) for p in f.read().split()]
    except OSError:
        pids = []
    for pid in pids:
        os.kill(pid, 15)
    agent.proc.wait(60)


def netlink_writes(trace):
    """Netlink requests that change something, from strace's decoding
    (types by name, or by number where strace did not know the family)."""
    names = {v: v for v in WRITES.values()}
    names.update({'0x%x' % k: v for k, v in WRITES.items()})
    found = []
    with open(trace) as f:
        for line in f:
            for t in re.findall(r'nlmsg_type=(RTM_\w+|0x[0-9a-f]+)', line):
                if t in names:
                    found.append(names[t])
    return found


def forks(trace):
    """The processes forked (threads aside), as (pid, program it ran or
    None), from strace -f output; a call strace split in two
    (<unfinished ...> / <... resumed>) is joined first."""
    pending, children, ran = {}, [], {}
    with open(trace) as f:
        for line in f:
            pid, _, call = line.rstrip('\n').partition(' ')
            if call.endswith('<unfinished ...>'):
                pending[pid] = call[:-len('<unfinished ...>')]
                continue
            if call.startswith('<... '):
                call = pending.pop(pid, '') + call.partition('resumed>')[2]
            m = re.match(r'(clone3?|fork|vfork)\(.*= (\d+)$', call)
            if m and 'CLONE_THREAD' not in call:
                children.append(m.group(2))
            m = re.match(r'execve\("([^"]*)"', call)
            if m:
                ran.setdefault(pid, m.group(1))
    return [(child, ran.get(child)) for child in children]


@pytest.fixture
def strace():
    if not shutil.which('strace'):
        pytest.fail('strace is needed (scripts/install-deps installs it)',
                    pytrace=False)


def test_restart_adopts_with_no_netlink_write_fork_or_event(host, lab, strace,
                                                            tmp_path):
    pairs, pids = serve(host, lab)
    namespaces = ['qdhcp-' + q for _, q in pairs]
    wait_for(lambda: settled(namespaces), what='IPv6 DAD settled')
    monitors = [Events()] + [Events(ns) for ns in namespaces]
    trace = str(tmp_path / 'strace.txt')   # (under a 0700 tmp dir)
    agent = traced_agent(host, trace)
    try:
        wait_for(agent.answers, rig.HANG, what='agent control socket')
        for name, _ in pairs:
            st = agent.wait_served(name)
            assert st['adopted'] and st['dnsmasq_pid'] == pids[name], st
            assert st['restarts'] == 0
    finally:
        stop_traced(agent)
    events = [e for m in monitors for e in m.read()]
    for m in monitors:
        m.close()
    assert events == [], events
    assert netlink_writes(trace) == []
    # the old way forked a pyroute2 helper per namespace opened (twice per
    # network); what is left is a library lookup at import (ctypes
    # find_library runs ldconfig: host/inotify.py, pyudev), once per start
    forked = [(pid, prog) for pid, prog in forks(trace)
              if prog != '/sbin/ldconfig']
    assert forked == [], forked
    # and the agent did check each namespace (reads: RTM_GETADDR)
    with open(trace) as f:
        assert len(re.findall(r'nlmsg_type=(RTM_GETADDR|0x16)\b',
                              f.read())) >= NETWORKS


def test_drift_made_while_down_is_repaired_at_restart(host, lab):
    pairs, pids = serve(host, lab, count=2)
    (name, qid), (other, _) = pairs
    ns = 'qdhcp-' + qid
    host_if, ns_if = device_names(qid)
    # while no agent runs: the namespace end loses its address and goes
    # down, lo goes down, the host end leaves its bridge
    ipr, sock = ns_iproute(ns)
    with ipr:
        index = ipr.link_lookup(ifname=ns_if)[0]
        ipr.addr('del', index=index, address='10.80.0.2', prefixlen=24)
        ipr.link('set', index=index, state='down')
        ipr.link('set', index=ipr.link_lookup(ifname='lo')[0], state='down')
    sock.close()
    with IPRoute() as ipr:
        ipr.link('set', index=ipr.link_lookup(ifname=host_if)[0], master=0)
    agent = host.agent()
    st = agent.wait_served(name)
    assert st['dhcp_ips'] == ['10.80.0.2/24']
    ipr, sock = ns_iproute(ns)
    with ipr:
        link = ipr.link('get', ifname=ns_if)[0]
        assert link['flags'] & 1
        assert ipr.link('get', ifname='lo')[0]['flags'] & 1
        assert [a.get_attr('IFA_ADDRESS')
                for a in ipr.get_addr(index=link['index'], family=2)] == \
            ['10.80.0.2']
    sock.close()
    with IPRoute() as ipr:
        bridge = ipr.link_lookup(ifname=name)[0]
        assert ipr.link('get', ifname=host_if)[0].get_attr(
            'IFLA_MASTER') == bridge
    # served again for real: a VM gets its lease from the repaired side;
    # the untouched network kept its dnsmasq
    port = next(p for p in host.ipam.ports
                if p['network_id'] == qid and
                p['device_owner'] == 'compute:nova')
    assert lab.vm(name, port['mac_address']).dhcp()['ip'] == '10.80.0.10'
    assert agent.network(other)['dnsmasq_pid'] == pids[other]


def _inode(path):
    return os.stat(path).st_ino


def test_thread_namespace_switch_always_returns_and_moves_no_one_else(lab):
    import threading
    from vdsm_dhcp.host.netns_exec import create_netns, remove_netns, \
        thread_in_netns
    name = 'h1t-' + lab.tag
    own = _inode('/proc/thread-self/ns/net')
    create_netns(name)
    try:
        made = _inode('/run/netns/' + name)
        assert made != own
        assert _inode('/proc/thread-self/ns/net') == own
        other = []
        inside = threading.Event()
        leave = threading.Event()

        def watch():
            inside.wait(30)
            other.append(_inode('/proc/thread-self/ns/net'))
            leave.set()
        watcher = threading.Thread(target=watch)
        watcher.start()
        with pytest.raises(RuntimeError):
            with thread_in_netns(name):
                assert _inode('/proc/thread-self/ns/net') == made
                inside.set()
                leave.wait(30)
                raise RuntimeError('boom')
        watcher.join(30)
        assert other == [own]            # the other thread never moved
        assert _inode('/proc/thread-self/ns/net') == own
        with pytest.raises(FileNotFoundError):
            with thread_in_netns(name + '-missing'):
                pass
        assert _inode('/proc/thread-self/ns/net') == own
    finally:
        remove_netns(name)
    assert not os.path.exists('/run/netns/' + name)


def test_one_host_socket_per_thread_and_a_broken_one_is_replaced(tmp_path):
    import concurrent.futures
    from vdsm_dhcp.host.veth import VethDriver
    driver = VethDriver(str(tmp_path))

    def socket_of_this_thread():
        with driver._host() as ipr:
            return ipr
    first = socket_of_this_thread()
    assert socket_of_this_thread() is first
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        theirs = set(pool.map(lambda _: socket_of_this_thread(), range(20)))
    assert first not in theirs and len(theirs) <= 2
    # a socket broken under us: that call fails, the next one works on a
    # new socket
    first.close()
    with pytest.raises(Exception):
        driver.ours()
    assert driver.ours()[0] == set()
    assert socket_of_this_thread() is not first
    driver.close()
    assert driver._sockets == set()
