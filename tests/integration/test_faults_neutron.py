"""Neutron faults: what a broken, hung, lying or restored Neutron does to
the agent. A small in-test Neutron (tests/fake_openstack.py, on 127.0.0.1
of the isolated namespace) is switched to 500s, timeouts, garbage bodies,
revision regressions and one network that cannot be fetched; RabbitMQ
down and back runs against the real lab (tests/neutron_server.py).

The contract: the agent never exits, status says unreachable (with the
reason) exactly while Neutron is, good networks stay served, and service
recovers once Neutron is healthy. Each fault is recorded with
tests/faultlog.record for RELIABILITY.md."""
import threading
import time

import pytest

from tests import faultlog, rig
from tests.fake_openstack import Fault, FakeNeutron
from tests.neutron_server import free_port
from tests.rig import wait_for
from tests.integration.test_neutron import neutron_host, neutron_network  # noqa: F401
from vdsm_dhcp import options
from vdsm_dhcp.sources.neutron_client import NeutronClient, NeutronError
from vdsm_dhcp.sources.neutron import NeutronSource

DEEP = b'[' * 200000 + b']' * 200000

# name -> the fault (all of them answer the agent's poll)
GARBAGE = {
    'HTTP 500': lambda: Fault.status(500),
    'no answer within the client timeout': Fault.hang,
    '200 with an HTML body': lambda: Fault.body(b'<html>oops</html>'),
    '200 with an empty body': lambda: Fault.body(b''),
    '200 with JSON of the wrong shape (a list)': lambda: Fault.json([1, 2]),
    '200 with {"networks": 5}': lambda: Fault.json(
        {'networks': 5, 'subnets': 5, 'ports': 5}),
    '200 with items that are not objects': lambda: Fault.json(
        {'networks': ['x'], 'subnets': [None], 'ports': [7]}),
    '200 with an item id that is not a string': lambda: Fault.json(
        {'networks': [{'id': [1]}], 'subnets': [{'id': 1}],
         'ports': [{'id': {}}]}),
    '200 with JSON nested 200,000 deep': lambda: Fault.body(DEEP),
}


@pytest.fixture
def fake_neutron():
    with FakeNeutron() as server:
        yield server


def source_conf(tmp_path, url, **extra):
    settings = dict(source='neutron', neutron__auth_type='none',
                    neutron__endpoint=url, neutron__poll_interval=0.1,
                    neutron__retry_max=0.5, neutron__timeout=1)
    settings.update(extra)
    path = rig.write_conf(str(tmp_path / 'vdsm-dhcp.conf'), str(tmp_path),
                          **settings)
    return options.load(path)


def two_networks(fake, host='host-a', prefix='10.81'):
    """red and blue, a subnet and a VM port each; our DHCP ports are made
    by the agent (manage_dhcp_port)."""
    nets = {}
    for i, color in enumerate(('red', 'blue')):
        net = fake.network(color)
        sub = fake.subnet(net, '%s.%d.0/24' % (prefix, i))
        vm = fake.port(net, rig.mac(0x8100 + i))
        nets[color] = (net, sub, vm)
    return nets


# -- the reply boundary, on the client alone ---------------------------------
@pytest.mark.parametrize('name', sorted(GARBAGE))
def test_every_bad_reply_is_a_neutron_error(fake_neutron, tmp_path, name):
    client = NeutronClient(source_conf(tmp_path, fake_neutron.url))
    fake_neutron.fault = GARBAGE[name]()
    with pytest.raises(NeutronError) as raised:
        client.list('networks', {'id': ['x']}, ('id',))
    if name == 'no answer within the client timeout':
        assert raised.value.status is None and not raised.value.answered
    else:
        assert raised.value.status == (500 if name == 'HTTP 500' else 200)


def test_paging_that_never_advances_is_an_error(fake_neutron, tmp_path):
    client = NeutronClient(source_conf(tmp_path, fake_neutron.url))
    page = {'networks': [{'id': 'same'}] * 500,
            'networks_links': [{'rel': 'next', 'href': ''}]}
    fake_neutron.fault = Fault.json(page)
    with pytest.raises(NeutronError):
        client.list('networks', {}, ('id',))


# -- the source in-process: poll thread, revisions ---------------------------
def _source(tmp_path, fake, **extra):
    conf = source_conf(tmp_path, fake.url, host='host-a', **extra)
    changes = threading.Event()
    src = NeutronSource(conf)
    return src, changes


def test_poll_thread_outlives_every_bad_reply(fake_neutron, tmp_path):
    nets = two_networks(fake_neutron)
    src, changes = _source(tmp_path, fake_neutron)
    ids = sorted(n['id'] for n, _, _ in nets.values())
    src.snapshot(ids)
    src.start(changes.set)
    try:
        for name in sorted(GARBAGE):
            fake_neutron.fault = GARBAGE[name]()
            wait_for(lambda: not src.status()['reachable'], timeout=10,
                     what='unreachable under %s' % name)
            fake_neutron.fault = None
            # the same thread polls on: a change made now arrives
            changes.clear()
            port = fake_neutron.port(nets['red'][0], rig.mac(0x8200))
            wait_for(lambda: port['id'] in src.cache.ports, timeout=10,
                     what='a new port after %s' % name)
            assert src.status()['reachable'] and src.status()['error'] \
                is None
            assert changes.is_set()
    finally:
        src.stop()


def test_a_released_network_gets_no_new_dhcp_port(fake_neutron, tmp_path):
    """A poll round that starts after release() (the agent dropped the
    network, or is tearing everything down) must not make the network's
    DHCP port again: found under load, when the poll thread's round took
    the list of wanted networks from before the release."""
    nets = two_networks(fake_neutron)
    src, _ = _source(tmp_path, fake_neutron)
    red, blue = nets['red'][0]['id'], nets['blue'][0]['id']
    src.snapshot([red, blue])

    def ours(network_id):
        return [p for p in list(fake_neutron.data['ports'].values())
                if p['network_id'] == network_id and
                p.get('device_owner') == 'network:dhcp']
    assert len(ours(blue)) == 1
    src.release(blue)
    assert ours(blue) == []
    src._poll_round()            # what the poll thread does next
    assert ours(blue) == [] and len(ours(red)) == 1
    faultlog.record('Neutron source: a poll round right after a network '
                    'was released', 1, 'no DHCP port made again', 0)


def test_restored_database_revisions_go_backwards(fake_neutron, tmp_path):
    """A poll or a fetch is Neutron's current state, whatever the revision;
    a notification older than what we hold is still dropped."""
    nets = two_networks(fake_neutron)
    net, sub, vm = nets['red']
    src, changes = _source(tmp_path, fake_neutron, neutron__poll_interval=60)
    src.snapshot([net['id']])
    fake_neutron.update('ports', vm['id'], dns_name='new',
                        revision_number=50)
    assert src._poll_round()
    assert src.cache.ports[vm['id']]['revision_number'] == 50
    # the backup: revision 3, other data
    restored = fake_neutron.put('ports', dict(vm, dns_name='restored',
                                              revision_number=3))
    assert src._poll_round()
    assert src.cache.ports[vm['id']] == restored
    # notifications still compare revisions with what we hold (3): an
    # older one is dropped, a newer one applied
    src.notified('port.update.end', {'port': dict(restored, revision_number=2,
                                                  dns_name='old')})
    assert src.cache.ports[vm['id']]['dns_name'] == 'restored'
    src.notified('port.update.end', {'port': dict(restored, revision_number=4,
                                                  dns_name='newer')})
    assert src.cache.ports[vm['id']]['dns_name'] == 'newer'
    # the poll puts Neutron's truth back (revision 3 != 4)
    assert src._poll_round()
    assert src.cache.ports[vm['id']]['dns_name'] == 'restored'
    faultlog.record('revision_number goes backwards (DB restored)', 1,
                    'the poll takes the restored data; stale notifications '
                    'still dropped')


def test_one_network_failing_is_reported_alone(fake_neutron, tmp_path):
    nets = two_networks(fake_neutron)
    red, blue = nets['red'][0]['id'], nets['blue'][0]['id']
    src, _ = _source(tmp_path, fake_neutron, neutron__poll_interval=60)
    fake_neutron.fault = Fault.status(500, when=FakeNeutron.mentions(blue))
    snap = src.snapshot([red, blue])
    assert red in snap.networks and blue not in snap.networks
    assert 'HTTP 500' in snap.errors[blue] and red not in snap.errors
    assert src.status()['reachable']
    assert list(src.status()['network_errors']) == [blue]
    # the poll goes on for red while blue fails
    port = fake_neutron.port(nets['red'][0], rig.mac(0x8600))
    assert src._poll_round()
    assert port['id'] in src.cache.ports
    # every request failing is Neutron failing, not one network
    fake_neutron.fault = Fault.status(500)
    with pytest.raises(NeutronError) as raised:
        src._poll_round()
    assert raised.value.status == 500
    fake_neutron.fault = None
    src._poll_round()
    snap = src.snapshot([red, blue])
    assert blue in snap.networks and not snap.errors
    # this host's DHCP port cannot be made on one network: that network
    # says why, the other is served
    fresh = fake_neutron.network('green')
    fake_neutron.subnet(fresh, '10.85.0.0/24')
    fake_neutron.fault = Fault.status(
        409, when=lambda method, path, params: method == 'POST')
    snap = src.snapshot([red, blue, fresh['id']])
    assert 'HTTP 409' in snap.errors[fresh['id']]
    assert 'HTTP 409' in ' '.join(snap.notes[fresh['id']])
    assert src.status()['reachable']
    fake_neutron.fault = None
    src._poll_round()
    assert not src.status()['network_errors']


def test_hostile_notifications_are_dropped(fake_neutron, tmp_path):
    nets = two_networks(fake_neutron)
    net = nets['red'][0]
    src, changes = _source(tmp_path, fake_neutron, neutron__poll_interval=60)
    src.snapshot([net['id']])
    before = {k: dict(v) for k, v in src.cache.ports.items()}
    for event, payload in (
            ('port.update.end', 'not a dict'),
            ('port.update.end', {'port': ['x']}),
            ('port.update.end', {'port': {'id': 5, 'network_id': net['id']}}),
            ('port.update.end', {'port': {'id': 'x', 'network_id': [1]}}),
            ('port.update.end', {'port': {'id': 'x', 'network_id': net['id'],
                                          'revision_number': 'ten'}}),
            ('port.delete.end', {'port_id': ['x']}),
            ('network.delete.end', {'network': 'x'}),
            (None, {}), (5, {})):
        src.notified(event, payload)
    assert {k: v for k, v in src.cache.ports.items() if k != 'x'} == before
    assert src.notifications_dropped >= 7


# -- the agent: isolated host, real dnsmasq, real DHCP clients ---------------
@pytest.fixture
def fake_host(make_host, fake_neutron):
    def make(name='host-a', **extra):
        host = make_host(name)
        settings = dict(source='neutron', neutron__auth_type='none',
                        neutron__endpoint=fake_neutron.url,
                        neutron__poll_interval=0.2, neutron__retry_max=0.5,
                        neutron__timeout=1)
        settings.update(extra)
        rig.write_conf(host.conf_path, host.base, host=name, **settings)
        host.conf = options.load(host.conf_path)
        return host
    return make


def serving_two(fake_neutron, fake_host, lab, prefix='10.81', **extra):
    nets = two_networks(fake_neutron, prefix=prefix)
    host = fake_host(**extra)
    for color in nets:
        lab.bridge('f' + color)
    host.networks(*[('f' + c, n['id']) for c, (n, _, _) in nets.items()])
    return nets, host


def test_agent_outlives_neutron_faults_and_recovers(fake_neutron, fake_host,
                                                    lab):
    nets, host = serving_two(fake_neutron, fake_host, lab)
    agent = host.agent()
    for color in nets:
        agent.wait_served('f' + color, timeout=30)
    red, _, red_port = nets['red']
    vm = lab.vm('fred', red_port['mac_address'])
    assert vm.dhcp()['ip'] == red_port['fixed_ips'][0]['ip_address']
    for n, name in enumerate(sorted(GARBAGE)):
        fake_neutron.fault = GARBAGE[name]()
        src = wait_for(lambda: not agent.status()['source']['reachable']
                       and agent.status()['source'], timeout=15,
                       what='source unreachable under %s' % name)
        assert src['error'] and src['unreachable_since']
        # dnsmasq keeps serving what it has, for both networks
        lease = vm.dhcp()
        assert lease and lease['ip'] == \
            red_port['fixed_ips'][0]['ip_address'], name
        assert all(agent.network('f' + c)['served'] for c in nets), name
        healed = time.monotonic()
        fake_neutron.fault = None
        new = fake_neutron.port(red, rig.mac(0x8300 + n))
        wait_for(lambda: agent.status()['source']['reachable'], timeout=15,
                 what='source reachable again after %s' % name)
        new_vm = lab.vm('fred', new['mac_address'])
        wait_for(lambda: (new_vm.dhcp(tries=1) or {}).get('ip') ==
                 new['fixed_ips'][0]['ip_address'], timeout=15,
                 what='a port made after %s served' % name)
        recovery_ms = round((time.monotonic() - healed) * 1000)
        lab.remove_vm(new_vm)
        assert agent.proc.poll() is None, agent.log()
        faultlog.record('Neutron: %s' % name, 1,
                        'agent up; both networks served throughout; status '
                        'unreachable with the reason; a new port served '
                        'after healing', leases_lost=0,
                        recovery_ms=recovery_ms)
    log = agent.log()
    assert 'Traceback' not in log, log


def test_one_network_neutron_cannot_give(fake_neutron, fake_host, lab):
    """Neutron fails every request naming blue: red is served all along
    (from the start, and when blue breaks later), blue is not served with
    the reason until it heals."""
    nets, host = serving_two(fake_neutron, fake_host, lab, prefix='10.82')
    red, _, red_port = nets['red']
    blue, _, blue_port = nets['blue']
    broken = FakeNeutron.mentions(blue['id'])
    for name, fault in (('HTTP 500', Fault.status(500, when=broken)),
                        ('a 200 with an HTML body',
                         Fault.body(b'<html>', when=broken))):
        fake_neutron.fault = fault
        agent = host.agent()
        agent.wait_served('fred', timeout=30)
        src = wait_for(lambda: agent.status()['source']['network_errors'].get(
            blue['id']) and agent.status()['source'], timeout=15,
            what='blue reported')
        assert src['reachable']
        assert ('HTTP 500' if name == 'HTTP 500' else 'not JSON') in \
            src['network_errors'][blue['id']]
        entry = agent.network('fblue')
        assert not entry['served'] and entry['reason']
        vm = lab.vm('fred', red_port['mac_address'])
        assert vm.dhcp()['ip'] == red_port['fixed_ips'][0]['ip_address']
        fake_neutron.fault = None
        agent.wait_served('fblue', timeout=30)
        assert not agent.status()['source']['network_errors']
        # blue breaks while served: red still follows Neutron, blue keeps
        # serving what it had
        fake_neutron.fault = fault
        new = fake_neutron.port(red, rig.mac(0x8400 + len(name)))
        new_vm = lab.vm('fred', new['mac_address'])
        wait_for(lambda: (new_vm.dhcp(tries=1) or {}).get('ip') ==
                 new['fixed_ips'][0]['ip_address'], timeout=15,
                 what='a new red port served while blue fails')
        assert agent.network('fblue')['served']
        assert lab.vm('fblue', blue_port['mac_address']).dhcp()['ip'] == \
            blue_port['fixed_ips'][0]['ip_address']
        fake_neutron.fault = None
        agent.stop()
        assert agent.proc.returncode == 0, agent.log()
        faultlog.record('Neutron: one network\'s requests fail (%s)' % name,
                        2, 'the other network served throughout; the '
                        'failing one reported, served once healed',
                        leases_lost=0)


def test_restored_database_reaches_dnsmasq(fake_neutron, fake_host, lab):
    nets, host = serving_two(fake_neutron, fake_host, lab, prefix='10.83')
    red, red_sub, red_port = nets['red']
    agent = host.agent()
    agent.wait_served('fred', timeout=30)
    vm = lab.vm('fred', red_port['mac_address'])
    assert vm.dhcp()['ip'] == '10.83.0.10'
    fake_neutron.update('ports', red_port['id'], revision_number=40,
                        fixed_ips=[{'subnet_id': red_sub['id'],
                                    'ip_address': '10.83.0.40'}])
    wait_for(lambda: (vm.dhcp(tries=1) or {}).get('ip') == '10.83.0.40',
             timeout=15, what='the update')
    # the database comes back from a backup: an older revision, other data
    fake_neutron.put('ports', dict(red_port, revision_number=7, fixed_ips=[
        {'subnet_id': red_sub['id'], 'ip_address': '10.83.0.77'}]))
    wait_for(lambda: (vm.dhcp(tries=1) or {}).get('ip') == '10.83.0.77',
             timeout=15, what='the restored data served')


def test_agent_starts_while_the_broker_is_down(fake_neutron, fake_host,
                                               lab):
    """oslo.messaging connects inside the listener's start() and retries
    for ever: that must not hold up the agent (it serves from the API and
    the poll, and stops cleanly)."""
    closed = free_port()
    nets, host = serving_two(
        fake_neutron, fake_host, lab, prefix='10.84',
        neutron__transport_url='rabbit://guest:guest@127.0.0.1:%d/' % closed)
    agent = host.agent()
    for color in nets:
        agent.wait_served('f' + color, timeout=30)
    assert agent.status()['source']['notifications'] != 'listening'
    red, _, _ = nets['red']
    new = fake_neutron.port(red, rig.mac(0x8500))
    vm = lab.vm('fred', new['mac_address'])
    wait_for(lambda: (vm.dhcp(tries=1) or {}).get('ip') ==
             new['fixed_ips'][0]['ip_address'], timeout=15,
             what='a new port, by the poll')
    agent.stop(timeout=30)
    assert agent.proc.returncode == 0, agent.log()
    faultlog.record('RabbitMQ unreachable when the agent starts', 1,
                    'served from the API; the poll delivers; clean stop',
                    leases_lost=0)


# -- RabbitMQ down and back, with the real lab -------------------------------
def _received(agent):
    return agent.status()['source']['notifications_received']


def _notified_of_a_change(neutron, agent, port, timeout):
    """Change the port until a notification of it reaches the agent (the
    listener reconnects with back-off after a broker restart)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = _received(agent)
        neutron.update_port(port['id'], name='n%d' % time.monotonic_ns())
        try:
            return wait_for(lambda: _received(agent) > before, timeout=3,
                            interval=0.05)
        except AssertionError:
            pass
    raise AssertionError('no notification within %ss' % timeout)


def test_rabbitmq_down_and_back(neutron, neutron_host, lab):  # noqa: F811
    host = neutron_host(poll=1.0)
    net, sub = neutron_network(neutron, lab, 'nq', '10.68.0.0/24')
    port = neutron.create_port(net['id'])
    host.networks(('nq', net['id']))
    agent = host.agent()
    agent.wait_served('nq', timeout=30)
    wait_for(lambda: agent.status()['source']['notifications'] ==
             'listening', timeout=30, what='listening')
    _notified_of_a_change(neutron, agent, port, 20)
    vm = lab.vm('nq', port['mac_address'])
    assert vm.dhcp()['ip'] == port['fixed_ips'][0]['ip_address']
    neutron.rabbit_stop()
    try:
        # Neutron's API still works (the lab's notifier gives up at once);
        # the poll delivers the change
        stopped = time.monotonic()
        neutron.update_port(port['id'], fixed_ips=[
            {'subnet_id': sub['id'], 'ip_address': '10.68.0.150'}])
        wait_for(lambda: (vm.dhcp(tries=1) or {}).get('ip') == '10.68.0.150',
                 timeout=20, what='the change, by the poll')
        by_poll_ms = round((time.monotonic() - stopped) * 1000)
        assert agent.proc.poll() is None
        assert agent.status()['source']['reachable']
    finally:
        neutron.rabbit_start()
    started = time.monotonic()
    _notified_of_a_change(neutron, agent, port, 120)
    back_ms = round((time.monotonic() - started) * 1000)
    assert agent.proc.poll() is None
    faultlog.record('RabbitMQ stopped and started again (real lab)', 1,
                    'poll delivered a change while it was down (%d ms); '
                    'notifications arrive again after the restart' %
                    by_poll_ms, leases_lost=0, recovery_ms=back_ms)
