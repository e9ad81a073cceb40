"""End to end: real dnsmasq, real udhcpc/dhclient in VM namespaces."""
import os
import signal

from tests import rig
from tests.rig import HANG, mac, wait_for


def one_network(host, lab, name='red', cidr='10.10.0.0/24', prefix='10.10.0',
                mtu=1450, vms=1, host_name='host-a'):
    ipam = host.ipam
    net = ipam.network(mtu=mtu)
    sub = ipam.subnet(net, cidr, gateway=prefix + '.1',
                      dns=[prefix + '.53'],
                      routes=[('192.168.77.0/24', prefix + '.254')])
    ipam.dhcp_port(net, mac(0xd0000 + len(ipam.ports)), [(sub, prefix + '.2')],
                   host=host_name)
    ports = [ipam.port(net, mac(0x10000 + len(ipam.ports)),
                       [(sub, '%s.%d' % (prefix, 10 + i))])
             for i in range(vms)]
    ipam.save()
    if name not in lab.bridges:
        lab.bridge(name)
    return net, sub, ports


def test_vm_gets_its_port_ip_gateway_dns_routes_mtu(host, lab):
    net, sub, (port,) = one_network(host, lab)
    host.networks(('red', net['id']))
    agent = host.agent()
    status = agent.wait_served('red')
    assert status['dhcp_ips'] == ['10.10.0.2/24']
    assert status['hosts'] == 1
    vm = lab.vm('red', port['mac_address'])
    lease = vm.dhcp()
    assert lease is not None, agent.log()
    assert lease['ip'] == '10.10.0.10'
    assert lease['router'] == '10.10.0.1'
    assert lease['dns'].split() == ['10.10.0.53']
    assert lease['mtu'] == '1450'
    assert lease['staticroutes'].split() == [
        '192.168.77.0/24', '10.10.0.254', '0.0.0.0/0', '10.10.0.1']
    assert lease['serverid'] == '10.10.0.2'


def test_unknown_mac_and_unlisted_bridge_get_no_offer(host, lab):
    net, sub, (port,) = one_network(host, lab)
    # a second network, known to the IPAM, with a bridge, but not listed
    other, osub, (oport,) = one_network(host, lab, name='blue',
                                        cidr='10.20.0.0/24', prefix='10.20.0')
    host.networks(('red', net['id']))
    agent = host.agent()
    pid = agent.wait_served('red')['dnsmasq_pid']
    stranger = lab.vm('red', mac(0xeeeee))
    assert stranger.dhcp(tries=2) is None
    assert stranger.discovered(), stranger.udhcpc_output
    unlisted = lab.vm('blue', oport['mac_address'])
    assert unlisted.dhcp(tries=2) is None
    assert unlisted.discovered(), unlisted.udhcpc_output
    names = [n['name'] for n in agent.status()['networks']]
    assert names == ['red']
    assert not os.path.exists('/run/netns/qdhcp-' + other['id'])
    # no offer was a decision: red's dnsmasq serves its own port, then and
    # still
    assert lab.vm('red', port['mac_address']).dhcp()['ip'] == '10.10.0.10'
    assert agent.network('red')['dnsmasq_pid'] == pid


def test_port_added_and_removed_while_running_no_restart(host, lab):
    net, sub, (port,) = one_network(host, lab)
    host.networks(('red', net['id']))
    agent = host.agent()
    pid = agent.wait_served('red')['dnsmasq_pid']
    new = host.ipam.port(net, mac(0x20001), [(sub, '10.10.0.77')])
    host.ipam.save()
    vm = lab.vm('red', new['mac_address'])
    wait_for(lambda: agent.network('red')['hosts'] == 2, what='new host')
    lease = vm.dhcp()
    assert lease and lease['ip'] == '10.10.0.77'
    host.ipam.remove(new)
    host.ipam.save()
    wait_for(lambda: agent.network('red')['hosts'] == 1, what='host gone')
    # the lease dnsmasq granted is still remembered, but the host is gone:
    # a new exchange gets no address (static ranges only)
    wait_for(lambda: vm.dhcp(tries=1) is None,
             what='removed port no longer served')
    assert vm.discovered(), vm.udhcpc_output
    assert lab.vm('red', port['mac_address']).dhcp()['ip'] == '10.10.0.10'
    status = agent.network('red')
    assert status['dnsmasq_pid'] == pid
    assert status['restarts'] == 0


def test_changed_port_ip_is_served_after_reload(host, lab):
    net, sub, (port,) = one_network(host, lab)
    host.networks(('red', net['id']))
    agent = host.agent()
    pid = agent.wait_served('red')['dnsmasq_pid']
    vm = lab.vm('red', port['mac_address'])
    assert vm.dhcp()['ip'] == '10.10.0.10'
    port['fixed_ips'][0]['ip_address'] = '10.10.0.99'
    host.ipam.save()
    wait_for(lambda: (vm.dhcp(tries=1) or {}).get('ip') == '10.10.0.99',
             what='the new IP')
    assert agent.network('red')['dnsmasq_pid'] == pid


def test_dropped_network_torn_down_and_late_bridge_served(host, lab):
    red, rsub, (rport,) = one_network(host, lab)
    blue, bsub, (bport,) = one_network(host, lab, name='blue',
                                       cidr='10.20.0.0/24', prefix='10.20.0')
    lab.del_bridge('blue')
    host.networks(('red', red['id']), ('blue', blue['id']))
    agent = host.agent()
    agent.wait_served('red')
    st = agent.network('blue')
    assert not st['served']
    assert st['reason'] == 'bridge blue does not exist on this host'
    # served once the bridge appears (how soon: bench/fig9_recovery.py)
    lab.bridge('blue')
    agent.wait_served('blue')
    assert lab.vm('blue', bport['mac_address']).dhcp()['ip'] == '10.20.0.10'
    red_pid = agent.network('red')['dnsmasq_pid']
    # drop red from the list: its dnsmasq, namespace and state go (in an
    # order of the agent's choosing: wait for all three, not the first)
    host.networks(('blue', blue['id']))
    agent.reload()
    red_state = os.path.join(host.conf.state_dir, red['id'])
    wait_for(lambda: not os.path.exists('/run/netns/qdhcp-' + red['id'])
             and not os.path.exists(red_state)
             and not os.path.exists('/proc/%d' % red_pid),
             what='red torn down')
    assert [n['name'] for n in agent.status()['networks']] == ['blue']
    # the bridge goes away: blue is unplugged
    lab.del_bridge('blue')
    wait_for(lambda: not os.path.exists('/run/netns/qdhcp-' + blue['id']),
             what='blue unplugged')
    st = agent.network('blue')
    assert not st['served'] and st['reason'] == \
        'bridge blue does not exist on this host'


def test_agent_kill_9_keeps_dhcp_and_next_agent_adopts(host, lab):
    net, sub, ports = one_network(host, lab, vms=2)
    host.networks(('red', net['id']))
    agent = host.agent()
    pid = agent.wait_served('red')['dnsmasq_pid']
    vm1, vm2 = (lab.vm('red', p['mac_address']) for p in ports)
    assert vm1.dhcp()['ip'] == '10.10.0.10'
    agent.kill()
    # no agent: the running VM renews, a new VM still gets its lease
    assert vm1.dhcp()['ip'] == '10.10.0.10'
    assert vm2.dhcp()['ip'] == '10.10.0.11'
    agent2 = host.agent()
    st = agent2.wait_served('red')
    assert st['dnsmasq_pid'] == pid
    assert st['adopted'] and st['restarts'] == 0
    # adopted and in control: a new port reaches the same dnsmasq
    new = host.ipam.port(net, mac(0x30001), [(sub, '10.10.0.88')])
    host.ipam.save()
    wait_for(lambda: agent2.network('red')['hosts'] == 3, what='new host')
    assert lab.vm('red', new['mac_address']).dhcp()['ip'] == '10.10.0.88'
    assert agent2.network('red')['dnsmasq_pid'] == pid


def test_dnsmasq_kill_9_is_respawned(host, lab):
    net, sub, (port,) = one_network(host, lab)
    host.networks(('red', net['id']))
    agent = host.agent()
    pid = agent.wait_served('red')['dnsmasq_pid']
    os.kill(pid, signal.SIGKILL)
    # how soon: bench/fig9_recovery.py
    wait_for(lambda: agent.network('red')['dnsmasq_pid'] not in (pid, None)
             and agent.network('red')['served'], what='dnsmasq respawned')
    assert lab.vm('red', port['mac_address']).dhcp()['ip'] == '10.10.0.10'


def test_hostile_ipam_data_skips_only_the_bad_ports(host, lab):
    net, sub, (good,) = one_network(host, lab)
    ipam = host.ipam
    ipam.port(net, mac(0x40001), [(sub, '10.10.0.20')],
              dns_name='evil\ndhcp-range=0.0.0.0')
    ipam.port(net, mac(0x40002), [(sub, '10.10.0.21')], dns_name='a,b')
    ipam.port(net, 'not-a-mac', [(sub, '10.10.0.22')])
    ipam.port(net, mac(0x40003), [(sub, '10.99.0.23')])
    ipam.port(net, mac(0x40004), [(sub, '10.10.0.10')])  # duplicate IP
    fine = ipam.port(net, mac(0x40005), [(sub, '10.10.0.30')],
                     dns_name='fine-vm')
    ipam.save()
    host.networks(('red', net['id']))
    agent = host.agent()
    st = agent.wait_served('red')
    assert st['hosts'] == 2
    problems = '\n'.join(st['problems'])
    assert 'is not a valid DNS name' in problems
    assert "'not-a-mac' is not a MAC address" in problems
    assert 'IP 10.99.0.23 is outside its subnet' in problems
    assert 'IP 10.10.0.10 is also port %s' % good['id'] in problems
    log = agent.log()
    assert 'is not a MAC address' in log and 'outside its subnet' in log
    assert lab.vm('red', good['mac_address']).dhcp()['ip'] == '10.10.0.10'
    lease = lab.vm('red', fine['mac_address']).dhcp()
    assert lease['ip'] == '10.10.0.30' and lease['hostname'] == 'fine-vm'
    evil = lab.vm('red', mac(0x40001))
    assert evil.dhcp(tries=1) is None
    assert evil.discovered(), evil.udhcpc_output


def test_stale_namespaces_and_devices_removed_at_start(host, lab):
    from pyroute2 import IPRoute, netns
    from vdsm_dhcp.host.interface import device_names
    net, sub, (port,) = one_network(host, lab)
    host.networks(('red', net['id']))
    agent = host.agent()
    pid = agent.wait_served('red')['dnsmasq_pid']
    agent.kill()                      # leaves namespace + dnsmasq running
    # a stray veth of ours (our mark) with no namespace, and an unrelated
    # device
    from vdsm_dhcp.host.interface import DEVICE_MARK
    stray_id = rig.new_id()
    stray = device_names(stray_id)[0]
    with IPRoute() as ipr:
        ipr.link('add', ifname=stray, kind='veth', peer='strayp')
        ipr.link('set', index=ipr.link_lookup(ifname=stray)[0],
                 ifalias=DEVICE_MARK + stray_id)
        ipr.link('add', ifname='notours0', kind='veth', peer='notours1')
    host.networks()                   # red is no longer listed
    agent2 = host.agent()
    wait_for(lambda: not os.path.exists('/proc/%d' % pid),
             what='stale dnsmasq stopped')
    assert 'qdhcp-' + net['id'] not in netns.listnetns()
    with IPRoute() as ipr:
        assert not ipr.link_lookup(ifname=stray)
        assert ipr.link_lookup(ifname='notours0')   # not ours: untouched
        ipr.link('del', ifname='notours0')
    assert not os.path.exists(os.path.join(host.conf.state_dir, net['id']))
    assert agent2.status()['networks'] == []


def test_corrupt_networks_file_keeps_serving(host, lab):
    net, sub, (port,) = one_network(host, lab)
    host.networks(('red', net['id']))
    agent = host.agent()
    pid = agent.wait_served('red')['dnsmasq_pid']
    with open(host.conf.networks_file, 'w') as f:
        f.write('{"version": 1, "networks": [')
    agent.reload()
    wait_for(lambda: agent.status()['networks_file_error'], what='error')
    assert host.conf.networks_file in agent.status()['networks_file_error']
    st = agent.network('red')
    assert st['served'] and st['dnsmasq_pid'] == pid
    assert lab.vm('red', port['mac_address']).dhcp()['ip'] == '10.10.0.10'
    assert 'keeping the last good list' in agent.log()


def test_operator_cli_hosts_leases_why(host, lab):
    import json
    import subprocess
    net, sub, (port,) = one_network(host, lab)
    bad = host.ipam.port(net, mac(0x70001), [(sub, '10.99.0.1')])
    host.ipam.save()
    host.networks(('red', net['id']))
    agent = host.agent()
    agent.wait_served('red')
    assert lab.vm('red', port['mac_address']).dhcp()['ip'] == '10.10.0.10'

    def cli(*args):
        r = subprocess.run([rig.BIN + '/vdsm-dhcp', '--config-file',
                            host.conf_path] + list(args),
                           capture_output=True, text=True, timeout=30)
        return r

    hosts = json.loads(cli('hosts', 'red', '--json').stdout)
    assert hosts['hosts'] == [{'port': port['id'],
                               'entry': '%s,10.10.0.10,host-10-10-0-10'
                               % port['mac_address']}]
    r = cli('hosts', 'red')
    assert r.returncode == 0 and port['id'] in r.stdout
    leases = json.loads(cli('leases', net['id'], '--json').stdout)
    assert [(l['mac'], l['ip']) for l in leases['leases']] == [
        (port['mac_address'], '10.10.0.10')]
    why = json.loads(cli('why', port['mac_address'].upper(), '--json').stdout)
    assert why['network'] == 'red' and why['port'] == port['id']
    assert why['in_dnsmasq'] is True
    assert why['verdict'].startswith('served: loaded by dnsmasq pid')
    why = json.loads(cli('why', bad['mac_address'], '--json').stdout)
    assert 'outside its subnet' in why['verdict']
    r = cli('why', mac(0xabcdef))
    assert r.returncode == 0 and 'no port with this MAC' in r.stdout
    r = cli('why', 'nonsense')
    assert r.returncode == 1 and "'nonsense' is not a MAC" in r.stderr
    r = cli('hosts', 'nope')
    assert r.returncode == 1 and "network 'nope' is not in the" in r.stderr
    r = cli('status')
    row = next(line for line in r.stdout.splitlines()
               if line.startswith('red '))
    assert row.split()[:3] == ['red', net['id'], 'yes']
    problems = r.stdout.split('\n\n')[0]     # problems come first
    assert problems.startswith('PROBLEMS (1)')
    assert 'red: port %s skipped' % bad['id'] in problems
    assert '\033[' not in r.stdout            # not a terminal: no colour


def test_fifty_networks_configured_in_parallel(host, lab):
    n = 50
    pairs = []
    for i in range(n):
        name = 'br%d' % i
        net, sub, _ = one_network(host, lab, name=name,
                                  cidr='10.%d.0.0/24' % (100 + i),
                                  prefix='10.%d.0' % (100 + i), vms=2)
        pairs.append((name, net['id']))
    host.networks(*pairs)
    agent = host.agent()
    # (how fast: bench/fig4_cold_start.py)
    wait_for(lambda: sorted(nw['name'] for nw in agent.status()['networks']
                            if nw['served'] and nw['hosts'] == 2) ==
             sorted(name for name, _ in pairs),
             timeout=4 * HANG, interval=0.05, what='all 50 networks served')
