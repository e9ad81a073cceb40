"""Shards, without root: who serves a MAC, how many shards, how the planner
splits a big network, and the DHCPRELEASE the agent sends."""
import ipaddress
import struct

from vdsm_dhcp import shards
from vdsm_dhcp.agent.desired import compute
from vdsm_dhcp.dnsmasq import conf as dnsmasq_conf
from vdsm_dhcp.dnsmasq import release
from vdsm_dhcp.host.interface import device_names
from vdsm_dhcp.model import HostEntry, Snapshot
from vdsm_dhcp.setdhcp.networks_file import Network

NET = '11111111-2222-4333-8444-555555555555'
SUB = 'aaaaaaaa-0000-4000-8000-000000000004'


def mac(n):
    return 'fa:16:3e:%02x:%02x:%02x' % (n >> 16 & 255, n >> 8 & 255,
                                        n & 255)


MACS = [mac(n) for n in range(3000)]


def test_owner_is_stable_and_spreads_evenly():
    keys = ['k%d' % i for i in range(4)]
    owners = [shards.owner(m, keys) for m in MACS]
    # the same answer whatever the order of the keys or the process
    assert owners == [shards.owner(m, list(reversed(keys))) for m in MACS]
    counts = {k: owners.count(k) for k in keys}
    assert all(600 <= c <= 900 for c in counts.values()), counts
    assert shards.owner('FA:16:3E:00:00:01', keys) == \
        shards.owner('fa:16:3e:00:00:01', keys)


def test_adding_a_shard_moves_only_the_hosts_it_wins():
    before = ['k%d' % i for i in range(4)]
    after = before + ['k4']
    moved = [m for m in MACS
             if shards.owner(m, before) != shards.owner(m, after)]
    # every moved host goes to the new shard, and about 1/5 move
    assert {shards.owner(m, after) for m in moved} == {'k4'}
    assert 450 <= len(moved) <= 750, len(moved)
    # removing it again moves exactly those back
    assert [m for m in MACS if shards.owner(m, after) == 'k4'] == moved


def test_shard_count_grows_at_once_and_shrinks_late():
    need = shards.shards_needed
    assert need(0, 600, 8) == need(600, 600, 8) == 1
    assert need(601, 600, 8) == 2
    assert need(10000, 600, 8) == 8            # clamped to the ports there
    assert need(10000, 600, 0) == 1            # at least the network's own
    # hovering around a boundary does not move hosts back and forth
    assert need(590, 600, 8, previous=2) == 2
    assert need(481, 600, 8, previous=2) == 2
    assert need(480, 600, 8, previous=2) == 1
    assert need(1300, 600, 8, previous=2) == 3


def test_assignment_memo_gives_the_same_owners():
    memo = shards.Assignment()
    keys = ['a', 'b', 'c']
    memo.use(keys)
    assert [memo.owner(m) for m in MACS[:500]] == \
        [shards.owner(m, keys) for m in MACS[:500]]
    # other keys: recomputed, not the old answers
    memo.use(['a', 'b'])
    assert [memo.owner(m) for m in MACS[:500]] == \
        [shards.owner(m, ['a', 'b']) for m in MACS[:500]]


def port(pid, mac_address, ip, owner='compute:nova', host=''):
    return {'id': pid, 'network_id': NET, 'mac_address': mac_address,
            'device_owner': owner, 'binding:host_id': host,
            'fixed_ips': [{'subnet_id': SUB, 'ip_address': ip}]}


def snapshot(vms, dhcp_ports=3, other_host_ports=1):
    ports = [port('dhcp-%d' % k, mac(0xd0000 + k), '10.0.0.%d' % (2 + k),
                  'network:dhcp', 'host-a') for k in range(dhcp_ports)]
    ports += [port('other-%d' % k, mac(0xe0000 + k), '10.0.0.%d' % (20 + k),
                   'network:dhcp', 'host-b')
              for k in range(other_host_ports)]
    ports += [port('vm-%d' % i, mac(i), str(ipaddress.ip_address(
        '10.0.1.0') + i)) for i in range(vms)]
    return Snapshot.from_lists(
        [{'id': NET, 'admin_state_up': True}],
        [{'id': SUB, 'network_id': NET, 'cidr': '10.0.0.0/16',
          'ip_version': 4, 'enable_dhcp': True, 'gateway_ip': '10.0.0.1'}],
        ports)


def plan(snap, shard_size=10, memo=None):
    return compute([Network('red', NET)], snap, {'red'}, 'host-a', memo,
                   shard_size)[NET]


def test_small_network_is_one_dnsmasq_as_before():
    p = plan(snapshot(10))
    assert [s.unit for s in p.shards] == [NET]
    assert p.shards[0].interface == p.interface
    assert p.shards[0].hosts is p.hosts and not p.sharded


def test_big_network_split_over_this_hosts_dhcp_ports():
    p = plan(snapshot(25))
    assert [s.unit for s in p.shards] == [NET, NET + '.dhcp-1',
                                          NET + '.dhcp-2']
    assert [s.interface.addresses for s in p.shards] == [
        ('10.0.0.2/16',), ('10.0.0.3/16',), ('10.0.0.4/16',)]
    assert [s.interface.namespace for s in p.shards] == [
        'qdhcp-' + s.unit for s in p.shards]
    # every host in exactly one shard: the rendezvous owner's
    union = {}
    for s in p.shards:
        assert not set(union) & set(s.hosts)
        union.update(s.hosts)
        for port_id, entry in s.hosts.items():
            assert shards.owner(entry.mac, ['dhcp-0', 'dhcp-1', 'dhcp-2']) \
                == {NET: 'dhcp-0'}.get(s.unit, s.unit.split('.', 1)[-1])
            assert p.unit_of(port_id) == s.unit
    assert union == p.hosts
    # another host's DHCP port is never a shard of ours
    assert not any('other' in s.unit for s in p.shards)
    # shard devices differ from each other and from a small network's
    assert len({device_names(s.unit)[0] for s in p.shards}) == 3
    assert all(len(name) <= 15 for s in p.shards
               for name in device_names(s.unit))


def test_too_few_dhcp_ports_is_a_problem_not_a_failure():
    p = plan(snapshot(45, dhcp_ports=2))
    assert len(p.shards) == 2 and len(p.hosts) == 45
    assert any('45 hosts need 5 DHCP ports' in x for x in p.problems)


def test_memo_keeps_the_count_while_the_network_hovers():
    memo = {}
    assert len(plan(snapshot(11), memo=memo).shards) == 2
    assert len(plan(snapshot(9), memo=memo).shards) == 2
    assert len(plan(snapshot(7), memo=memo).shards) == 1
    # without the memo the result is computed afresh (no hysteresis)
    assert len(plan(snapshot(9)).shards) == 1


def test_sharded_command_line_is_authoritative():
    from vdsm_dhcp import options
    conf = options.load([])
    p = plan(snapshot(25))
    files = dnsmasq_conf.Files('/state', p.shards[1].unit)
    argv = dnsmasq_conf.command_line(conf, p, files, 'vdnx', sharded=True)
    assert '--dhcp-authoritative' in argv
    assert '--dhcp-ignore=tag:!known,tag:!dhcpv6' in argv
    assert '--dhcp-authoritative' not in dnsmasq_conf.command_line(
        conf, plan(snapshot(3)), files, 'vdnx')


def test_release_packet_is_what_dhcp_release_sends():
    data = release.release_packet('fa:16:3e:00:00:10', '10.0.0.10',
                                  '10.0.0.2', xid=0x1234)
    op, htype, hlen, hops, xid = struct.unpack('!BBBBI', data[:8])
    assert (op, htype, hlen, hops, xid) == (1, 1, 6, 0, 0x1234)
    assert data[12:16] == bytes([10, 0, 0, 10])           # ciaddr
    assert data[28:34] == bytes.fromhex('fa163e000010')   # chaddr
    assert data[236:240] == b'\x63\x82\x53\x63'
    assert data[240:] == bytes([53, 1, 7, 54, 4, 10, 0, 0, 2, 255])


def test_removed_entries_and_the_leases_to_release():
    ip = ipaddress.ip_address
    a = HostEntry('a', 'fa:16:3e:00:00:0a', (ip('10.0.0.10'),), 'a')
    b = HostEntry('b', 'fa:16:3e:00:00:0b', (ip('10.0.0.11'),), 'b')
    b2 = HostEntry('b', 'fa:16:3e:00:00:0b', (ip('10.0.0.12'),), 'b')
    written = {'a': ('a', a), 'b': ('b', b), 'x': ('f', 'stale text')}
    assert release.removed(written, {'a': a, 'b': b}) == ({}, [])
    # a gone: its MAC dropped and its lease released; b readdressed: only
    # its old lease (dnsmasq still knows its MAC)
    assert release.removed(written, {'b': b2}) == (
        {'a': 'fa:16:3e:00:00:0a'},
        [('fa:16:3e:00:00:0a', ip('10.0.0.10')),
         ('fa:16:3e:00:00:0b', ip('10.0.0.11'))])
    assert release.server_for(ip('10.0.0.10'), ('2001:db8::2/64',
                                                '10.0.0.2/24')) == \
        ip('10.0.0.2')
