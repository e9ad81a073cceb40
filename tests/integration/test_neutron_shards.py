"""This host's DHCP ports on a sharded network, with the Neutron source:
one per shard ([dnsmasq] shard_size hosts each), made in one bulk request,
grown and shrunk with the network (with the hysteresis of
shards.shards_needed), all released with the network, none made twice
across a restart, strays released at start. In-process against the small
in-test Neutron (tests/fake_openstack.py); the real Neutron's bulk create
is in tests/integration/test_neutron.py."""
import pytest

from tests import rig
from tests.fake_openstack import Fault, FakeNeutron
from tests.integration.test_faults_neutron import source_conf
from vdsm_dhcp.sources.neutron import NeutronSource
from vdsm_dhcp.sources.neutron_ports import dhcp_device_id, dhcp_shard

HOST = 'host-a'


@pytest.fixture
def fake():
    with FakeNeutron() as server:
        yield server


def source(tmp_path, fake, host=HOST, shard_size=3):
    conf = source_conf(tmp_path, fake.url, host=host,
                       dnsmasq__shard_size=shard_size,
                       neutron__poll_interval=60)
    return NeutronSource(conf)


def network(fake, vms, prefix='10.91.0', name='big'):
    net = fake.network(name)
    sub = fake.subnet(net, prefix + '.0/24')
    # a subnet without DHCP gets no address of ours
    quiet = fake.subnet(net, prefix.rsplit('.', 1)[0] + '.250.0/24',
                        enable_dhcp=False)
    ports = [vm(fake, net, i) for i in range(vms)]
    return net, sub, quiet, ports


def vm(fake, net, i):
    return fake.port(net, rig.mac(0x9100 + i))


def dhcp_ports(fake, net, host=HOST):
    return sorted((p for p in list(fake.data['ports'].values())
                   if p['network_id'] == net['id'] and
                   p['device_owner'] == 'network:dhcp' and
                   p['binding:host_id'] == host),
                  key=lambda p: dhcp_shard(host, p))


def posts(fake):
    return [body for method, path, _, body in fake.requests
            if method == 'POST' and path == '/v2.0/ports']


def test_one_port_per_shard_in_one_request(fake, tmp_path):
    net, sub, quiet, _ = network(fake, 7)
    src = source(tmp_path, fake)
    snap = src.snapshot([net['id']])
    ours = dhcp_ports(fake, net)
    base = dhcp_device_id(HOST, net['id'])
    # 7 hosts, 3 per shard: 3 shards; shard 0 keeps the device_id of the
    # single DHCP port of old (an existing deployment keeps its port)
    assert [p['device_id'] for p in ours] == \
        [base, base + '-shard1', base + '-shard2']
    assert [p['name'] for p in ours] == \
        ['vdsm-dhcp-host-a', 'vdsm-dhcp-host-a-shard1',
         'vdsm-dhcp-host-a-shard2']
    ips = [f['ip_address'] for p in ours for f in p['fixed_ips']]
    assert len(set(ips)) == 3
    assert all([f['subnet_id'] for f in p['fixed_ips']] == [sub['id']]
               for p in ours)
    assert all(p['project_id'] == 'p1' for p in ours)
    # one bulk request for the three
    assert posts(fake) == [{'ports': [
        dict((k, p[k]) for k in ('network_id', 'device_owner', 'device_id',
                                 'binding:host_id', 'name', 'project_id')
             ) | {'fixed_ips': [{'subnet_id': sub['id']}]}
        for p in ours]}]
    assert src.owned[net['id']] == [p['id'] for p in ours]
    # the planner finds them in the snapshot: network:dhcp, this host
    assert {p['id'] for p in snap.ports[net['id']]
            if p['device_owner'] == 'network:dhcp' and
            p['binding:host_id'] == HOST} == {p['id'] for p in ours}
    # a round with nothing new changes nothing
    before = len(fake.requests)
    assert not src._poll_round()
    assert posts(fake)[1:] == [] and len(fake.requests) > before


def test_grows_and_shrinks_with_hysteresis(fake, tmp_path):
    net, _, _, vms = network(fake, 4)
    src = source(tmp_path, fake)
    src.snapshot([net['id']])
    two = dhcp_ports(fake, net)
    assert len(two) == 2
    # 10 hosts: a fourth shard; the ones there stay as they are
    vms += [vm(fake, net, i) for i in range(4, 10)]
    assert src._poll_round()
    four = dhcp_ports(fake, net)
    assert len(four) == 4 and four[:2] == two
    assert [dhcp_shard(HOST, p) for p in four] == [0, 1, 2, 3]
    assert len(posts(fake)[-1]['ports']) == 2
    assert len(src.owned[net['id']]) == 4
    # 8 hosts would fit in 3 shards, but not at 80% of them: no change
    for port in vms[8:]:
        fake.delete('ports', port['id'])
    src._poll_round()
    assert dhcp_ports(fake, net) == four
    # 7 hosts: the highest shard goes, the others keep their ports
    fake.delete('ports', vms[7]['id'])
    assert src._poll_round()
    assert dhcp_ports(fake, net) == four[:3]
    assert src.owned[net['id']] == [p['id'] for p in four[:3]]
    # no host at all: the first shard only
    for port in vms[:7]:
        fake.delete('ports', port['id'])
    assert src._poll_round()
    assert dhcp_ports(fake, net) == four[:1]
    assert src.owned[net['id']] == [four[0]['id']]


def test_a_missing_shard_port_is_made_again(fake, tmp_path):
    """Someone deleted shard 1 (the others serve on): it is made again
    with its own device_id, the others untouched."""
    net, _, _, _ = network(fake, 7)
    src = source(tmp_path, fake)
    src.snapshot([net['id']])
    ours = dhcp_ports(fake, net)
    fake.delete('ports', ours[1]['id'])
    assert src._poll_round()
    again = dhcp_ports(fake, net)
    assert again[0] == ours[0] and again[2] == ours[2]
    assert again[1]['id'] != ours[1]['id']
    assert again[1]['device_id'] == ours[1]['device_id']
    # one port: no bulk request for it
    assert 'port' in posts(fake)[-1]


def test_release_gives_back_every_shard(fake, tmp_path):
    net, _, _, _ = network(fake, 7)
    other, _, _, _ = network(fake, 1, prefix='10.92.0', name='small')
    # host-b serves the big network too: its ports are not ours
    fake.port(net, rig.mac(0x9200), device_owner='network:dhcp',
              device_id=dhcp_device_id('host-b', net['id'], 1),
              **{'binding:host_id': 'host-b'})
    src = source(tmp_path, fake)
    src.snapshot([net['id'], other['id']])
    assert len(dhcp_ports(fake, net)) == 3
    src.release(net['id'])
    assert dhcp_ports(fake, net) == []
    assert len(dhcp_ports(fake, net, host='host-b')) == 1
    assert len(dhcp_ports(fake, other)) == 1
    assert net['id'] not in src.owned
    src._poll_round()
    assert dhcp_ports(fake, net) == []


def test_restart_finds_its_shards_and_releases_strays(fake, tmp_path):
    net, _, _, _ = network(fake, 7)
    dropped, _, _, _ = network(fake, 5, prefix='10.93.0', name='dropped')
    src = source(tmp_path, fake)
    src.snapshot([net['id'], dropped['id']])
    ours = dhcp_ports(fake, net)
    assert len(ours) == 3 and len(dhcp_ports(fake, dropped)) == 2
    # host-b's shard port on the dropped network stays
    theirs = fake.port(dropped, rig.mac(0x9300),
                       device_owner='network:dhcp',
                       device_id=dhcp_device_id('host-b', dropped['id'], 1),
                       **{'binding:host_id': 'host-b'})
    # the agent restarts with the dropped network no longer listed
    fake.requests.clear()
    again = source(tmp_path, fake)
    again.snapshot([net['id']])
    assert dhcp_ports(fake, net) == ours
    assert posts(fake) == []
    assert again.owned[net['id']] == [p['id'] for p in ours]
    assert dhcp_ports(fake, dropped) == []
    assert dhcp_ports(fake, dropped, host='host-b') == [theirs]


def test_bulk_refused_one_at_a_time(fake, tmp_path):
    """A Neutron with allow_bulk = false answers 400: the ports are made
    one at a time, and bulk is not tried again."""
    fake.bulk = False
    net, _, _, vms = network(fake, 7)
    src = source(tmp_path, fake)
    snap = src.snapshot([net['id']])
    assert len(dhcp_ports(fake, net)) == 3
    assert [list(b) for b in posts(fake)] == \
        [['ports'], ['port'], ['port'], ['port']]
    assert not snap.errors
    vms += [vm(fake, net, i) for i in range(7, 13)]
    assert src._poll_round()
    assert len(dhcp_ports(fake, net)) == 5
    assert [list(b) for b in posts(fake)[4:]] == [['port'], ['port']]


def test_addresses_run_out_halfway(fake, tmp_path):
    """The subnet has room for two more ports, three shards are wanted:
    two are made (the bulk request fails whole, one at a time makes what
    fits), the network says why the third is missing, and is served by
    the two it has."""
    net = fake.network('tight')
    # .10 to .14 are handed out: 3 VMs, room for 2 DHCP ports
    fake.subnet(net, '10.94.0.0/28')
    for i in range(7):
        if i < 3:
            vm(fake, net, i)
        else:   # hosts without an address on the subnet
            fake.port(net, rig.mac(0x9100 + i), fixed_ips=[])
    src = source(tmp_path, fake)
    snap = src.snapshot([net['id']])
    made = dhcp_ports(fake, net)
    assert [dhcp_shard(HOST, p) for p in made] == [0, 1]
    assert 'HTTP 409' in snap.errors[net['id']]
    assert net['id'] in snap.networks
    assert 'HTTP 409' in ' '.join(snap.notes[net['id']])
    assert src.owned[net['id']] == [p['id'] for p in made]
    assert src.status()['network_errors']


def test_shard_device_ids_are_recognised_exactly(tmp_path):
    base = dhcp_device_id(HOST, 'n1')

    def port(device_id, owner='network:dhcp'):
        return {'id': 'p', 'network_id': 'n1', 'device_owner': owner,
                'device_id': device_id}
    assert dhcp_shard(HOST, port(base)) == 0
    assert dhcp_shard(HOST, port(base + '-shard12')) == 12
    for device_id in (base + '-shard0', base + '-shard01', base + '-shard',
                      base + '-shard1x', base + 'x', base + '-shard\u0661',
                      dhcp_device_id('host-b', 'n1'), None, 5):
        assert dhcp_shard(HOST, port(device_id)) is None, device_id
    assert dhcp_shard(HOST, port(base, owner='compute:nova')) is None


def test_deleting_a_surplus_shard_fails(fake, tmp_path):
    """Neutron refuses to delete the surplus port: the network says why
    and the port is still counted as ours (tried again next round)."""
    net, _, _, vms = network(fake, 7)
    src = source(tmp_path, fake)
    src.snapshot([net['id']])
    ours = dhcp_ports(fake, net)
    for port in vms[2:]:
        fake.delete('ports', port['id'])
    fake.fault = Fault.status(
        500, when=lambda method, path, params: method == 'DELETE')
    src._poll_round()
    assert 'HTTP 500' in src.status()['network_errors'][net['id']]
    assert dhcp_ports(fake, net) == ours
    fake.fault = None
    assert src._poll_round()
    assert dhcp_ports(fake, net) == ours[:1]
    assert not src.status()['network_errors']
