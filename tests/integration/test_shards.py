"""A big network served by several dnsmasq ("shards"), each with its own
DHCP port, namespace and address: real dnsmasq, real clients and raw
DHCP packets from VM namespaces. shard_size is tiny here, so that a few
hosts make a "big" network."""
import os
import signal

from tests import rig
from tests.rig import HANG, mac, wait_for
from vdsm_dhcp import shards
from vdsm_dhcp.agent import control
from vdsm_dhcp.dnsmasq.pids import pid_alive

PREFIX = '10.50.0'
# fixed DHCP port ids: the rendezvous assignment, and so which VM lands
# in which shard, is the same in every run
DHCP_IDS = ['shard-port-a', 'shard-port-b', 'shard-port-c']


def sharded_host(host, shard_size=2):
    rig.write_conf(host.conf_path, host.base, host=host.conf.host,
                   dnsmasq__shard_size=shard_size)
    return host


def sharded_network(host, lab, dhcp_ports=3, vms=6, host_name='host-a',
                    first_dhcp_ip=2, ipam=None):
    ipam = ipam or host.ipam
    net = ipam.network(mtu=1500)
    sub = ipam.subnet(net, PREFIX + '.0/24', gateway=PREFIX + '.1',
                      dns=[PREFIX + '.53'])
    for k in range(dhcp_ports):
        add_dhcp_port(ipam, net, sub, k, host_name, first_dhcp_ip)
    ports = [ipam.port(net, mac(0x70000 + i), [(sub, '%s.%d'
                                               % (PREFIX, 10 + i))])
             for i in range(vms)]
    ipam.save()
    if 'red' not in lab.bridges:
        lab.bridge('red')
    return net, sub, ports


def add_dhcp_port(ipam, net, sub, k, host_name, first_dhcp_ip=2):
    port = ipam.dhcp_port(net, mac(0xd1000 + 16 * first_dhcp_ip + k),
                          [(sub, '%s.%d' % (PREFIX, first_dhcp_ip + k))],
                          host=host_name)
    port['id'] = '%s-%s' % (DHCP_IDS[k], host_name)
    return port


def server_of(port, dhcp_ports):
    """The address of the shard that must serve `port`: computed here from
    the rendezvous rule over the DHCP ports, not asked of the agent."""
    key = shards.owner(port['mac_address'], [p['id'] for p in dhcp_ports])
    dhcp = next(p for p in dhcp_ports if p['id'] == key)
    return dhcp['fixed_ips'][0]['ip_address']


def dhcp_ports_of(ipam, host_name='host-a'):
    return [p for p in ipam.ports if p['device_owner'] == 'network:dhcp'
            and p['binding:host_id'] == host_name]


def ip_of(port):
    return port['fixed_ips'][0]['ip_address']


def all_loaded(agent, hosts):
    st = agent.network('red')
    return st['served'] and st['hosts'] == st['hosts_loaded'] == hosts \
        and st


def served(host, lab):
    """A network of 6 hosts over 3 shards, all loaded: (network, subnet,
    VM ports, agent, its status of the network)."""
    sharded_host(host)
    net, sub, ports = sharded_network(host, lab)
    host.networks(('red', net['id']))
    agent = host.agent()
    st = wait_for(lambda: all_loaded(agent, 6), what='6 hosts loaded')
    return net, sub, ports, agent, st


def test_sharded_network_serves_every_host_from_its_shard(host, lab):
    net, sub, ports, agent, st = served(host, lab)
    dhcp = dhcp_ports_of(host.ipam)
    # three dnsmasq, each in its own namespace with its own DHCP port's
    # address; the first is the network's own, as for a small network
    assert [s['dhcp_ips'] for s in st['shards']] and sorted(
        s['dhcp_ips'][0] for s in st['shards']) == [
        '10.50.0.2/24', '10.50.0.3/24', '10.50.0.4/24']
    assert st['namespace'] == 'qdhcp-' + net['id']
    assert sorted(s['namespace'] for s in st['shards']) == sorted(
        ['qdhcp-' + net['id']] + ['qdhcp-%s.%s' % (net['id'], p['id'])
                                  for p in dhcp[1:]])
    assert len({s['dnsmasq_pid'] for s in st['shards']}) == 3
    assert sum(s['hosts'] for s in st['shards']) == 6
    owners = {server_of(p, dhcp) for p in ports}
    assert len(owners) > 1, 'the fixed ids put every VM in one shard'
    for port in ports:
        vm = lab.vm('red', port['mac_address'])
        # exactly one server answers: the owner; the others ignore a MAC
        # they do not hold (tag:!known)
        assert vm.offers() == [(server_of(port, dhcp), ip_of(port))], \
            agent.log()
        why = control.call(host.conf, 'why', {'mac': port['mac_address']})
        assert why['in_dnsmasq'] and why['shard'].startswith(net['id'])
    # a real client gets its lease from its shard
    lease = lab.vm('red', ports[0]['mac_address']).dhcp()
    assert lease is not None, agent.log()
    assert (lease['ip'], lease['serverid'], lease['router']) == (
        ip_of(ports[0]), server_of(ports[0], dhcp), PREFIX + '.1')
    # a renew goes to the server of the lease and is answered there only
    vm = lab.vm('red', ports[1]['mac_address'])
    mine = server_of(ports[1], dhcp)
    assert vm.request(ip_of(ports[1]), server=mine) == [
        (mine, 5, ip_of(ports[1]))]
    other = next(p['fixed_ips'][0]['ip_address'] for p in dhcp
                 if p['fixed_ips'][0]['ip_address'] != mine)
    assert vm.request(ip_of(ports[1]), server=other, wait=1.5) == []


def moving_port(ports, before, after):
    """A port whose owner changes from the DHCP ports `before` to
    `after`."""
    for port in ports:
        if server_of(port, before) != server_of(port, after):
            return port
    raise AssertionError('no port moves: pick other ids')


def test_host_moved_to_a_new_shard_keeps_its_address(host, lab):
    sharded_host(host)
    # 5 hosts need 3 shards of 2; only 2 DHCP ports are listed: 2 shards
    net, sub, ports = sharded_network(host, lab, dhcp_ports=2, vms=5)
    host.networks(('red', net['id']))
    agent = host.agent()
    st = wait_for(lambda: all_loaded(agent, 5), what='5 hosts loaded')
    assert len(st['shards']) == 2
    assert any('need 3 DHCP ports' in p for p in st['problems']), st
    before = dhcp_ports_of(host.ipam)
    third = add_dhcp_port(host.ipam, net, sub, 2, 'host-a')
    after = before + [third]
    port = moving_port(ports, before, after)
    assert server_of(port, after) == ip_of(third)
    vm = lab.vm('red', port['mac_address'])
    old = server_of(port, before)
    lease = vm.dhcp()
    assert (lease['ip'], lease['serverid']) == (ip_of(port), old)
    pids = {s['unit']: s['dnsmasq_pid'] for s in st['shards']}
    # a third DHCP port: a third shard, which takes ~1/3 of the hosts
    host.ipam.save()
    st = wait_for(lambda: len(agent.network('red').get('shards', ())) == 3
                  and all_loaded(agent, 5), what='a third shard')
    # the old shards kept running (reloaded, not restarted)
    assert {s['unit']: s['dnsmasq_pid'] for s in st['shards']
            if s['unit'] in pids} == pids
    # the old shard ignores the moved host's RENEW now...
    assert vm.request(ip_of(port), server=old, wait=1.5) == []
    # ...so at T2 it broadcasts a REBIND: the new shard ACKs the same
    # address (it started with a lease seeded for each of its hosts)
    assert vm.request(ip_of(port)) == [(ip_of(third), 5, ip_of(port))]
    # the third DHCP port goes: its hosts move back to shards that run
    # on, and hold no lease of theirs (released when they left): those
    # ACK a REBIND only as authoritative servers
    host.ipam.remove(third)
    host.ipam.save()
    wait_for(lambda: len(agent.network('red').get('shards', ())) == 2
             and all_loaded(agent, 5), what='back to two shards')
    assert port['mac_address'] not in lease_macs(host.conf, unit_at(
        agent, old))
    assert vm.request(ip_of(port)) == [(old, 5, ip_of(port))]


def unit_at(agent, address):
    return next(s['unit'] for s in agent.network('red')['shards']
                if s['dhcp_ips'][0].split('/')[0] == address)


def lease_macs(conf, unit):
    path = os.path.join(conf.state_dir, unit, 'leases')
    with open(path) as f:
        return {line.split()[1] for line in f if len(line.split()) > 3}


def test_removal_from_a_shard_stops_that_mac_only(host, lab):
    net, sub, ports, agent, st = served(host, lab)
    dhcp = dhcp_ports_of(host.ipam)
    gone = ports[0]
    server = server_of(gone, dhcp)
    unit_of = {s['dhcp_ips'][0].split('/')[0]: s['unit']
               for s in st['shards']}
    unit = unit_of[server]
    neighbours = [p for p in ports[1:] if server_of(p, dhcp) == server]
    vm = lab.vm('red', gone['mac_address'])
    assert vm.dhcp()['ip'] == ip_of(gone)
    assert gone['mac_address'] in lease_macs(host.conf, unit)
    reloads = {s['unit']: s['reloads'] for s in st['shards']}
    pids = {s['unit']: s['dnsmasq_pid'] for s in st['shards']}
    still = control.call(host.conf, 'wait', {
        'macs': [gone['mac_address']], 'gone': True, 'timeout': 1})
    assert still['ready'] == [] and 'still port' in still['not_ready'][
        gone['mac_address']]
    # the shard's dnsmasq is held (SIGSTOP): it cannot re-read its hosts,
    # so the removal is not confirmed, however long we wait
    os.kill(pids[unit], signal.SIGSTOP)
    try:
        host.ipam.remove(gone)
        host.ipam.save()
        held = control.call(host.conf, 'wait', {
            'macs': [gone['mac_address']], 'gone': True, 'timeout': 2})
        assert 'has not re-read' in held['not_ready'][gone['mac_address']]
    finally:
        os.kill(pids[unit], signal.SIGCONT)
    # a truthful confirmation: once `wait --gone` says so, no answer
    answer = control.call(host.conf, 'wait', {
        'macs': [gone['mac_address']], 'gone': True, 'timeout': HANG},
        timeout=HANG + 10)
    assert answer['ready'] == [gone['mac_address']], answer
    assert vm.offers(wait=1.5) == []
    st = wait_for(lambda: all_loaded(agent, 5), what='5 hosts loaded')
    # one shard re-read its hosts; the others were not touched
    assert {s['unit']: s['reloads'] - reloads[s['unit']]
            for s in st['shards']} == {
        u: int(u == unit) for u in reloads}
    assert {s['unit']: s['dnsmasq_pid'] for s in st['shards']} == pids
    # its lease was given back (dhcp_release), so that the address can go
    # to the next port at once
    wait_for(lambda: gone['mac_address'] not in lease_macs(host.conf, unit),
             what='the lease released')
    assert vm.offers(wait=1.5) == []
    for port in neighbours + [p for p in ports[1:] if p not in neighbours]:
        assert lab.vm('red', port['mac_address']).offers() == [
            (server_of(port, dhcp), ip_of(port))]
    # the freed address, reserved to a new MAC that lands in the same
    # shard, is leased to it at once
    for n in range(64):
        candidate = mac(0x7f000 + n)
        key = shards.owner(candidate, [p['id'] for p in dhcp])
        if next(p for p in dhcp if p['id'] == key) is next(
                p for p in dhcp if ip_of(p) == server):
            break
    new = host.ipam.port(net, candidate, [(sub, ip_of(gone))])
    host.ipam.save()
    wait_for(lambda: all_loaded(agent, 6), what='the new port loaded')
    lease = lab.vm('red', new['mac_address']).dhcp()
    assert lease is not None, agent.log()
    assert (lease['ip'], lease['serverid']) == (ip_of(gone), server)


def test_two_hosts_fail_over_a_sharded_network(host, lab, request):
    from tests.integration.test_multi_host import RemoteHost
    import shutil
    import tempfile
    sharded_host(host)
    base = tempfile.mkdtemp(prefix='vdsm-dhcp-test-')
    os.chmod(base, 0o755)
    remote = RemoteHost(os.path.join(base, 'host-b'))
    try:
        rig.write_conf(remote.conf_path, remote.base, host='host-b',
                       dnsmasq__shard_size=2)
        net, sub, ports = sharded_network(host, lab, dhcp_ports=2, vms=4)
        for k in range(2):
            add_dhcp_port(host.ipam, net, sub, k, 'host-b', first_dhcp_ip=5)
        for attr in ('networks', 'subnets', 'ports'):
            setattr(remote.ipam, attr, getattr(host.ipam, attr))
        host.ipam.save()
        remote.ipam.save()
        host.networks(('red', net['id']))
        remote.networks(('red', net['id']))
        agent_b = remote.start('red')
        agent_a = host.agent()
        wait_for(lambda: all_loaded(agent_a, 4), what='A serves')
        wait_for(lambda: all_loaded(agent_b, 4), what='B serves')
        dhcp_a = dhcp_ports_of(host.ipam, 'host-a')
        dhcp_b = dhcp_ports_of(host.ipam, 'host-b')
        for port in ports:
            # one answer per host, the same address from both
            vm = lab.vm('red', port['mac_address'])
            assert vm.offers() == sorted([
                (server_of(port, dhcp_a), ip_of(port)),
                (server_of(port, dhcp_b), ip_of(port))]), agent_a.log()
        port = ports[0]
        vm = lab.vm('red', port['mac_address'])
        lease = vm.dhcp()
        assert lease['ip'] == ip_of(port)
        # the VM renews against its lease's server: that one answers
        server = lease['serverid']
        assert vm.request(ip_of(port), server=server) == [
            (server, 5, ip_of(port))]
        # A goes away; B's shard that holds the VM ACKs its REBIND
        host.networks()
        agent_a.stop()
        answer = vm.request(ip_of(port), wait=HANG / 10)
        assert answer == [(server_of(port, dhcp_b), 5, ip_of(port))], \
            agent_b.log()
    finally:
        try:
            remote.close()
        finally:
            shutil.rmtree(base, ignore_errors=True)


def test_restart_adopts_every_shard_and_drops_unneeded_ones(host, lab):
    net, sub, ports, agent, st = served(host, lab)
    pids = {s['unit']: s['dnsmasq_pid'] for s in st['shards']}
    agent.stop()
    # every shard's dnsmasq kept serving while no agent ran
    assert all(pid_alive(pid) for pid in pids.values())
    agent = host.agent()
    st = wait_for(lambda: all_loaded(agent, 6), what='adopted')
    assert {s['unit']: s['dnsmasq_pid'] for s in st['shards']} == pids
    assert st['restarts'] == 0 and st['adopted']
    # the newest DHCP port goes while the agent is down: at the next
    # start its shard is adopted, then removed, its hosts served by the
    # others
    agent.stop()
    last = dhcp_ports_of(host.ipam)[-1]
    host.ipam.remove(last)
    host.ipam.save()
    agent = host.agent()
    st = wait_for(lambda: len(agent.network('red').get('shards', ())) == 2
                  and all_loaded(agent, 6), what='two shards')
    gone_unit = '%s.%s' % (net['id'], last['id'])
    assert gone_unit not in {s['unit'] for s in st['shards']}
    assert not os.path.exists('/run/netns/qdhcp-' + gone_unit)
    assert not os.path.exists(os.path.join(host.conf.state_dir, gone_unit))
    assert not pid_alive(pids[gone_unit])     # (a zombie until reaped)
    dhcp = dhcp_ports_of(host.ipam)
    for port in ports:
        assert lab.vm('red', port['mac_address']).offers() == [
            (server_of(port, dhcp), ip_of(port))]
