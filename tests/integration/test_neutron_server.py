"""Smoke test of the real Neutron lab (tests/neutron_server.py): a flat
network, a subnet, ports with fixed IPs from Neutron's IPAM, the
changed_since filter, and port.create.end on the `notifications` topic
through RabbitMQ. Needs root and scripts/install-neutron-lab; everything
listens on 127.0.0.1, so no network namespace is needed."""
import queue
import time

import pytest



class _Endpoint:
    def __init__(self):
        self.events = queue.Queue()

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        self.events.put((event_type, payload))


@pytest.fixture
def notifications(neutron):
    """Listen to Neutron's notifications (exchange `neutron`, topic
    `notifications`) with oslo.messaging in our own venv."""
    import oslo_messaging
    from oslo_config import cfg

    conf = cfg.ConfigOpts()
    conf([], project='vdsm-dhcp-test', default_config_files=[])
    transport = oslo_messaging.get_notification_transport(
        conf, url=neutron.transport_url)
    endpoint = _Endpoint()
    listener = oslo_messaging.get_notification_listener(
        transport,
        [oslo_messaging.Target(exchange='neutron', topic='notifications')],
        [endpoint], executor='threading')
    listener.start()
    try:
        yield endpoint.events
    finally:
        listener.stop()
        listener.wait()
        transport.cleanup()


def _wait_event(events, event_type, match, timeout=30):
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        try:
            etype, payload = events.get(timeout=0.2)
        except queue.Empty:
            continue
        seen.append(etype)
        if etype == event_type and match(payload):
            return payload
    raise AssertionError('no %s within %ss; saw %s'
                         % (event_type, timeout, seen))


def test_flat_network_ports_changed_since_and_notifications(
        neutron, notifications):
    net = neutron.create_network(
        'smoke', **{'provider:network_type': 'flat',
                    'provider:physical_network': 'physnet1'})
    assert net['provider:network_type'] == 'flat'
    assert net['provider:physical_network'] == 'physnet1'
    subnet = neutron.create_subnet(net['id'], '10.50.0.0/24',
                                   enable_dhcp=True)
    assert subnet['gateway_ip'] == '10.50.0.1'

    t0 = time.monotonic()
    a = neutron.create_port(net['id'], name='a',
                            mac_address='fa:16:3e:00:50:0a')
    payload = _wait_event(notifications, 'port.create.end',
                          lambda p: p.get('port', {}).get('id') == a['id'])
    print('port.create.end after %.2fs' % (time.monotonic() - t0))
    assert payload['port']['mac_address'] == 'fa:16:3e:00:50:0a'
    assert payload['port']['fixed_ips'] == a['fixed_ips']

    (ip,) = a['fixed_ips']
    assert ip['subnet_id'] == subnet['id']
    assert ip['ip_address'].startswith('10.50.0.')
    assert ip['ip_address'] not in ('10.50.0.0', '10.50.0.1', '10.50.0.255')

    # changed_since compares updated_at >= the given time, to the second
    a = neutron.show_port(a['id'])
    time.sleep(1.2)
    b = neutron.create_port(net['id'], name='b',
                            fixed_ips=[{'subnet_id': subnet['id'],
                                        'ip_address': '10.50.0.77'}])
    assert b['fixed_ips'][0]['ip_address'] == '10.50.0.77'
    assert b['updated_at'] > a['updated_at']
    since = b['updated_at']
    ids = {p['id'] for p in neutron.list_ports(changed_since=since)}
    assert b['id'] in ids and a['id'] not in ids
    neutron.update_port(a['id'], name='a2')
    ids = {p['id'] for p in neutron.list_ports(changed_since=since)}
    assert {a['id'], b['id']} <= ids
    assert {p['id'] for p in neutron.list_ports(network_id=net['id'])} \
        == {a['id'], b['id']}

    # the API alone goes down and comes back; the data stays
    neutron.api_stop()
    with pytest.raises(OSError):
        neutron.request('GET', '/networks', timeout=2)
    neutron.api_start()
    assert neutron.show_port(b['id'])['name'] == 'b'

    for port in (a, b):
        neutron.delete_port(port['id'])
    neutron.delete_subnet(subnet['id'])
    neutron.delete_network(net['id'])
    assert neutron.list_ports(network_id=net['id']) == []
