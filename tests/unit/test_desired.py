"""Desired state and dnsmasq's files, computed without root or I/O."""
import os
import threading

import pytest

from vdsm_dhcp import options
from vdsm_dhcp.dnsmasq import process as dnsmasq
from vdsm_dhcp.dnsmasq import conf as dnsmasq_conf
from vdsm_dhcp.model import Snapshot
from vdsm_dhcp.agent.desired import compute
from vdsm_dhcp.setdhcp.networks_file import Network

host_text = dnsmasq_conf.host_text


def texts(hosts):
    """port id -> the hostsdir text dnsmasq gets for each HostEntry."""
    return {p: host_text(e) for p, e in hosts.items()}


def entries_of(texts):
    """port id -> HostEntry, from the hostsdir text of each."""
    return {p: dnsmasq_conf.parse_host_text(p, t) for p, t in texts.items()}

NET = '11111111-2222-4333-8444-555555555555'
SUB4 = 'aaaaaaaa-0000-4000-8000-000000000004'
SUB6 = 'aaaaaaaa-0000-4000-8000-000000000006'


def port(pid, mac, ips, owner='compute:nova', host='', **extra):
    return dict(id=pid, network_id=NET, mac_address=mac, device_owner=owner,
                fixed_ips=[{'subnet_id': s, 'ip_address': ip}
                           for s, ip in ips], **{'binding:host_id': host},
                **extra)


def snapshot(ports=(), v6_mode=None, dhcp=True, mtu=1450):
    subnets = [dict(id=SUB4, network_id=NET, cidr='10.0.0.0/24',
                    gateway_ip='10.0.0.1', dns_nameservers=['10.0.0.53'],
                    host_routes=[{'destination': '172.16.0.0/16',
                                  'nexthop': '10.0.0.254'}],
                    ip_version=4, enable_dhcp=dhcp)]
    if v6_mode:
        subnets.append(dict(id=SUB6, network_id=NET, cidr='2001:db8::/64',
                            gateway_ip='2001:db8::1', ip_version=6,
                            dns_nameservers=['2001:db8::53'],
                            ipv6_address_mode=v6_mode, enable_dhcp=True))
    dhcp_ips = [(SUB4, '10.0.0.2')] + ([(SUB6, '2001:db8::2')]
                                       if v6_mode else [])
    ports = [port('dhcp-a', 'fa:16:3e:00:00:02', dhcp_ips,
                  owner='network:dhcp', host='host-a'),
             port('dhcp-b', 'fa:16:3e:00:00:03', [(SUB4, '10.0.0.3')],
                  owner='network:dhcp', host='host-b')] + list(ports)
    return Snapshot.from_lists([dict(id=NET, mtu=mtu, admin_state_up=True)],
                               subnets, ports)


LISTED = [Network('red', NET)]


def plan_of(snap, bridges=('red',), host='host-a'):
    return compute(LISTED, snap, set(bridges), host)[NET]


def test_served_network_plan():
    plan = plan_of(snapshot([port('p1', 'FA:16:3E:00:00:10',
                                  [(SUB4, '10.0.0.10')])]))
    assert plan.served
    assert plan.interface.namespace == 'qdhcp-' + NET
    assert plan.interface.mac == 'fa:16:3e:00:00:02'      # host-a's port
    assert plan.interface.addresses == ('10.0.0.2/24',)
    assert texts(plan.hosts) == {
        'p1': 'fa:16:3e:00:00:10,10.0.0.10,host-10-0-0-10\n'}
    assert plan.macs == {'fa:16:3e:00:00:10': 'p1'}
    assert plan.mtu == 1450


def test_each_host_takes_its_own_dhcp_port():
    plan = plan_of(snapshot(), host='host-b')
    assert plan.interface.mac == 'fa:16:3e:00:00:03'
    assert plan.interface.addresses == ('10.0.0.3/24',)


@pytest.mark.parametrize('change, reason', [
    (dict(bridges=()), 'bridge red does not exist on this host'),
    (dict(host='host-c'), 'no DHCP port (device_owner network:dhcp) bound '
     'to host host-c'),
])
def test_not_served_says_why(change, reason):
    kwargs = dict(bridges=('red',), host='host-a')
    kwargs.update(change)
    plan = plan_of(snapshot(), **kwargs)
    assert not plan.served and plan.reason == reason


def test_unknown_network_and_no_dhcp_subnet():
    assert compute(LISTED, Snapshot({}, {}, {}), {'red'}, 'host-a')[
        NET].reason == 'network %s is unknown to the IPAM' % NET
    assert plan_of(snapshot(dhcp=False)).reason == 'no DHCP-enabled subnet'


@pytest.mark.parametrize('bad, problem', [
    (port('p2', 'fa:16:3e:00:00:20', [(SUB4, '10.0.0.20')],
          dns_name='a\nb'), "hostname 'a\\nb' is not a valid DNS name"),
    (port('p2', 'fa:16:3e:00:00:20', [(SUB4, '10.0.0.20')],
          dns_name='a,b'), "hostname 'a,b' is not a valid DNS name"),
    (port('p2', 'zz:16:3e:00:00:20', [(SUB4, '10.0.0.20')]),
     "MAC 'zz:16:3e:00:00:20' is not a MAC address"),
    (port('p2', '01:00:5e:00:00:20', [(SUB4, '10.0.0.20')]),
     'is a multicast address'),
    (port('p2', 'fa:16:3e:00:00:20', [(SUB4, '10.1.0.20')]),
     'IP 10.1.0.20 is outside its subnet'),
    (port('p2', 'fa:16:3e:00:00:20', [(SUB4, '10.0.0.10')]),
     'IP 10.0.0.10 is also port p1'),
    (port('p2', 'fa:16:3e:00:00:10', [(SUB4, '10.0.0.20')]),
     'MAC fa:16:3e:00:00:10 is also port p1'),
    (port('../etc', 'fa:16:3e:00:00:20', [(SUB4, '10.0.0.20')]),
     "port id '../etc' is not a safe identifier"),
    (port('p2', 'fa:16:3e:00:00:20', [(SUB4, '10.0.0.x')]),
     "IP '10.0.0.x' is not an IP address"),
    # a newline at the END of a value: `$` would let each of these through
    (port('p2', 'fa:16:3e:00:00:20', [(SUB4, '10.0.0.20')],
          dns_name='vm\n'), "hostname 'vm\\n' is not a valid DNS name"),
    (port('p2', 'fa:16:3e:00:00:20\n', [(SUB4, '10.0.0.20')]),
     "MAC 'fa:16:3e:00:00:20\\n' is not a MAC address"),
    (port('p2\n', 'fa:16:3e:00:00:20', [(SUB4, '10.0.0.20')]),
     "port id 'p2\\n' is not a safe identifier"),
    (port('p2', 'fa:16:3e:00:00:20', [(SUB4, '10.0.0.20\n')]),
     "IP '10.0.0.20\\n' is not an IP address"),
    (port('p2', 'fa:16:3e:00:00:20', [(SUB4 + '\n', '10.0.0.20')]),
     'is not a safe identifier'),
    # wrong types where the planner used to raise
    (port('p2', {'mac': 1}, [(SUB4, '10.0.0.20')]),
     "MAC {'mac': 1} is not a MAC address"),
    (dict(port('p2', 'fa:16:3e:00:00:20', []), fixed_ips=7),
     'fixed_ips 7 is not a list'),
    (port('p2', 'fa:16:3e:00:00:20', [([SUB4], '10.0.0.20')]),
     'is not a safe identifier'),
    (port(['p2'], 'fa:16:3e:00:00:20', [(SUB4, '10.0.0.20')]),
     "port id ['p2'] is not a safe identifier"),
    # what dnsmasq reads in a host name field as something else
    (port('p2', 'fa:16:3e:00:00:20', [(SUB4, '10.0.0.20')],
          dns_name='10.0.0.99'), 'is not a valid DNS name'),
    (port('p2', 'fa:16:3e:00:00:20', [(SUB4, '10.0.0.20')],
          dns_name='ignore'), 'is not a valid DNS name'),
    (port('p2', 'fa:16:3e:00:00:20', [(SUB4, '10.0.0.20')],
          dns_name='600'), 'is not a valid DNS name'),
    (port('batch-0123456789ab', 'fa:16:3e:00:00:20', [(SUB4, '10.0.0.20')]),
     "names the agent's own files"),
    # our DHCP port's (or another host's) MAC or IP on a VM port
    (port('p2', 'FA:16:3E:00:00:02', [(SUB4, '10.0.0.20')]),
     'MAC fa:16:3e:00:00:02 belongs to DHCP port dhcp-a (host host-a)'),
    (port('p2', 'fa:16:3e:00:00:20', [(SUB4, '10.0.0.3')]),
     'IP 10.0.0.3 belongs to DHCP port dhcp-b (host host-b)'),
    (port('p2', 'fa:16:3e:00:00:20', [(SUB4, '10.0.0.255')]),
     'is the network or broadcast address'),
    (port('p1', 'fa:16:3e:00:00:20', [(SUB4, '10.0.0.20')]),
     'port id p1 is listed twice'),
    (port('p2', 'fa:16:3e:00:00:20', [(SUB4, '10.0.0.20')] * 65),
     'fixed_ips has 65 entries, more than the 64 allowed'),
])
def test_hostile_port_is_skipped_rest_served(bad, problem):
    good = port('p1', 'fa:16:3e:00:00:10', [(SUB4, '10.0.0.10')],
                created_at='2020-01-01T00:00:00Z')
    bad['created_at'] = '2021-01-01T00:00:00Z'
    plan = plan_of(snapshot([good, bad]))
    assert plan.served
    assert texts(plan.hosts) == {
        'p1': 'fa:16:3e:00:00:10,10.0.0.10,host-10-0-0-10\n'}
    assert plan.macs == {'fa:16:3e:00:00:10': 'p1'}
    assert any(problem in p for p in plan.problems), plan.problems
    # shown escaped: no problem can forge a log line or drive a terminal
    assert all(p.isprintable() and p.isascii() for p in plan.problems)


def test_ipv6_stateful_and_stateless():
    ports = [port('p1', 'fa:16:3e:00:00:10',
                  [(SUB4, '10.0.0.10'), (SUB6, '2001:db8::10')])]
    plan = plan_of(snapshot(ports, v6_mode='dhcpv6-stateful'))
    assert plan.interface.addresses == ('10.0.0.2/24', '2001:db8::2/64')
    assert host_text(plan.hosts['p1']) == (
        'fa:16:3e:00:00:10,10.0.0.10,host-10-0-0-10\n'
        'fa:16:3e:00:00:10,[2001:db8::10],host-10-0-0-10\n')
    plan = plan_of(snapshot(ports, v6_mode='dhcpv6-stateless'))
    assert host_text(plan.hosts['p1']) == \
        'fa:16:3e:00:00:10,10.0.0.10,host-10-0-0-10\n'


@pytest.fixture
def conf(tmp_path):
    path = tmp_path / 'c.conf'
    path.write_text('[DEFAULT]\nstate_dir = /var/lib/x\n[dnsmasq]\n'
                    'group = nogroup\n')
    return options.load(str(path))


def test_dnsmasq_command_line_and_opts(conf):
    plan = plan_of(snapshot(v6_mode='dhcpv6-stateful'))
    files = dnsmasq_conf.Files(conf.state_dir, NET)
    argv = dnsmasq_conf.command_line(conf, plan, files, 'vdn1111111122')
    assert argv[0] == 'dnsmasq'
    for arg in ('--port=0', '--bind-interfaces', '--interface=vdn1111111122',
                '--user=nobody', '--group=nogroup', '--no-resolv',
                '--dhcp-hostsdir=/var/lib/x/%s/hosts' % NET,
                '--dhcp-leasefile=/var/lib/x/%s/leases' % NET,
                '--dhcp-range=set:subnet-%s,10.0.0.0,static,255.255.255.0,'
                '86400s' % SUB4,
                '--dhcp-range=set:subnet-%s,2001:db8::,static,64,86400s'
                % SUB6):
        assert arg in argv
    # several hosts serve one network: none may NAK the others' clients
    assert not any('authoritative' in a for a in argv)
    opts = dnsmasq_conf.opts_content(plan).splitlines()
    tag4, tag6 = 'tag:subnet-' + SUB4, 'tag:subnet-' + SUB6
    assert opts == [
        tag4 + ',option:router,10.0.0.1',
        tag4 + ',option:dns-server,10.0.0.53',
        tag4 + ',option:classless-static-route,172.16.0.0/16,10.0.0.254,'
        '0.0.0.0/0,10.0.0.1',
        tag4 + ',249,172.16.0.0/16,10.0.0.254,0.0.0.0/0,10.0.0.1',
        tag4 + ',option:mtu,1450',
        tag6 + ',option6:dns-server,[2001:db8::53]']


def test_ports_of_unlisted_networks_never_reach_a_plan():
    other = '99999999-2222-4333-8444-555555555555'
    snap = snapshot()
    snap.networks[other] = dict(id=other)
    plans = compute(LISTED, snap, {'red', 'blue'}, 'host-a')
    assert list(plans) == [NET]


def _entries(hostsdir):
    return {p: host_text(entry) for p, (_, entry) in
            dnsmasq_conf.read_hostsdir(hostsdir).items()}


def test_hostsdir_sync_one_file_per_port_batches_and_reloads(tmp_path):
    path = tmp_path / 'c.conf'
    path.write_text('[DEFAULT]\nstate_dir = %s\n' % tmp_path)
    dm = dnsmasq.Dnsmasq(options.load(str(path)), NET)
    dm.files.create()
    hosts = {'p%d' % i: 'fa:16:3e:00:00:%02x,10.0.0.%d,h%d\n' % (i, i, i)
             for i in range(1, 6)}
    # a burst of new ports: one batch file, no reload needed
    assert dm.sync_hosts(entries_of(hosts)) is False
    files = sorted(p.name for p in (tmp_path / NET / 'hosts').iterdir())
    assert len(files) == 1 and files[0].startswith('batch-')
    assert _entries(dm.files.hosts) == hosts
    # one new port: its own file, no reload
    hosts['p9'] = 'fa:16:3e:00:00:09,10.0.0.9,h9\n'
    assert dm.sync_hosts(entries_of(hosts)) is False
    assert (tmp_path / NET / 'hosts' / 'p9').read_text() == hosts['p9']
    # nothing changed: nothing written, no reload
    mtime = (tmp_path / NET / 'hosts' / 'p9').stat().st_mtime_ns
    assert dm.sync_hosts(entries_of(hosts)) is False
    assert (tmp_path / NET / 'hosts' / 'p9').stat().st_mtime_ns == mtime
    # a port in the batch changes: reload; each MAC still in one file only
    hosts['p3'] = 'fa:16:3e:00:00:03,10.0.0.33,h3\n'
    del hosts['p9']
    assert dm.sync_hosts(entries_of(hosts)) is True
    assert _entries(dm.files.hosts) == hosts
    text = ''.join(p.read_text() for p in (tmp_path / NET / 'hosts').iterdir())
    macs = [line.split(',')[0] for line in text.splitlines()
            if line and not line.startswith('#')]
    assert sorted(macs) == sorted(set(macs)) and len(macs) == 5
    # a fresh object (an agent restart) reads back the same state
    dm2 = dnsmasq.Dnsmasq(dm.conf, NET)
    dm2.written = dnsmasq_conf.read_hostsdir(dm.files.hosts)
    assert dm2.sync_hosts(entries_of(hosts)) is False
    assert not list((tmp_path / NET / 'tmp').iterdir())


def test_memo_gives_the_same_plans_and_never_stale_ones():
    memo = {}
    p1 = port('p1', 'fa:16:3e:00:00:10', [(SUB4, '10.0.0.10')])
    bad = port('p2', 'fa:16:3e:00:00:20', [(SUB4, '10.9.0.20')])
    snap = snapshot([p1, bad])
    first = plan_of(snap)
    with_memo = compute(LISTED, snap, {'red'}, 'host-a', memo)[NET]
    assert (with_memo.hosts, with_memo.problems) == (first.hosts,
                                                      first.problems)
    # the port changes: its new entry, not the remembered one
    p1['fixed_ips'][0]['ip_address'] = '10.0.0.11'
    bad['fixed_ips'][0]['ip_address'] = '10.0.0.20'
    plan = compute(LISTED, snapshot([p1, bad]), {'red'}, 'host-a', memo)[NET]
    assert texts(plan.hosts) == {
        'p1': 'fa:16:3e:00:00:10,10.0.0.11,host-10-0-0-11\n',
        'p2': 'fa:16:3e:00:00:20,10.0.0.20,host-10-0-0-20\n'}
    assert plan.problems == []
    # the subnet changes under an unchanged port: re-validated
    snap = snapshot([p1])
    snap.subnets[NET][0]['cidr'] = '10.0.1.0/24'
    snap.subnets[NET][0]['gateway_ip'] = '10.0.1.1'
    snap.ports[NET][0]['fixed_ips'][0]['ip_address'] = '10.0.1.2'  # dhcp-a
    plan = compute(LISTED, snap, {'red'}, 'host-a', memo)[NET]
    assert plan.hosts == {} and 'outside its subnet' in plan.problems[0]
    # ports that are gone are forgotten
    assert len(memo[NET][1]) == 1


def test_memo_keeps_no_object_of_the_document():
    """What outlives a round holds no string of the parsed document: one
    such string keeps the memory the document was parsed into resident
    after it is dropped (and the port's texts are held once)."""
    import json
    memo = {}
    ports = [port('p%d' % k, 'fa:16:3e:00:01:%02x' % k,
                  [(SUB4, '10.0.0.%d' % (10 + k))]) for k in range(5)]
    snap = snapshot(ports, v6_mode='dhcpv6-stateful')
    parsed = json.loads(json.dumps(
        [snap.networks[NET], snap.subnets[NET], snap.ports[NET]]))
    doc = {id(x) for x in _walk(parsed) if _own(x)}
    snap = Snapshot.from_lists([parsed[0]], parsed[1], parsed[2])
    plan = compute(LISTED, snap, {'red'}, 'host-a', memo)[NET]
    assert len(plan.hosts) == 5
    kept = [x for x in _walk([memo, plan]) if _own(x)]
    assert kept and not [x for x in kept if id(x) in doc]
    entry = plan.hosts['p1']
    key = [k for k, v in memo[NET][1].items() if v[1] is entry][0]
    assert key[0] is entry.port_id and key[1] is entry.mac


def _own(x):
    """A string or int that is an object of its own (not one that Python
    shares: small ints, '' and 1-character strings)."""
    return type(x) is str and len(x) > 1 or type(x) is int and not (
        -5 <= x <= 256)


def _walk(root):
    seen, todo = set(), [root]
    while todo:
        x = todo.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        yield x
        if isinstance(x, dict):
            todo.extend(x)
            todo.extend(x.values())
        elif isinstance(x, (list, tuple, set, frozenset)):
            todo.extend(x)
        elif hasattr(x, '__dataclass_fields__'):
            todo.extend(getattr(x, f) for f in x.__dataclass_fields__)


def test_an_unchanged_network_keeps_its_plan_and_gone_ones_are_forgotten():
    memo = {}
    p1 = port('p1', 'fa:16:3e:00:00:10', [(SUB4, '10.0.0.10')])
    first = compute(LISTED, snapshot([p1]), {'red'}, 'host-a', memo)[NET]
    again = compute(LISTED, snapshot([p1]), {'red'}, 'host-a', memo)[NET]
    assert again is first
    p1['fixed_ips'][0]['ip_address'] = '10.0.0.11'
    changed = compute(LISTED, snapshot([p1]), {'red'}, 'host-a', memo)[NET]
    assert changed is not first and changed != first
    assert texts(changed.hosts) == {
        'p1': 'fa:16:3e:00:00:10,10.0.0.11,host-10-0-0-11\n'}
    # no longer listed: the memo forgets the network
    others = [Network('blue', 'b%d' % k) for k in range(2)]
    compute(others, snapshot([p1]), {'red'}, 'host-a', memo)
    assert not [k for k in memo if NET in (k, k[1] if type(k) is tuple
                                           else None)]


def test_load_tracker_believes_only_dnsmasqs_own_reads(tmp_path, monkeypatch):
    from vdsm_dhcp.dnsmasq import readiness
    log = tmp_path / 'dnsmasq.log'
    hosts = '/state/x/hosts'
    log.write_text('Nov 1 dnsmasq-dhcp[1]: read %s/p1\n' % hosts)  # old
    monkeypatch.setattr(readiness, 'dnsmasq_idle', lambda pid: True)
    tracker = readiness.LoadTracker(str(log), hosts)
    tracker.expect({'p1': 'p1', 'p2': 'batch-1', 'p3': 'batch-1'})
    tracker.confirm(1)
    assert tracker.pending('p1')          # a read from before our write
    with open(log, 'a') as f:
        f.write('Nov 1 dnsmasq[1]: inotify: %s/p1 new or modified\n'
                'Nov 1 dnsmasq-dhcp[1]: read %s/p1\n'
                'Nov 1 dnsmasq-dhcp[1]: read %s/batch-1\n'
                'Nov 1 dnsmasq[1]: cannot read %s/batch-1: No such file or '
                'directory\nNov 1 dnsmasq-dhcp[1]: rea' % ((hosts,) * 4))
    tracker.confirm(1)
    assert not tracker.pending('p1')
    assert tracker.pending('p2') and tracker.pending('p3')  # never loaded
    monkeypatch.setattr(readiness, 'dnsmasq_idle', lambda pid: False)
    with open(log, 'a') as f:       # the rest of a half-written line
        f.write('d %s/batch-1\n' % hosts)
    tracker.confirm(1)
    assert tracker.pending('p2')          # read, but dnsmasq still busy
    monkeypatch.setattr(readiness, 'dnsmasq_idle', lambda pid: True)
    tracker.confirm(1)
    assert tracker.pending_count() == 0


@pytest.mark.parametrize('change, problem', [
    (dict(gateway_ip=167772161), 'gateway_ip 167772161 is not an IP address'),
    (dict(gateway_ip='10.0.0.1\n'), "gateway_ip '10.0.0.1\\n' is not an IP"),
    (dict(id=SUB4 + '\n'), 'is not a safe identifier'),
    (dict(cidr='10.0.0.0/24\n'), 'is not a network'),
    (dict(cidr=['10.0.0.0/24']), 'is not a network'),
    (dict(dns_nameservers=4), 'dns_nameservers 4 is not a list'),
    (dict(dns_nameservers=['10.0.0.53\n']), 'is not an IP address'),
    (dict(dns_nameservers=['2001:db8::53']), 'is not IPv4'),
    (dict(dns_nameservers=['10.0.0.53'] * 17), 'more than the 16 allowed'),
    (dict(host_routes=7), 'host_routes 7 is not a list'),
    (dict(host_routes=[['172.16.0.0/16', '10.0.0.254']]), 'is not an object'),
    (dict(host_routes=[{'destination': '172.16.0.0/16',
                        'nexthop': 10}]), 'nexthop 10 is not an IP'),
    (dict(enable_dhcp='true'), 'is not true or false'),
    (dict(ip_version=6), 'does not match'),
])
def test_bad_subnet_is_skipped_with_its_reason(change, problem):
    """The only DHCP subnet goes bad: not served, the reason in problems;
    never a raw value written for dnsmasq."""
    snap = snapshot([port('p1', 'fa:16:3e:00:00:10', [(SUB4, '10.0.0.10')])])
    snap.subnets[NET][0].update(change)
    plan = plan_of(snap)
    assert not plan.served and plan.reason == 'no DHCP-enabled subnet'
    assert any(problem in p for p in plan.problems), plan.problems


def test_bad_network_fields():
    snap = snapshot(mtu='1450\n')
    plan = plan_of(snap)
    assert plan.served and plan.mtu is None
    assert any('network mtu' in p for p in plan.problems)
    for mtu in (True, 67, 65536, 1450.0):
        assert plan_of(snapshot(mtu=mtu)).mtu is None
    snap = snapshot()
    snap.networks[NET]['admin_state_up'] = 'false'
    plan = plan_of(snap)
    assert not plan.served and 'admin_state_up' in plan.reason


def test_our_dhcp_port_malformed_is_not_served_with_reason():
    snap = snapshot()
    snap.ports[NET][0]['fixed_ips'] = 5
    plan = plan_of(snap)
    assert not plan.served
    assert plan.reason == 'DHCP port dhcp-a: fixed_ips 5 is not a list'


def test_rendered_lines_refuse_what_validation_should_have_stopped(conf):
    from vdsm_dhcp.dnsmasq.conf import RenderError, host_line
    from vdsm_dhcp.model import SubnetPlan
    import ipaddress
    bad = SubnetPlan(id=SUB4, cidr='10.0.0.0/24', ip_version=4,
                     gateway='10.0.0.1\ndhcp-range=0.0.0.0')
    plan = plan_of(snapshot())
    plan.subnets = (bad,)
    with pytest.raises(dnsmasq_conf.DnsmasqError):
        dnsmasq_conf.opts_content(plan)
    plan.subnets = (SubnetPlan(id=SUB4 + ',x', cidr='10.0.0.0/24',
                               ip_version=4),)
    with pytest.raises(dnsmasq_conf.DnsmasqError):
        dnsmasq_conf.command_line(conf, plan, dnsmasq_conf.Files('/x', NET),
                                  'vdn0')
    ip = ipaddress.ip_address('10.0.0.5')
    for name in ('a\nb', 'a,b', '10.0.0.9', 'ignore', '600'):
        with pytest.raises(RenderError):
            host_line('fa:16:3e:00:00:10', ip, name)
    assert host_line('fa:16:3e:00:00:10', ip, 'vm-1') == \
        'fa:16:3e:00:00:10,10.0.0.5,vm-1\n'


def test_show_escapes_and_bounds_untrusted_values():
    from vdsm_dhcp.untrusted import show
    assert show('a\nb') == "'a\\nb'"
    assert '\x1b' not in show('\x1b[2J') and '\\x1b' in show('\x1b[2J')
    assert show('\u202e') == "'\\u202e'"
    assert len(show('x' * 10 ** 6)) < 100
    deep = []
    for _ in range(10000):
        deep = [deep]
    assert len(show(deep)) < 50
    assert show(10 ** 5000) == '<int>'
    for value in ('a\nb', '\x1b[31m', 'é\u2028', {'a': ['\r']}, None):
        assert show(value).isprintable() and show(value).isascii()


def test_read_hostsdir_never_raises_and_sync_removes_what_is_not_ours(
        tmp_path):
    path = tmp_path / 'c.conf'
    path.write_text('[DEFAULT]\nstate_dir = %s\n' % tmp_path)
    dm = dnsmasq.Dnsmasq(options.load(str(path)), NET)
    dm.files.create()
    hosts = tmp_path / NET / 'hosts'
    line = 'fa:16:3e:00:00:0%d,10.0.0.%d,h%d\n'
    (hosts / 'p1').write_bytes(b'\xff\xfe garbage\n')     # not UTF-8
    (hosts / 'batch-000000000001').write_text(
        'stray text\n# port p2\n' + line % (2, 2, 2) +
        '# port p3\n' + line % (3, 3, 3))
    (hosts / 'batch-000000000002').write_text('nothing of ours')
    (hosts / 'batch-000000000003').write_text('# port p3\n' + line % (3, 3, 3))
    (hosts / 'subdir').mkdir()
    os.mkfifo(hosts / 'fifo')                  # would block a plain open()
    (hosts / 'link').symlink_to('/etc/passwd')
    result = []
    reader = threading.Thread(target=lambda: result.append(
        dnsmasq_conf.read_hostsdir(str(hosts))), daemon=True)
    reader.start()
    reader.join(30)
    if reader.is_alive():          # blocked opening the FIFO: release it
        os.close(os.open(hosts / 'fifo', os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail('read_hostsdir blocked on a FIFO')
    entries = result[0]
    assert entries['p1'] == ('p1', None)      # not ours: rewritten
    assert entries['p2'] == ('batch-000000000001', dnsmasq_conf.
                             parse_host_text('p2', line % (2, 2, 2)))
    assert entries['p3'][0] == 'batch-000000000001'
    stale = {k for k in entries if k.startswith(dnsmasq_conf.STALE_KEY)}
    assert stale == {dnsmasq_conf.STALE_KEY + n for n in (
        'batch-000000000001', 'batch-000000000002', 'batch-000000000003')}
    assert dnsmasq_conf.read_hostsdir(str(tmp_path / 'missing')) == {}
    assert dnsmasq_conf.read_hostsdir(str(hosts / 'p1')) == {}   # not a dir
    # an agent restart: the next sync leaves exactly the wanted entries
    dm.written = entries
    wanted = {p: line % (i, i, i) for i, p in ((1, 'p1'), (2, 'p2'),
                                               (3, 'p3'))}
    dm.sync_hosts(entries_of(wanted))
    text = ''.join(p.read_text() for p in hosts.iterdir() if p.is_file()
                   and not p.is_symlink() and p.name != 'fifo')
    lines = sorted(t for t in text.splitlines() if not t.startswith('#'))
    assert lines == sorted(v.strip() for v in wanted.values())
    assert _entries(str(hosts)) == wanted


def test_seeding_leases_never_raises_on_what_it_reads(tmp_path):
    path = tmp_path / 'c.conf'
    path.write_text('[DEFAULT]\nstate_dir = %s\n' % tmp_path)
    dm = dnsmasq.Dnsmasq(options.load(str(path)), NET)
    dm.files.create()
    (tmp_path / NET / 'leases').write_bytes(b'\xff\xfe\x00 junk\nduid x\n')
    dm.seed_leases(entries_of({'p1': 'fa:16:3e:00:00:10,10.0.0.10,vm\n'
                                     'fa:16:3e:00:00:10,[2001:db8::10],vm\n'}))
    data = (tmp_path / NET / 'leases').read_bytes()
    first, rest = data.split(b'\n', 1)
    assert first.endswith(b' fa:16:3e:00:00:10 10.0.0.10 * *')
    assert rest == b'\xff\xfe\x00 junk\nduid x\n'     # kept byte for byte


def test_the_longest_valid_subnet_still_renders_within_dnsmasq_limits(conf):
    """At the limits validation allows, every line still fits what
    dnsmasq reads (1024 characters a line, 255 bytes a DHCPv4 option)."""
    snap = snapshot(v6_mode='dhcpv6-stateful')
    sub4, sub6 = snap.subnets[NET]
    sub4['cidr'], sub4['gateway_ip'] = '0.0.0.0/0', '255.255.255.254'
    sub4['dns_nameservers'] = ['255.255.255.%d' % (200 + i)
                               for i in range(16)]
    sub4['host_routes'] = [{'destination': '255.255.255.%d/32' % (200 + i),
                            'nexthop': '255.255.255.%d' % (200 + i)}
                           for i in range(24)]
    sub6['dns_nameservers'] = ['ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff%02x'
                               % i for i in range(16)]
    snap.ports[NET][0]['fixed_ips'][0]['ip_address'] = '10.0.0.2'
    plan = plan_of(snap)
    assert plan.served and len(plan.subnets) == 2, plan.problems
    lines = dnsmasq_conf.opts_content(plan).splitlines()
    assert max(len(line) for line in lines) < 1000
    routes = next(line for line in lines if ',249,' in line)
    assert len(routes.split(',')) == 2 + 2 * 25


@pytest.mark.parametrize('newer, problem', [
    (port('p2', 'fa:16:3e:00:00:20', [(SUB4, '10.0.0.10')]),
     'IP 10.0.0.10 is also port p1'),
    (port('p2', 'fa:16:3e:00:00:10', [(SUB4, '10.0.0.20')]),
     'MAC fa:16:3e:00:00:10 is also port p1'),
])
def test_the_oldest_port_wins_a_conflict_whatever_the_ipam_order(newer,
                                                                  problem):
    # the planner takes the IPAM's order until it meets a conflict, then
    # plans again oldest first: listed first, the newer port still loses
    older = port('p1', 'fa:16:3e:00:00:10', [(SUB4, '10.0.0.10')],
                 created_at='2020-01-01T00:00:00Z')
    newer['created_at'] = '2021-01-01T00:00:00Z'
    others = [port('p%d' % i, 'fa:16:3e:00:01:%02x' % i,
                   [(SUB4, '10.0.0.%d' % (100 + i))]) for i in range(3, 8)]
    for ports in ([newer, older] + others, others + [newer, older]):
        plan = plan_of(snapshot(ports))
        assert set(plan.hosts) == {'p1'} | {p['id'] for p in others}
        assert [p for p in plan.problems if 'skipped' in p] == [
            'port p2 skipped: ' + problem]
