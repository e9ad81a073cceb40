"""Desired state: what each listed network should look like on this host.

Pure: (networks file, IPAM snapshot, bridges present, host) -> plans. No
I/O, so every rule here is tested without root. IPAM data is untrusted:
a port that would corrupt dnsmasq's files or hand out a wrong address is
skipped with a problem naming it; the rest of the network is served.
"""
import re
from dataclasses import dataclass, field

import netaddr

DHCP_OWNER = 'network:dhcp'
SAFE_ID = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$')
HOST_LABEL = re.compile(r'^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$')
STATEFUL, STATELESS, SLAAC = 'dhcpv6-stateful', 'dhcpv6-stateless', 'slaac'


@dataclass(frozen=True)
class SubnetPlan:
    id: str
    cidr: str
    ip_version: int
    gateway: str = None
    dns: tuple = ()
    host_routes: tuple = ()          # ((destination, nexthop), ...)
    ipv6_address_mode: str = None    # None for IPv4

    @property
    def tag(self):
        return 'subnet-' + self.id

    @property
    def stateful(self):
        return self.ip_version == 4 or self.ipv6_address_mode == STATEFUL


@dataclass(frozen=True)
class InterfacePlan:
    """The DHCP port as plugged into the namespace."""
    namespace: str
    bridge: str
    mac: str
    addresses: tuple                 # ('10.0.0.2/24', '2001:db8::2/64')


@dataclass
class NetworkPlan:
    quantum_id: str
    name: str
    mtu: int
    interface: InterfacePlan
    subnets: tuple                   # of SubnetPlan, DHCP-enabled, served
    hosts: dict                      # port id -> hostsdir file content
    macs: dict                       # MAC -> port id
    problems: list = field(default_factory=list)
    skipped: dict = field(default_factory=dict)   # MAC -> why not served
    served = True


@dataclass
class NotServed:
    quantum_id: str
    name: str
    reason: str
    problems: list = field(default_factory=list)
    served = False


@dataclass
class Snapshot:
    """IPAM state in Neutron API v2 shape, indexed by network id."""
    networks: dict                   # id -> network dict
    subnets: dict                    # network id -> [subnet dict]
    ports: dict                      # network id -> [port dict]

    @classmethod
    def from_lists(cls, networks, subnets, ports):
        snap = cls({}, {}, {})
        for net in networks:
            if isinstance(net, dict) and isinstance(net.get('id'), str):
                snap.networks[net['id'].lower()] = net
        for key, items in (('subnets', subnets), ('ports', ports)):
            index = getattr(snap, key)
            for item in items:
                if isinstance(item, dict) and isinstance(
                        item.get('network_id'), str):
                    index.setdefault(item['network_id'].lower(),
                                     []).append(item)
        return snap


def namespace_name(quantum_id):
    return 'qdhcp-' + quantum_id


def normalize_mac(value):
    """Canonical lower-case colon MAC of a unicast address, or ValueError."""
    if not isinstance(value, str) or not re.fullmatch(
            r'[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}', value):
        raise ValueError('MAC %r is not a MAC address' % (value,))
    mac = value.lower().replace('-', ':')
    if int(mac[:2], 16) & 1:
        raise ValueError('MAC %s is a multicast address' % mac)
    if mac == '00:00:00:00:00:00':
        raise ValueError('MAC %s is all zeros' % mac)
    return mac


def _subnet_plan(subnet):
    sid = subnet.get('id')
    if not isinstance(sid, str) or not SAFE_ID.match(sid):
        raise ValueError('subnet id %r is not a safe identifier' % (sid,))
    try:
        net = netaddr.IPNetwork(subnet['cidr'])
    except (KeyError, TypeError, ValueError, netaddr.AddrFormatError):
        raise ValueError('subnet %s: cidr %r is not a network'
                         % (sid, subnet.get('cidr'))) from None
    version = net.version

    def address(value, what):
        try:
            ip = netaddr.IPAddress(value)
        except (TypeError, ValueError, netaddr.AddrFormatError):
            raise ValueError('subnet %s: %s %r is not an IP address'
                             % (sid, what, value)) from None
        return ip

    gateway = subnet.get('gateway_ip')
    if gateway:
        if address(gateway, 'gateway_ip') not in net:
            raise ValueError('subnet %s: gateway_ip %s is outside %s'
                             % (sid, gateway, net))
    dns = tuple(str(address(d, 'DNS server'))
                for d in subnet.get('dns_nameservers') or ())
    if any(netaddr.IPAddress(d).version != version for d in dns):
        raise ValueError('subnet %s: DNS server of another IP version' % sid)
    routes = []
    for route in subnet.get('host_routes') or ():
        try:
            dest = netaddr.IPNetwork(route['destination'])
            hop = netaddr.IPAddress(route['nexthop'])
        except (KeyError, TypeError, ValueError, netaddr.AddrFormatError):
            raise ValueError('subnet %s: bad host route %r'
                             % (sid, route)) from None
        if dest.version != version or hop.version != version:
            raise ValueError('subnet %s: host route %r of another IP version'
                             % (sid, route))
        routes.append((str(dest.cidr), str(hop)))
    mode = None
    if version == 6:
        mode = subnet.get('ipv6_address_mode') or STATEFUL
        if mode not in (STATEFUL, STATELESS, SLAAC):
            raise ValueError('subnet %s: unknown ipv6_address_mode %r'
                             % (sid, mode))
    return SubnetPlan(id=sid, cidr=str(net.cidr), ip_version=version,
                      gateway=str(gateway) if gateway else None, dns=dns,
                      host_routes=tuple(routes), ipv6_address_mode=mode)


def _hostname(port, ip):
    name = port.get('dns_name') or ''
    if not name:
        return 'host-' + str(ip).replace('.', '-').replace(':', '-')
    if not isinstance(name, str) or len(name) > 253 or not all(
            HOST_LABEL.match(label) for label in name.split('.')):
        raise ValueError('hostname %r is not a valid DNS name' % (name,))
    return name


def _port_entry(port, subnets):
    """(mac, file content) for one port, or ValueError naming the problem."""
    pid = port.get('id')
    if not isinstance(pid, str) or not SAFE_ID.match(pid):
        raise ValueError('port id %r is not a safe identifier' % (pid,))
    mac = normalize_mac(port.get('mac_address'))
    lines, first_ip = [], None
    for fixed in port.get('fixed_ips') or ():
        if not isinstance(fixed, dict):
            raise ValueError('fixed_ips entry %r is not an object' % (fixed,))
        subnet = subnets.get(fixed.get('subnet_id'))
        if subnet is None:
            continue  # a subnet without DHCP (or unknown): nothing to serve
        try:
            ip = netaddr.IPAddress(fixed.get('ip_address'))
        except (TypeError, ValueError, netaddr.AddrFormatError):
            raise ValueError('IP %r is not an IP address'
                             % (fixed.get('ip_address'),)) from None
        if ip not in netaddr.IPNetwork(subnet.cidr):
            raise ValueError('IP %s is outside its subnet %s (%s)'
                             % (ip, subnet.id, subnet.cidr))
        if subnet.ip_version == 6 and not subnet.stateful:
            continue  # stateless/SLAAC: the client picks its address
        first_ip = first_ip or ip
        lines.append(('%s' if ip.version == 4 else '[%s]') % ip)
    if not lines:
        return mac, None, []
    hostname = _hostname(port, first_ip)
    content = ''.join('%s,%s,%s\n' % (mac, addr, hostname) for addr in lines)
    ips = [a.strip('[]') for a in lines]
    return mac, content, ips


def _order(port):
    return (str(port.get('created_at') or ''), str(port.get('id')))


def _fingerprint(port):
    """Everything _port_entry reads from a port."""
    fixed = port.get('fixed_ips')
    return (port.get('id'), port.get('mac_address'), port.get('dns_name'),
            tuple((f.get('subnet_id'), f.get('ip_address')) if
                  isinstance(f, dict) else repr(f) for f in fixed)
            if isinstance(fixed, list) else repr(fixed))


def _entry_or_error(port, subnets):
    try:
        return ('ok',) + _port_entry(port, subnets)
    except ValueError as e:
        return ('error', e)


def plan_network(listed, snapshot, bridges, host, memo=None):
    qid, name = listed.quantum_id, listed.name
    net = snapshot.networks.get(qid)
    if net is None:
        return NotServed(qid, name, 'network %s is unknown to the IPAM' % qid)
    if net.get('admin_state_up') is False:
        return NotServed(qid, name, 'network is administratively down')
    problems = []
    subnets = {}
    for subnet in snapshot.subnets.get(qid, ()):
        if not subnet.get('enable_dhcp', True):
            continue
        try:
            plan = _subnet_plan(subnet)
        except ValueError as e:
            problems.append(str(e))
            continue
        subnets[plan.id] = plan
    if not subnets:
        return NotServed(qid, name, 'no DHCP-enabled subnet', problems)
    if name not in bridges:
        return NotServed(qid, name, 'bridge %s does not exist on this host'
                         % name, problems)
    ports = sorted(snapshot.ports.get(qid, ()), key=_order)
    dhcp_port = next((p for p in ports
                      if p.get('device_owner') == DHCP_OWNER
                      and p.get('binding:host_id') == host), None)
    if dhcp_port is None:
        return NotServed(qid, name, 'no DHCP port (device_owner %s) bound to '
                         'host %s' % (DHCP_OWNER, host), problems)
    try:
        dhcp_mac = normalize_mac(dhcp_port.get('mac_address'))
    except ValueError as e:
        return NotServed(qid, name, 'DHCP port %s: %s'
                         % (dhcp_port.get('id'), e), problems)
    addresses, served = [], []
    for fixed in dhcp_port.get('fixed_ips') or ():
        subnet = subnets.get(fixed.get('subnet_id'))
        if subnet is None:
            continue
        try:
            ip = netaddr.IPAddress(fixed.get('ip_address'))
        except (TypeError, ValueError, netaddr.AddrFormatError):
            continue
        cidr = netaddr.IPNetwork(subnet.cidr)
        if ip in cidr and subnet not in served:
            addresses.append('%s/%d' % (ip, cidr.prefixlen))
            served.append(subnet)
    for sid in sorted(set(subnets) - {s.id for s in served}):
        problems.append('subnet %s: the DHCP port has no address in it; not '
                        'served' % sid)
    if not served:
        return NotServed(qid, name, 'the DHCP port %s has no address on a '
                         'DHCP-enabled subnet' % dhcp_port.get('id'), problems)
    served_ids = {s.id: s for s in served}
    # the memo holds entries computed against these subnets only
    subnets_key = tuple(sorted(served_ids.items()))
    if memo is not None:
        old_key, old_entries = memo.get(qid, (None, {}))
        entries = old_entries if old_key == subnets_key else {}
        fresh = {}
    hosts, macs, ips, skipped = {}, {}, {}, {}

    def skip(port, why):
        problem = 'port %s skipped: %s' % (port.get('id'), why)
        problems.append(problem)
        try:
            skipped.setdefault(normalize_mac(port.get('mac_address')),
                               problem)
        except ValueError:
            pass

    for port in ports:
        if port.get('device_owner') == DHCP_OWNER:
            continue
        if memo is None:
            hit = _entry_or_error(port, served_ids)
        else:
            # a change to one port of 10,000 re-validates one port
            key = _fingerprint(port)
            hit = fresh[key] = entries.get(key) or _entry_or_error(
                port, served_ids)
        if hit[0] == 'error':
            skip(port, hit[1])
            continue
        mac, content, port_ips = hit[1:]
        if content is None:
            continue
        if mac in macs:
            skip(port, 'MAC %s is also port %s' % (mac, macs[mac]))
            continue
        taken = [ip for ip in port_ips if ip in ips]
        if taken:
            skip(port, 'IP %s is also port %s' % (taken[0], ips[taken[0]]))
            continue
        hosts[port['id']] = content
        macs[mac] = port['id']
        ips.update((ip, port['id']) for ip in port_ips)
    if memo is not None:
        memo[qid] = (subnets_key, fresh)    # forget ports that are gone
    mtu = net.get('mtu')
    return NetworkPlan(
        quantum_id=qid, name=name,
        mtu=mtu if isinstance(mtu, int) and 68 <= mtu <= 65535 else None,
        interface=InterfacePlan(namespace_name(qid), name, dhcp_mac,
                                tuple(addresses)),
        subnets=tuple(sorted(served, key=lambda s: s.id)),
        hosts=hosts, macs=macs, problems=problems,
        skipped={m: p for m, p in skipped.items() if m not in macs})


def compute(listed_networks, snapshot, bridges, host, memo=None):
    """quantumId -> NetworkPlan or NotServed, for every listed network.
    memo (a dict the caller keeps between calls) only saves work: the
    result is the same with or without it."""
    return {n.quantum_id: plan_network(n, snapshot, bridges, host, memo)
            for n in listed_networks}
