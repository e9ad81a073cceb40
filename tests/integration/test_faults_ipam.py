"""Fault injection: hostile IPAM documents.

Neutron-shaped documents where, in turn, every field of networks, subnets
and ports gets a wrong type, None, a nested or huge value, a newline or a
control character at its end, a bad CIDR, IP or MAC, a duplicate, or our
own DHCP port's MAC or IP. The pure tests run thousands of them through
the planner (it never raises, good ports stay planned, every line for
dnsmasq is of a strict shape); the end-to-end test feeds a sequence of
them to a real agent and dnsmasq while a good VM keeps getting its lease.
"""
import copy
import ipaddress
import json
import os
import random
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import faultlog
from vdsm_dhcp import options
from vdsm_dhcp.agent import desired
from vdsm_dhcp import model
from vdsm_dhcp.sources import validate
from vdsm_dhcp.dnsmasq import conf as dnsmasq_conf
from vdsm_dhcp.setdhcp.networks_file import Network
from vdsm_dhcp.sources.file import FileSource
from vdsm_dhcp.sources.base import SourceError

NET = '11111111-2222-4333-8444-555555555555'
SUB4 = 'aaaaaaaa-0000-4000-8000-000000000004'
SUB6 = 'aaaaaaaa-0000-4000-8000-000000000006'
EXTRA_SUB = 'aaaaaaaa-0000-4000-8000-0000000000e1'
HOST = 'host-a'
GOOD = 3            # good ports, created first: they win every conflict
VICTIMS = 4         # ports that get mutated
DHCP_MAC, DHCP_IP4, DHCP_IP6 = 'fa:16:3e:00:00:02', '10.0.0.2', '2001:db8::2'


def _port(pid, mac, ips, created, owner='compute:nova', host='', **extra):
    return dict(id=pid, network_id=NET, mac_address=mac, device_owner=owner,
                fixed_ips=[{'subnet_id': s, 'ip_address': ip}
                           for s, ip in ips], created_at=created,
                **{'binding:host_id': host}, **extra)


def good_port(i):
    return _port('good-%d' % i, 'fa:16:3e:00:01:%02x' % i,
                 [(SUB4, '10.0.0.%d' % (10 + i)),
                  (SUB6, '2001:db8::%x' % (0x10 + i))],
                 '2000-01-01T00:00:%02dZ' % i, dns_name='good-%d' % i)


def text_of(plan, port_id):
    """The hostsdir text dnsmasq gets for a port of the plan, or None."""
    entry = plan.hosts.get(port_id)
    return None if entry is None else dnsmasq_conf.host_text(entry)


def good_entry(i):
    """The hosts file content a good port must get."""
    mac = 'fa:16:3e:00:01:%02x' % i
    return ('%s,10.0.0.%d,good-%d\n%s,[2001:db8::%x],good-%d\n'
            % (mac, 10 + i, i, mac, 0x10 + i, i))


def base_document():
    """A served network: IPv4 + IPv6 stateful subnets, our DHCP port, one
    of another host, GOOD good ports, VICTIMS ports to mutate, a subnet
    without a DHCP address of ours (never served)."""
    net = dict(id=NET, name='red', admin_state_up=True, mtu=1450)
    subnets = [
        dict(id=SUB4, network_id=NET, cidr='10.0.0.0/24', ip_version=4,
             gateway_ip='10.0.0.1', dns_nameservers=['10.0.0.53'],
             host_routes=[{'destination': '172.16.0.0/16',
                           'nexthop': '10.0.0.254'}], enable_dhcp=True),
        dict(id=SUB6, network_id=NET, cidr='2001:db8::/64', ip_version=6,
             gateway_ip='2001:db8::1', dns_nameservers=['2001:db8::53'],
             ipv6_address_mode='dhcpv6-stateful', enable_dhcp=True),
        dict(id=EXTRA_SUB, network_id=NET, cidr='10.1.0.0/24', ip_version=4,
             gateway_ip='10.1.0.1', dns_nameservers=['10.1.0.53'],
             host_routes=[], enable_dhcp=True),
    ]
    ports = [
        _port('dhcp-ours', DHCP_MAC, [(SUB4, DHCP_IP4), (SUB6, DHCP_IP6)],
              '1999-01-01T00:00:00Z', owner='network:dhcp', host=HOST),
        _port('dhcp-other', 'fa:16:3e:00:00:03',
              [(SUB4, '10.0.0.3'), (SUB6, '2001:db8::3')],
              '1999-01-01T00:00:01Z', owner='network:dhcp', host='host-b'),
    ]
    ports += [good_port(i) for i in range(GOOD)]
    ports += [_port('victim-%d' % i, 'fa:16:3e:00:02:%02x' % i,
                    [(SUB4, '10.0.0.%d' % (100 + i))],
                    '2001-01-01T00:00:%02dZ' % i, dns_name='victim-%d' % i)
              for i in range(VICTIMS)]
    return {'networks': [net], 'subnets': subnets, 'ports': ports}


# -- hostile values -------------------------------------------------------

CONTROL = ['\n', '\r', '\r\n', '\x00', '\t', '\x1b[2J', '\x7f', '\u2028',
           '\u202e', '\x85', ',', '#', ' ', '"', '\\']
WRONG_TYPES = [None, True, False, 0, -1, 1, 2 ** 64, 1.5, float('nan'), [],
               {}, [None], {'a': 1}, ['10.0.0.1'], {'ip_address': '10.0.0.1'}]
BAD_BY_KIND = {
    'ip': ['10.0.0.256', '10.0.0', '10.0.0.1/24', '::g', 'fe80::1%eth0',
           '010.0.0.1', '\u0661\u0660.0.0.1', '0x0a000001', '10.1',
           '2001:db8::1', '10.0.0.0', '10.0.0.255', '255.255.255.255',
           '::ffff:10.0.0.5', '10.0.0.1 ', ' 10.0.0.1', '1e1', ''],
    'cidr': ['10.0.0.0/33', '10.0.0.0', '10.0.0.0/24\n', '0.0.0.0/0',
             '10.0.0.0/8', '2001:db8::/64', '10.0.0.0/255.255.255.0',
             '10.0.0.0/-1', 'fe80::%1/64', '10.0.0.1/32', '::/0', ''],
    'mac': ['ff:ff:ff:ff:ff:ff', '01:00:5e:00:00:01', '00:00:00:00:00:00',
            'fa:16:3e:00:00', 'fa-16-3e-00-02-00', 'FA:16:3E:00:02:00',
            'fa:16:3e:00:02:00:00', 'fa16.3e00.0200', 'fa:16:3e:0:2:0',
            DHCP_MAC, ''],
    'id': ['', '../etc', 'batch-0123456789ab', '-x', 'x' * 65, 'a b',
           'port/1', 'good-0', 'victim-0', SUB4, 'stale:x', '.hidden'],
    'hostname': ['10.0.0.99', '600', '10m', 'infinite', 'ignore', 'a..b',
                 '-a', 'a-', 'a_b', 'a.' * 130, 'x' * 64, 'good-0', 'a.b.',
                 '.a', 'a:b', '[::1]', ''],
    'mtu': [0, 67, 68, 65535, 65536, 9000, '1500', True, -1500, 1500.0],
    'owner': ['', 'compute:nova', 'network:router_interface',
              'network:dhcp\n', 'NETWORK:DHCP', 'network:dhcp '],
    'host': ['', HOST + '\n', HOST.upper(), 'host-b', ' ' + HOST],
    'mode': ['dhcpv6-stateless', 'slaac', 'DHCPV6-STATEFUL',
             'dhcpv6-stateful\n', ''],
    'bool': [True, False, 'false', 'true', 0, 1, 'False'],
}


def nested(depth, leaf):
    for _ in range(depth):
        leaf = [leaf]
    return leaf


def hostile(rnd, like, kind):
    """A wrong value for a field whose good value is `like`."""
    choice = rnd.randrange(7)
    if choice == 0:
        return rnd.choice(WRONG_TYPES)
    if choice == 1 and kind in BAD_BY_KIND:
        return rnd.choice(BAD_BY_KIND[kind])
    if choice == 2:
        return nested(rnd.choice([2, 50, 400]), like)
    if choice == 3:
        return rnd.choice(['x', str(like)[:20], 'é', '\U0001f600']) * \
            rnd.choice([300, 5000, 100000])
    text = like if isinstance(like, str) else json.dumps(like)
    ctrl = rnd.choice(CONTROL)
    if choice == 4:          # the classic: a newline at the END
        return text + rnd.choice(['\n', '\n', '\r\n', ctrl])
    if choice == 5:
        return rnd.choice([ctrl + text, text[:1] + ctrl + text[1:],
                           text + ctrl + 'dhcp-range=0.0.0.0', text.upper()])
    return [like, like] if rnd.random() < 0.5 else {'value': like}


# field -> kind of value, per resource
PORT_FIELDS = {'id': 'id', 'mac_address': 'mac', 'device_owner': 'owner',
               'binding:host_id': 'host', 'fixed_ips': 'list',
               'dns_name': 'hostname', 'network_id': 'id',
               'created_at': 'str'}
FIXED_FIELDS = {'subnet_id': 'id', 'ip_address': 'ip'}
SUBNET_FIELDS = {'id': 'id', 'cidr': 'cidr', 'gateway_ip': 'ip',
                 'dns_nameservers': 'list', 'host_routes': 'list',
                 'ip_version': 'int', 'enable_dhcp': 'bool',
                 'ipv6_address_mode': 'mode', 'network_id': 'id'}
ROUTE_FIELDS = {'destination': 'cidr', 'nexthop': 'ip'}
NETWORK_FIELDS = {'id': 'id', 'mtu': 'mtu', 'admin_state_up': 'bool',
                  'name': 'str'}


def mutate_resource(rnd, item, fields):
    """One field of item (or of one of its nested entries) goes bad."""
    name = rnd.choice(sorted(fields))
    value = item.get(name)
    if isinstance(value, list) and value and rnd.random() < 0.6:
        entry = rnd.randrange(len(value))
        if isinstance(value[entry], dict):
            sub = ROUTE_FIELDS if name == 'host_routes' else FIXED_FIELDS
            key = rnd.choice(sorted(sub))
            if rnd.random() < 0.1:
                value[entry].pop(key, None)
            else:
                value[entry][key] = hostile(rnd, value[entry].get(key),
                                            sub[key])
        else:
            value[entry] = hostile(rnd, value[entry], 'ip')
        return '%s[%d]' % (name, entry)
    if rnd.random() < 0.1:
        item.pop(name, None)
        return 'no ' + name
    item[name] = hostile(rnd, value, fields[name])
    return name


def mutate(doc, rnd, anything=False):
    """Apply one hostile change to doc. Unless `anything`, the network,
    its two DHCP subnets, our DHCP port and the good ports stay as they
    are (so the good ports must stay planned); other ports never take a
    good port's address by being created earlier."""
    net, subnets, ports = doc['networks'][0], doc['subnets'], doc['ports']
    # by position: ids change under mutation; items are only appended
    other_dhcp = ports[1]
    victims = [other_dhcp] + ports[2 + GOOD:2 + GOOD + VICTIMS]
    kind = rnd.randrange(10)
    if anything and kind < 3:
        target = rnd.choice([t for t in [net] + subnets + ports
                             if isinstance(t, dict)])
        fields = (NETWORK_FIELDS if target is net else SUBNET_FIELDS
                  if any(target is s for s in subnets) else PORT_FIELDS)
        return 'any: ' + mutate_resource(rnd, target, fields)
    if kind < 4:
        fields = dict(PORT_FIELDS)
        del fields['created_at']     # victims stay younger than good ports
        port = rnd.choice(victims)
        what = mutate_resource(rnd, port, fields)
        if port is other_dhcp:
            # a DHCP port's addresses are reserved: never a good one's
            port['device_owner'] = 'network:dhcp'
        return 'port ' + what
    if kind == 4:
        return 'subnet ' + mutate_resource(rnd, subnets[2], SUBNET_FIELDS)
    if kind == 5:         # our DHCP port's or a good port's MAC or IP reused
        port = rnd.choice(victims[1:])
        # the good port as first listed (with `anything`, the one in the
        # document may have lost its MAC or IPs by now)
        good = good_port(rnd.randrange(GOOD))
        if rnd.random() < 0.5:
            port['mac_address'] = rnd.choice([DHCP_MAC, DHCP_MAC.upper(),
                                              good['mac_address']])
            return 'reused MAC'
        port['fixed_ips'] = [{'subnet_id': rnd.choice([SUB4, SUB6]),
                              'ip_address': rnd.choice(
                                  [DHCP_IP4, DHCP_IP6, '2001:db8:0::2',
                                   good['fixed_ips'][0]['ip_address']])}]
        return 'reused IP'
    if kind == 6:         # duplicates
        which = rnd.randrange(4)
        if which == 0:
            twin = copy.deepcopy(rnd.choice(victims))
            twin['mac_address'] = 'fa:16:3e:00:03:%02x' % rnd.randrange(256)
            twin['fixed_ips'] = [{'subnet_id': SUB4, 'ip_address':
                                  '10.0.0.%d' % rnd.randrange(150, 250)}]
            ports.append(twin)
            return 'duplicate port id'
        if which == 1:
            twin = copy.deepcopy(subnets[rnd.randrange(2)])
            twin['cidr'] = rnd.choice(['10.0.0.0/25', '10.9.0.0/24',
                                       '2001:db8::/64'])
            subnets.append(twin)
            return 'duplicate subnet id'
        if which == 2:
            twin = dict(net, mtu=rnd.choice([1, 9000]), admin_state_up=False)
            doc['networks'].append(twin)
            return 'duplicate network'
        twin = copy.deepcopy(subnets[2])
        twin['id'] = 'overlap'
        twin['cidr'] = rnd.choice(['10.0.0.0/16', '10.0.0.128/25'])
        subnets.append(twin)
        return 'overlapping subnet'
    if kind == 7:          # garbage items in the lists
        where = rnd.choice(['networks', 'subnets', 'ports'])
        doc[where].append(rnd.choice([
            None, 1, 'x', [], [{}], nested(300, {}), {},
            {'network_id': NET}, {'network_id': NET, 'id': None},
            {'network_id': [NET]}, {'network_id': NET + '\n'},
            {'id': NET, 'network_id': NET, 'mac_address': {}},
            {'network_id': NET, 'fixed_ips': [None] * 3,
             'device_owner': 'network:dhcp', 'binding:host_id': HOST}]))
        return 'garbage in ' + where
    if kind == 8:
        fields = {'mtu': 'mtu'} if not anything else NETWORK_FIELDS
        return 'network ' + mutate_resource(rnd, net, fields)
    # a brand-new port, valid or not
    n = rnd.randrange(1000)
    new = _port('new-%d' % n, 'fa:16:3e:00:04:%02x' % (n % 256),
                [(SUB4, '10.0.0.%d' % rnd.randrange(150, 250))],
                '2002-01-01T00:00:00Z')
    ports.append(new)
    fields = dict(PORT_FIELDS)
    del fields['created_at']
    return 'new port ' + mutate_resource(rnd, new, fields)


def hostile_document(rnd, anything=False, changes=None):
    doc = base_document()
    applied = [mutate(doc, rnd, anything)
               for _ in range(changes or rnd.randint(1, 6))]
    if anything and rnd.random() < 0.2:
        rnd.shuffle(doc['ports'])
    return doc, applied


# -- strict shapes, independent of the code's own checks ------------------

def check_host_line(line):
    mac, addr, name = line.split(',')          # exactly three fields
    assert validate.normalize_mac(mac) == mac
    if addr.startswith('['):
        assert addr.endswith(']')
        ip = ipaddress.IPv6Address(addr[1:-1])
    else:
        ip = ipaddress.IPv4Address(addr)
    assert str(ip) == addr.strip('[]')
    assert 1 <= len(name) <= 253 and re.search('[A-Za-z]', name), name
    assert not re.fullmatch(r'[0-9]+[wdhms]?|infinite|ignore', name, re.I)
    for label in name.split('.'):
        assert re.fullmatch(r'[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?',
                            label), name


def check_opts_line(line, subnets):
    fields = line.split(',')
    assert len(line) < 1000
    tag = fields[0]
    assert tag in {'tag:subnet-' + s.id for s in subnets}, tag
    assert re.fullmatch(r'tag:subnet-[A-Za-z0-9_-]{1,64}', tag)
    option, values = fields[1], fields[2:]
    if option == 'option:mtu':
        assert len(values) == 1 and 68 <= int(values[0]) <= 65535
        return
    assert option in ('option:router', 'option:dns-server', '249',
                      'option:classless-static-route',
                      'option6:dns-server'), option
    if option in ('249', 'option:classless-static-route'):
        assert values and len(values) % 2 == 0
        size = 0
        for dest, hop in zip(values[::2], values[1::2]):
            net = ipaddress.IPv4Network(dest)
            assert str(net) == dest
            assert str(ipaddress.IPv4Address(hop)) == hop
            size += 1 + (net.prefixlen + 7) // 8 + 4
        assert size <= 255                     # one DHCPv4 option
        return
    if option == 'option6:dns-server':
        for v in values:
            assert v[0] == '[' and v[-1] == ']'
            assert str(ipaddress.IPv6Address(v[1:-1])) == v[1:-1]
        return
    assert option == 'option:router' or values
    assert 4 * len(values) <= 255
    for v in values:
        assert str(ipaddress.IPv4Address(v)) == v


def check_plan(plan, conf, other_dhcp=True):
    """Whatever the planner says, it says it in well-shaped terms."""
    for text in plan.problems + ([plan.reason] if not plan.served else []):
        assert text.isprintable() and text.isascii(), text
        assert len(text) < 2000
    if not plan.served:
        assert 'cannot be planned' not in plan.reason, plan.reason
        return
    seen_macs, seen_ips = set(), set()
    for port_id, entry in plan.hosts.items():
        content = dnsmasq_conf.host_text(entry)
        assert model.SAFE_ID.fullmatch(port_id)
        assert not port_id.startswith('batch-')
        assert content.endswith('\n')
        for line in content[:-1].split('\n'):
            check_host_line(line)
            mac, addr, _ = line.split(',')
            seen_ips.add(addr.strip('[]'))
        assert plan.macs[mac] == port_id
        assert mac not in seen_macs
        seen_macs.add(mac)
    assert len(seen_ips) == sum(len(e.ips) for e in plan.hosts.values())
    # no VM is handed the address of a DHCP server (ours or another's)
    assert plan.interface.mac not in seen_macs
    assert not seen_ips & {a.split('/')[0] for a in plan.interface.addresses}
    if other_dhcp:
        assert 'fa:16:3e:00:00:03' not in seen_macs
        assert not seen_ips & {'10.0.0.3', '2001:db8::3'}
    for mac, why in plan.skipped.items():
        assert mac not in plan.macs and why.isprintable()
    for line in dnsmasq_conf.opts_content(plan).splitlines():
        check_opts_line(line, plan.subnets)
    files = dnsmasq_conf.Files(conf.state_dir, plan.quantum_id)
    for arg in dnsmasq_conf.command_line(conf, plan, files, 'vdn0'):
        assert arg.isprintable() and '\n' not in arg


@pytest.fixture(scope='module')
def conf(tmp_path_factory):
    path = tmp_path_factory.mktemp('conf') / 'c.conf'
    path.write_text('[DEFAULT]\nstate_dir = /var/lib/x\n[dnsmasq]\n'
                    'group = nogroup\n')
    return options.load(str(path))


def plans_of(doc, memo=None):
    snap = model.Snapshot.from_lists(doc['networks'], doc['subnets'],
                                       doc['ports'])
    return desired.compute([Network('red', NET)], snap, {'red'}, HOST, memo)


SETTINGS = settings(max_examples=2500, deadline=None, derandomize=True,
                    database=None,
                    suppress_health_check=list(HealthCheck))
counts = {'good': 0, 'anything': 0, 'served': 0}


@SETTINGS
@given(st.randoms(use_true_random=False))
def _good_ports_survive(conf, rnd):
    doc, applied = hostile_document(rnd)
    plan = plans_of(doc)[NET]
    counts['good'] += 1
    check_plan(plan, conf)
    assert plan.served, (applied, plan)
    for i in range(GOOD):
        assert text_of(plan, 'good-%d' % i) == good_entry(i), (applied,
                                                                plan.problems)
    # the memo only saves work: same plan with it, also on a second round
    memo = {}
    for _ in range(2):
        again = plans_of(doc, memo)[NET]
        assert (again.hosts, again.macs, again.problems, again.skipped) == (
            plan.hosts, plan.macs, plan.problems, plan.skipped)


def test_hostile_documents_good_ports_still_planned(conf):
    """Wrong values anywhere but in what the good ports need: the planner
    never raises, every good port keeps its exact entry, every line is of
    its strict shape, no VM gets a DHCP server's MAC or IP."""
    counts['good'] = 0
    _good_ports_survive(conf)
    assert counts['good'] >= 2000
    faultlog.record('hostile IPAM documents, planner (wrong types, None, '
                    'nesting, huge, newline at the end, control chars, bad '
                    'CIDR/IP/MAC, duplicates, DHCP port MAC/IP reused)',
                    counts['good'], 'planner never raised; every good port '
                    'planned with its exact entry; every line well-shaped',
                    leases_lost=0)


@SETTINGS
@given(st.randoms(use_true_random=False))
def _anything_goes(conf, rnd):
    doc, applied = hostile_document(rnd, anything=True)
    counts['anything'] += 1
    plan = plans_of(doc)[NET]
    check_plan(plan, conf, other_dhcp=False)
    counts['served'] += plan.served


def test_hostile_documents_anywhere_never_raise(conf):
    """The network, its subnets and our DHCP port go bad too: a plan or a
    NotServed with a reason, never an exception nor the catch-all."""
    counts['anything'] = counts['served'] = 0
    _anything_goes(conf)
    assert counts['anything'] >= 2000
    assert 0 < counts['served'] < counts['anything']
    faultlog.record('hostile IPAM documents, planner, any resource '
                    '(network, subnets, our DHCP port too)',
                    counts['anything'], 'never raised; %d served, the rest '
                    'NotServed with a reason' % counts['served'])


def test_unforeseen_error_in_one_network_is_not_served_logged_once(
        monkeypatch, caplog):
    other = '99999999-2222-4333-8444-555555555555'
    doc = base_document()
    snap = model.Snapshot.from_lists(doc['networks'] + [dict(
        doc['networks'][0], id=other)], doc['subnets'], doc['ports'])
    real = desired.plan_network

    def flaky(listed, *args):
        if listed.quantum_id == other:
            raise TypeError('unforeseen\n2026 forged log line')
        return real(listed, *args)
    monkeypatch.setattr(desired, 'plan_network', flaky)
    listed = [Network('red', NET), Network('blue', other)]
    for _ in range(3):
        plans = desired.compute(listed, snap, {'red', 'blue'}, HOST, {})
    assert plans[NET].served and text_of(plans[NET], 'good-0') == \
        good_entry(0)
    assert not plans[other].served
    assert plans[other].reason.startswith('the IPAM data of this network '
                                          'cannot be planned (TypeError')
    assert '\n' not in plans[other].reason
    assert len([r for r in caplog.records if 'cannot be planned' in
                r.getMessage()]) == 1


# -- the file source ----------------------------------------------------------

BAD_DOCUMENTS = [
    (b'[' * 100000 + b']' * 100000, 'nested too deeply'),
    (b'{"ports": ' + b'[' * 5000 + b']' * 5000 + b'}', 'nested too deeply'),
    (b'[]', 'not a JSON array'),
    (b'"ports"', 'not a JSON string'),
    (b'null', 'not a JSON null'),
    (b'17', 'not a JSON number'),
    (b'{"ports": {}}', "{'ports': object}"),
    (b'{"networks": "x\\n\\u001b[2J"}', "{'networks': string}"),
    (b'{"ports": [', 'Expecting'),
    (b'\xff\xfe', 'IPAM file'),
    (b'\x80abc', 'IPAM file'),
]


def test_file_source_bad_documents_are_source_errors(tmp_path):
    """Not an IPAM document, down to the parser's own recursion: a
    SourceError naming the file (the agent keeps serving what it has),
    never an exception that ends the agent."""
    path = tmp_path / 'ipam.json'
    source = FileSource(str(path))
    for text, reason in BAD_DOCUMENTS:
        path.write_bytes(text)
        with pytest.raises(SourceError) as e:
            source.snapshot([NET])
        assert reason in str(e.value), (text[:40], str(e.value))
        assert source.status()['reachable'] is False
        assert str(e.value).isprintable()
    faultlog.record('IPAM file that is not an IPAM document (deep nesting, '
                    'wrong top-level shape, not JSON)', len(BAD_DOCUMENTS),
                    'SourceError each time; the agent keeps serving what it '
                    'has')


def test_file_source_deep_values_inside_a_good_document(tmp_path):
    """Deep but parseable values reach the planner: it never recurses
    into them (no RecursionError), the port is skipped."""
    doc = base_document()
    doc['ports'][-1]['mac_address'] = nested(600, 'x')
    doc['ports'][-2]['created_at'] = nested(600, 'x')
    doc['networks'].append(dict(doc['networks'][0], mtu=nested(600, 1)))
    doc['networks'].append(dict(doc['networks'][0], mtu=nested(600, 2)))
    path = tmp_path / 'ipam.json'
    path.write_text(json.dumps(doc))
    try:
        snap = FileSource(str(path)).snapshot([NET])
    except SourceError as e:      # too deep for this stack: also fine
        assert 'nested too deeply' in str(e)
        return
    plan = desired.compute([Network('red', NET)], snap, {'red'}, HOST)[NET]
    assert plan.served and text_of(plan, 'good-0') == good_entry(0)
    assert any('victim-3 skipped: MAC [[[' in p for p in plan.problems)


def test_nastiest_values_one_by_one():
    """The shapes the issue names, each alone, with a newline at the END
    where it is a string."""
    cases = [
        ('ports', 'mac_address', 'fa:16:3e:00:02:00\n', 'is not a MAC'),
        ('ports', 'mac_address', {'mac': 'fa:16:3e:00:02:00'}, 'is not a MAC'),
        ('ports', 'id', 'victim-0\n', 'is not a safe identifier'),
        ('ports', 'id', ['victim-0'], 'is not a safe identifier'),
        ('ports', 'dns_name', 'victim\n', 'is not a valid DNS name'),
        ('ports', 'dns_name', 'victim\ndhcp-range=0.0.0.0', 'not a valid'),
        ('ports', 'fixed_ips', 7, 'is not a list'),
        ('ports', 'fixed_ips', [[SUB4, '10.0.0.100']], 'is not an object'),
        ('ports', 'fixed_ips', [{'subnet_id': [SUB4],
                                 'ip_address': '10.0.0.100'}],
         'is not a safe identifier'),
        ('ports', 'fixed_ips', [{'subnet_id': SUB4 + '\n',
                                 'ip_address': '10.0.0.100'}],
         'is not a safe identifier'),
        ('ports', 'fixed_ips', [{'subnet_id': SUB4,
                                 'ip_address': '10.0.0.100\n'}],
         'is not an IP address'),
        ('ports', 'mac_address', DHCP_MAC, 'belongs to DHCP port dhcp-ours'),
        ('ports', 'fixed_ips', [{'subnet_id': SUB4, 'ip_address': DHCP_IP4}],
         'IP 10.0.0.2 belongs to DHCP port dhcp-ours'),
        ('ports', 'fixed_ips', [{'subnet_id': SUB6,
                                 'ip_address': '2001:DB8::2'}],
         'IP 2001:db8::2 belongs to DHCP port dhcp-ours'),
        ('ports', 'fixed_ips', [{'subnet_id': SUB4,
                                 'ip_address': '10.0.0.3'}],
         'belongs to DHCP port dhcp-other (host host-b)'),
        ('subnets', 'id', EXTRA_SUB + '\n', 'is not a safe identifier'),
        ('subnets', 'cidr', '10.1.0.0/24\n', 'is not a network'),
        ('subnets', 'cidr', 'ten', 'is not a network'),
        ('subnets', 'gateway_ip', 167837953, 'is not an IP address'),
        ('subnets', 'gateway_ip', '10.1.0.1\n', 'is not an IP address'),
        ('subnets', 'dns_nameservers', 5, 'is not a list'),
        ('subnets', 'dns_nameservers', ['10.1.0.53\n'], 'not an IP address'),
        ('subnets', 'dns_nameservers', ['10.1.0.53'] * 17, 'more than'),
        ('subnets', 'host_routes', 3, 'is not a list'),
        ('subnets', 'host_routes', ['x'], 'is not an object'),
        ('subnets', 'host_routes', [{'destination': '10.5.0.0/16\n',
                                     'nexthop': '10.1.0.1'}], 'not a network'),
        ('subnets', 'enable_dhcp', 'yes', 'is not true or false'),
        ('subnets', 'ip_version', '4', 'does not match'),
    ]
    for resource, field, value, problem in cases:
        doc = base_document()
        target = doc[resource][2] if resource == 'subnets' else \
            doc['ports'][-1]
        target[field] = value
        plan = plans_of(doc)[NET]
        assert plan.served, (field, value)
        assert any(problem in p for p in plan.problems), (field, value,
                                                          plan.problems)
        for i in range(GOOD):
            assert text_of(plan, 'good-%d' % i) == good_entry(i)
        assert resource == 'subnets' or 'victim-3' not in plan.hosts
        for p in plan.problems:
            assert p.isprintable()
    # the network and our DHCP port: not served, with a reason
    for change, reason in [
            (lambda d: d['networks'][0].update(admin_state_up='false'),
             'network admin_state_up'),
            (lambda d: d['ports'][0].update(mac_address='fa:16:3e:0:0:2'),
             'DHCP port dhcp-ours: MAC'),
            (lambda d: d['ports'][0].update(fixed_ips={}),
             'DHCP port dhcp-ours: fixed_ips'),
            (lambda d: d['subnets'].__setitem__(slice(0, 2), []),
             'the DHCP port dhcp-ours has no address')]:
        doc = base_document()
        change(doc)
        plan = plans_of(doc)[NET]
        assert not plan.served and reason in plan.reason, plan.reason


# -- end to end: a real agent and dnsmasq ------------------------------------

DNSMASQ_COMPLAINTS = re.compile(r'bad|error|too long|duplicate|failed|'
                                r'cannot|illegal|unknown|missing', re.I)


def _nastiest(rnd):
    """Hand-picked hostile documents, then drawn ones."""
    docs = []
    for field, value in [('dns_name', 'evil\n'),
                         ('dns_name', 'evil\ndhcp-range=0.0.0.0'),
                         ('dns_name', '10.0.0.99'), ('dns_name', 'ignore'),
                         ('mac_address', 'fa:16:3e:00:02:03\n'),
                         ('mac_address', {'a': 1}), ('id', 'victim-3\n'),
                         ('id', 'batch-000000000000'), ('fixed_ips', 5),
                         ('mac_address', DHCP_MAC)]:
        doc = base_document()
        doc['ports'][-1][field] = value
        docs.append((doc, ['port %s = %r' % (field, value)]))
    for field, value in [('id', EXTRA_SUB + '\n'), ('gateway_ip', 167837953),
                         ('cidr', '10.1.0.0/24\n'),
                         ('dns_nameservers', ['10.1.0.53'] * 70),
                         ('host_routes', [{'destination': '10.%d.0.0/16' % i,
                                           'nexthop': '10.1.0.1'}
                                          for i in range(40)])]:
        doc = base_document()
        doc['subnets'][2][field] = value
        # served: our DHCP port gets an address on the extra subnet
        doc['ports'][0]['fixed_ips'].append({'subnet_id': EXTRA_SUB,
                                             'ip_address': '10.1.0.2'})
        docs.append((doc, ['extra subnet %s = %r' % (field, value)]))
    docs.append(('[' * 100000, ['deeply nested JSON']))
    docs.append(('[1, 2]', ['top level is a list']))
    docs.append((b'\xff\xfe\x00', ['not UTF-8']))
    for _ in range(25):
        docs.append(hostile_document(rnd, changes=rnd.randint(2, 8)))
    return docs


def _full_reread_complaints(pid, files):
    """SIGHUP dnsmasq (it re-reads the opts file, then every hosts file,
    from scratch) and return what it complained of in that re-read: the
    files on disk, all together, as dnsmasq takes them."""
    import signal
    from tests.rig import wait_for

    def text():
        with open(files.log, errors='replace') as f:
            return f.read()
    offset = len(text())
    os.kill(pid, signal.SIGHUP)
    names = sorted(os.listdir(files.hosts))
    opts_read = 'read %s\n' % files.opts

    def reread():
        tail = text()[offset:]
        at = tail.rfind(opts_read)
        if at < 0:
            return None
        after = tail[at:]
        if all('read %s/%s\n' % (files.hosts, n) in after for n in names):
            return after
        return None
    after = wait_for(reread, timeout=20, what='dnsmasq re-read its files')
    return [line for line in after.splitlines()
            if DNSMASQ_COMPLAINTS.search(line)]


def test_agent_serves_the_good_vm_through_hostile_documents(host, lab):
    """A real agent and dnsmasq, fed one hostile document after another:
    the agent never exits, the good VM gets its lease after every one,
    dnsmasq keeps its pid and, re-reading all our files from scratch
    after every document, never complains of a line."""
    from tests.rig import wait_for
    from vdsm_dhcp.agent import control
    from vdsm_dhcp.fileutil import atomic_write
    lab.bridge('red')

    def save(document):
        if isinstance(document, str):
            document = document.encode()
        elif not isinstance(document, bytes):
            document = json.dumps(document).encode()
        atomic_write(host.conf.file.path, document)

    save(base_document())
    host.networks(('red', NET))
    agent = host.agent()
    pid = agent.wait_served('red')['dnsmasq_pid']
    good_mac = good_port(0)['mac_address']
    vm = lab.vm('red', good_mac)     # good-0 (IPv4 here: udhcpc)
    lease = vm.dhcp()
    assert lease and lease['ip'] == '10.0.0.10', agent.log()
    files = dnsmasq_conf.Files(host.conf.state_dir, NET)
    rounds = 0
    for document, applied in _nastiest(random.Random(1010)):
        try:
            save(document)
        except RecursionError:     # too deep for json.dumps here: not sent
            continue
        # a round that read this document, then the good port ready
        answer = control.call(host.conf, 'wait', {
            'macs': [good_mac], 'timeout': 20}, timeout=30)
        assert answer['ready'], (applied, answer, agent.log()[-3000:])
        if isinstance(document, (str, bytes)):
            assert agent.status()['source']['reachable'] is False, applied
        assert agent.proc.poll() is None, agent.log()
        st = agent.network('red')
        assert st['served'] and st['dnsmasq_pid'] == pid, (applied, st)
        lease = vm.dhcp()
        assert lease and lease['ip'] == '10.0.0.10', (applied, agent.log())
        complaints = _full_reread_complaints(pid, files)
        assert not complaints, (applied, complaints)
        rounds += 1
    assert rounds >= 40
    # back to the good document: every port served again, same dnsmasq
    save(base_document())
    wait_for(lambda: agent.network('red')['hosts'] == GOOD + VICTIMS,
             timeout=30, what='all ports back')
    assert agent.network('red')['dnsmasq_pid'] == pid
    assert lab.vm('red', good_port(1)['mac_address']).dhcp()['ip'] == \
        '10.0.0.11'
    log_text = ''
    for path in (files.log + '.1', files.log):
        if os.path.exists(path):
            with open(path, errors='replace') as f:
                log_text += f.read()
    # dnsmasq reads a new hosts file at once but forgets a removed one
    # only at the SIGHUP that follows: entries moved out of a rewritten
    # batch file are, for that moment, duplicates of themselves; a file
    # replaced before dnsmasq got to it is gone when it does
    moved = [line for line in log_text.splitlines()
             if 'duplicate dhcp-host IP address' in line or (
                 'cannot read %s/' % files.hosts in line
                 and line.endswith('No such file or directory'))]
    complaints = [line for line in log_text.splitlines()
                  if DNSMASQ_COMPLAINTS.search(line) and line not in moved]
    assert not complaints, complaints
    faultlog.record('hostile IPAM documents fed to a running agent + dnsmasq '
                    '(newline-ended values, nesting, bad JSON, duplicates, '
                    'reused DHCP MAC/IP, oversize options)', rounds,
                    'agent never exited; good VM leased after every '
                    'document; dnsmasq same pid; no line rejected on a full '
                    're-read (%d transient duplicate warnings while entries '
                    'moved between hosts files)' % len(moved),
                    leases_lost=0)
