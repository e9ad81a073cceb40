"""200 networks on one host with the kernel's default inotify limit (128):
every dnsmasq takes an inotify instance charged to root, so the agent
raises fs.inotify.max_user_instances at start (only upward, logged).

The limit is host-wide, shared with whatever else runs on this machine:
the fixture puts back the value it found, also when the test fails."""
import logging
import os
import re

import pytest

from tests.rig import HANG, mac, wait_for
from vdsm_dhcp.agent import lifecycle

NETWORKS, PORTS = 200, 2
RAISED = re.compile(r'raised fs\.inotify\.max_user_instances (\d+) -> (\d+)')


def read_limit():
    with open(lifecycle.INOTIFY_LIMIT) as f:
        return int(f.read())


@pytest.fixture
def inotify_limit():
    """The host's limit before the test; written back afterwards when our
    agent raised it and nobody changed it since (a later change is
    someone else's: theirs to undo)."""
    original = read_limit()
    raised = []       # the value our agent set, once the test knows it
    try:
        yield original, raised
    finally:
        now = read_limit()
        if raised and now == raised[0] and now != original:
            with open(lifecycle.INOTIFY_LIMIT, 'w') as f:
                f.write('%d\n' % original)


def many_networks(host, lab, count, ports):
    """`count` networks, a /24 each, a DHCP port of this host and `ports`
    VM ports; bridges made, IPAM saved, all listed."""
    ipam, listed = host.ipam, []
    for i in range(count):
        prefix = '10.%d.%d' % (100 + i // 250, i % 250)
        net = ipam.network()
        sub = ipam.subnet(net, prefix + '.0/24', gateway=prefix + '.1',
                          dns=[prefix + '.53'])
        ipam.dhcp_port(net, mac(0xd00000 + i), [(sub, prefix + '.2')],
                       host='host-a')
        for k in range(ports):
            ipam.port(net, mac(0x100000 + i * 256 + k),
                      [(sub, '%s.%d' % (prefix, 10 + k))])
        name = 'n%s%d' % (lab.tag, i)
        lab.bridge(name)
        listed.append((name, net['id']))
    ipam.save()
    host.networks(*listed)
    return listed


def test_200_networks_are_served_past_the_default_inotify_limit(
        inotify_limit, host, lab):
    original, raised = inotify_limit
    listed = many_networks(host, lab, NETWORKS, PORTS)
    agent = host.agent()

    def all_served():
        st = agent.answers()      # None while busy past its timeout
        if not st:
            return None
        st = st['networks']
        # the bug this test names: fail at once, not at the hang bound
        short = [n['error'] for n in st if 'inotify' in (n['error'] or '')]
        assert not short, '%d networks: %s' % (len(short), short[0])
        done = [n for n in st if n['served'] and n['hosts'] == PORTS and
                n.get('hosts_loaded') == PORTS]
        return len(done) == NETWORKS and st
    # a hang bound for 200 dnsmasq starts on a busy 2-core machine
    try:
        networks = wait_for(all_served, 6 * HANG, interval=0.2,
                            what='%d networks served' % NETWORKS)
    finally:
        found = RAISED.search(agent.log())
        if found:
            raised.append(int(found.group(2)))
    assert {n['name'] for n in networks} == {name for name, _ in listed}
    assert len({n['dnsmasq_pid'] for n in networks}) == NETWORKS
    assert not [n for n in networks if n['error'] or n.get('restarts')]
    if original >= NETWORKS + lifecycle.INOTIFY_HOST_SHARE:
        # someone else raised it already on this shared machine: nothing
        # to raise, and nothing was
        assert not found, agent.log()
        return
    assert found, agent.log()
    assert int(found.group(1)) == original
    assert int(found.group(2)) == read_limit() >= lifecycle.INOTIFY_RAISE_TO


# -- the decision alone, on a file standing in for the sysctl -------------------
def test_room_is_made_only_when_needed_and_only_upward(tmp_path, caplog):
    limit = tmp_path / 'max_user_instances'
    limit.write_text('128\n')
    caplog.set_level(logging.INFO, logger='vdsm_dhcp.agent')
    # 60 dnsmasq fit in 128 beside the host's share of 64: untouched
    assert lifecycle.check_inotify_room(60, str(limit)) is None
    assert limit.read_text() == '128\n' and not caplog.records
    assert lifecycle.check_inotify_room(200, str(limit)) is None
    assert limit.read_text() == '1024\n'
    assert RAISED.search(caplog.text).groups() == ('128', '1024')
    caplog.clear()
    # past 1024, twice the need: more shards later need no new raise
    assert lifecycle.check_inotify_room(1000, str(limit)) is None
    assert limit.read_text() == '%d\n' % (2 * (1000 + 64))
    # a higher value of the admin's is never lowered
    limit.write_text('100000\n')
    assert lifecycle.check_inotify_room(1000, str(limit)) is None
    assert limit.read_text() == '100000\n'


def test_a_limit_that_cannot_be_raised_is_a_clear_error(caplog):
    # a read-only sysctl (0444: even root cannot write it) stands in for
    # a host where /proc/sys is read-only (a container)
    path = '/proc/sys/kernel/ngroups_max'
    if not os.path.exists(path):
        pytest.skip('no %s here' % path)
    with open(path) as f:
        limit = int(f.read())
    problem = lifecycle.check_inotify_room(limit, path)
    assert problem and 'failed to create inotify' in problem
    assert 'raising it to %d failed' % (2 * (limit + 64)) in problem
    assert [r.levelname for r in caplog.records] == ['ERROR']
    with open(path) as f:
        assert int(f.read()) == limit
