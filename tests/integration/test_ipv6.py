"""IPv6 end to end: the agent's real dnsmasq, a real `dhclient -6` in VM
namespaces whose eth0 has DAD off (rig.VM6), udhcpc for IPv4."""
import os

from tests import rig
from tests.rig import mac

V6 = '2001:db8:1'
NO_LEASE_TIMEOUT = 4   # dhclient -6 retries for ever when nobody answers


def duid_mac(duid):
    """The link-layer address at the end of a DUID-LLT/LL as dhclient
    prints it ('0:1:0:1:32:97:5f:f:fa:16:3e:d:0:1')."""
    octets = ['%02x' % int(o, 16) for o in duid.split(':')]
    return ':'.join(octets[-6:])


def v6_network(host, lab, mode, vms=1, dual_stack=False, name='red',
               dhcp_mac=mac(0xd6001)):
    ipam = host.ipam
    net = ipam.network()
    v6 = ipam.subnet(net, V6 + '::/64', gateway=V6 + '::1',
                     dns=[V6 + '::53'], ip_version=6,
                     ipv6_address_mode=mode, ipv6_ra_mode=mode)
    dhcp_ips = [(v6, V6 + '::2')]
    v4 = None
    if dual_stack:
        v4 = ipam.subnet(net, '10.30.0.0/24', gateway='10.30.0.1',
                         dns=['10.30.0.53'])
        dhcp_ips.insert(0, (v4, '10.30.0.2'))
    ipam.dhcp_port(net, dhcp_mac, dhcp_ips, host='host-a')
    ports = []
    for i in range(vms):
        ips = [(v6, '%s::%x' % (V6, 0x10 + i))]
        if dual_stack:
            ips.insert(0, (v4, '10.30.0.%d' % (10 + i)))
        ports.append(ipam.port(net, mac(0x16000 + i), ips))
    ipam.save()
    lab.bridge(name)
    host.networks((name, net['id']))
    return net, ports


def solicited(vm):
    """The last dhcp6() did ask (a client that never ran binds nothing
    either)."""
    return 'XMT: Solicit on eth0' in vm.dhclient_log()


def dnsmasq_file(host, net, name):
    with open(os.path.join(host.conf.state_dir, net['id'], name)) as f:
        return f.read()


def test_stateful_vm_gets_exactly_its_port_address_and_dns(host, lab):
    net, (p1, p2) = v6_network(host, lab, 'dhcpv6-stateful', vms=2)
    agent = host.agent()
    st = agent.wait_served('red')
    assert st['dhcp_ips'] == [V6 + '::2/64']
    assert st['hosts'] == 2
    vm1 = rig.VM6(lab, 'red', p1['mac_address'])
    vm2 = rig.VM6(lab, 'red', p2['mac_address'])
    assert vm1.link_local(), 'DAD off: the link-local address is usable'
    lease = vm1.dhcp6()
    assert lease is not None, dnsmasq_file(host, net, 'dnsmasq.log')
    assert lease['reason'] == 'BOUND6'
    assert lease['new_ip6_address'] == V6 + '::10'
    assert lease['new_dhcp6_name_servers'].split() == [V6 + '::53']
    # the server is this network's dnsmasq: its DUID carries the DHCP
    # port's MAC
    assert duid_mac(lease['new_dhcp6_server_id']) == mac(0xd6001)
    assert int(lease['new_max_life']) > 0
    # again, as after a reboot (same DUID): the same address
    assert vm1.dhcp6()['new_ip6_address'] == V6 + '::10'
    lease2 = vm2.dhcp6()
    assert lease2['new_ip6_address'] == V6 + '::11'
    leases = dnsmasq_file(host, net, 'leases')
    assert ' %s::10 ' % V6 in leases and ' %s::11 ' % V6 in leases
    # a MAC with no port: dnsmasq stays silent (static only), dhclient
    # keeps soliciting until we give up
    pid = agent.network('red')['dnsmasq_pid']
    stranger = rig.VM6(lab, 'red', mac(0xeeee6))
    assert stranger.dhcp6(timeout=NO_LEASE_TIMEOUT) is None
    assert solicited(stranger), stranger.dhclient_log()
    assert ' %s::12 ' % V6 not in dnsmasq_file(host, net, 'leases')
    # silence was a decision: the same dnsmasq still answers its ports
    assert vm2.dhcp6()['new_ip6_address'] == V6 + '::11'
    assert agent.network('red')['dnsmasq_pid'] == pid


def test_stateless_information_request_gets_dns_only(host, lab):
    net, (port,) = v6_network(host, lab, 'dhcpv6-stateless')
    agent = host.agent()
    st = agent.wait_served('red')
    assert st['hosts'] == 0          # nothing to assign: stateless
    vm = rig.VM6(lab, 'red', port['mac_address'])
    lease = vm.dhcp6(stateless=True)
    assert lease is not None, dnsmasq_file(host, net, 'dnsmasq.log')
    # answered by this network's dnsmasq (its DUID has the DHCP port's MAC)
    assert duid_mac(lease['new_dhcp6_server_id']) == mac(0xd6001)
    assert lease['new_dhcp6_name_servers'].split() == [V6 + '::53']
    assert 'new_ip6_address' not in lease
    # and no address for a stateful request on a stateless subnet
    assert vm.dhcp6(timeout=NO_LEASE_TIMEOUT) is None
    assert solicited(vm), vm.dhclient_log()
    # while the information request is still answered
    assert vm.dhcp6(stateless=True)['new_dhcp6_name_servers'].split() == \
        [V6 + '::53']


def test_dual_stack_vm_gets_v4_by_udhcpc_and_v6_by_dhclient(host, lab):
    net, (port,) = v6_network(host, lab, 'dhcpv6-stateful', dual_stack=True)
    agent = host.agent()
    st = agent.wait_served('red')
    assert sorted(st['dhcp_ips']) == sorted(['10.30.0.2/24', V6 + '::2/64'])
    assert st['hosts'] == 1
    vm = rig.VM6(lab, 'red', port['mac_address'])
    v4 = vm.dhcp()
    assert v4 is not None, dnsmasq_file(host, net, 'dnsmasq.log')
    assert v4['ip'] == '10.30.0.10'
    assert v4['router'] == '10.30.0.1'
    assert v4['dns'].split() == ['10.30.0.53']
    assert v4['serverid'] == '10.30.0.2'
    v6 = vm.dhcp6()
    assert v6 is not None, dnsmasq_file(host, net, 'dnsmasq.log')
    assert v6['new_ip6_address'] == V6 + '::10'
    assert v6['new_dhcp6_name_servers'].split() == [V6 + '::53']
    # one hostname for both families (the port's)
    assert v6['new_fqdn_hostname'] == v4['hostname'] == 'host-10-30-0-10'
    # v4 again after v6: one dnsmasq, both families, no restart
    assert vm.dhcp()['ip'] == '10.30.0.10'
    assert agent.network('red')['restarts'] == 0


def test_slaac_subnet_hands_out_no_dhcpv6_address(host, lab):
    net, (port,) = v6_network(host, lab, 'slaac', dual_stack=True)
    agent = host.agent()
    st = agent.wait_served('red')
    # dnsmasq serves the SLAAC subnet too (its DHCP port's v6 address is
    # up), but has no address to give from it
    assert V6 + '::2/64' in st['dhcp_ips']
    vm = rig.VM6(lab, 'red', port['mac_address'])
    # the server answers this VM: its IPv4 lease
    v4 = vm.dhcp()
    assert v4 is not None, dnsmasq_file(host, net, 'dnsmasq.log')
    assert v4['ip'] == '10.30.0.10'
    # a DHCPv6 request is made and binds nothing
    assert vm.dhcp6(timeout=NO_LEASE_TIMEOUT) is None
    assert solicited(vm), vm.dhclient_log()
    assert ' %s::' % V6 not in dnsmasq_file(host, net, 'leases')
    # and the same dnsmasq still serves it afterwards
    assert vm.dhcp()['ip'] == '10.30.0.10'
    assert agent.network('red')['dnsmasq_pid'] == st['dnsmasq_pid']
