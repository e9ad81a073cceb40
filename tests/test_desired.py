"""Desired state and dnsmasq's files, computed without root or I/O."""
import pytest

from vdsm_dhcp import config, dnsmasq
from vdsm_dhcp.desired import Snapshot, compute
from vdsm_dhcp.networks_file import Network

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
    assert plan.hosts == {'p1': 'fa:16:3e:00:00:10,10.0.0.10,host-10-0-0-10\n'}
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
])
def test_hostile_port_is_skipped_rest_served(bad, problem):
    good = port('p1', 'fa:16:3e:00:00:10', [(SUB4, '10.0.0.10')],
                created_at='2020-01-01T00:00:00Z')
    bad['created_at'] = '2021-01-01T00:00:00Z'
    plan = plan_of(snapshot([good, bad]))
    assert plan.served
    assert list(plan.hosts) == ['p1']
    assert any(problem in p for p in plan.problems), plan.problems


def test_ipv6_stateful_and_stateless():
    ports = [port('p1', 'fa:16:3e:00:00:10',
                  [(SUB4, '10.0.0.10'), (SUB6, '2001:db8::10')])]
    plan = plan_of(snapshot(ports, v6_mode='dhcpv6-stateful'))
    assert plan.interface.addresses == ('10.0.0.2/24', '2001:db8::2/64')
    assert plan.hosts['p1'] == ('fa:16:3e:00:00:10,10.0.0.10,host-10-0-0-10\n'
                                'fa:16:3e:00:00:10,[2001:db8::10],'
                                'host-10-0-0-10\n')
    plan = plan_of(snapshot(ports, v6_mode='dhcpv6-stateless'))
    assert plan.hosts['p1'] == 'fa:16:3e:00:00:10,10.0.0.10,host-10-0-0-10\n'


@pytest.fixture
def conf(tmp_path):
    path = tmp_path / 'c.conf'
    path.write_text('[DEFAULT]\nstate_dir = /var/lib/x\n[dnsmasq]\n'
                    'group = nogroup\n')
    return config.load(str(path))


def test_dnsmasq_command_line_and_opts(conf):
    plan = plan_of(snapshot(v6_mode='dhcpv6-stateful'))
    files = dnsmasq.Files(conf.state_dir, NET)
    argv = dnsmasq.command_line(conf, plan, files, 'vdn1111111122')
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
    opts = dnsmasq.opts_content(plan).splitlines()
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
    return {p: text for p, (_, text) in
            dnsmasq.read_hostsdir(hostsdir).items()}


def test_hostsdir_sync_one_file_per_port_batches_and_reloads(tmp_path):
    path = tmp_path / 'c.conf'
    path.write_text('[DEFAULT]\nstate_dir = %s\n' % tmp_path)
    dm = dnsmasq.Dnsmasq(config.load(str(path)), NET)
    dm.files.create()
    hosts = {'p%d' % i: 'fa:16:3e:00:00:%02x,10.0.0.%d,h%d\n' % (i, i, i)
             for i in range(1, 6)}
    # a burst of new ports: one batch file, no reload needed
    assert dm.sync_hosts(dict(hosts)) is False
    files = sorted(p.name for p in (tmp_path / NET / 'hosts').iterdir())
    assert len(files) == 1 and files[0].startswith('batch-')
    assert _entries(dm.files.hosts) == hosts
    # one new port: its own file, no reload
    hosts['p9'] = 'fa:16:3e:00:00:09,10.0.0.9,h9\n'
    assert dm.sync_hosts(dict(hosts)) is False
    assert (tmp_path / NET / 'hosts' / 'p9').read_text() == hosts['p9']
    # nothing changed: nothing written, no reload
    mtime = (tmp_path / NET / 'hosts' / 'p9').stat().st_mtime_ns
    assert dm.sync_hosts(dict(hosts)) is False
    assert (tmp_path / NET / 'hosts' / 'p9').stat().st_mtime_ns == mtime
    # a port in the batch changes: reload; each MAC still in one file only
    hosts['p3'] = 'fa:16:3e:00:00:03,10.0.0.33,h3\n'
    del hosts['p9']
    assert dm.sync_hosts(dict(hosts)) is True
    assert _entries(dm.files.hosts) == hosts
    text = ''.join(p.read_text() for p in (tmp_path / NET / 'hosts').iterdir())
    macs = [line.split(',')[0] for line in text.splitlines()
            if line and not line.startswith('#')]
    assert sorted(macs) == sorted(set(macs)) and len(macs) == 5
    # a fresh object (an agent restart) reads back the same state
    dm2 = dnsmasq.Dnsmasq(dm.conf, NET)
    dm2.written = dnsmasq.read_hostsdir(dm.files.hosts)
    assert dm2.sync_hosts(dict(hosts)) is False
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
    assert plan.hosts == {
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


def test_load_tracker_believes_only_dnsmasqs_own_reads(tmp_path, monkeypatch):
    from vdsm_dhcp import readiness
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
