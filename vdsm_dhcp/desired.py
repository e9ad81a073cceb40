"""Desired state: what each listed network should look like on this host.

Pure: (networks file, IPAM snapshot, bridges present, host) -> plans. No
I/O, so every rule here is tested without root.

IPAM data is untrusted. Each resource crosses one boundary,
validate_network / validate_subnet / validate_port: raw dict in, a typed
value out (ids from a safe alphabet, addresses parsed by ipaddress and
rendered back canonically, MTU an int in range), or InvalidData carrying
the reason. The planner after that point handles typed values only: a
port, subnet or network that fails is skipped with a problem naming it,
the rest is served. compute() also turns anything unforeseen in one
network into NotServed for that network only: no IPAM document ever
ends a reconcile round.
"""
import bisect
import functools
import ipaddress
import logging
import re
from dataclasses import dataclass, field

from vdsm_dhcp import logs
from vdsm_dhcp.untrusted import show

log = logging.getLogger(__name__)

DHCP_OWNER = 'network:dhcp'
SAFE_ID = re.compile(r'[A-Za-z0-9][A-Za-z0-9_-]{0,63}')
# hosts/ holds one file per port id, and the agent's batch files
RESERVED_ID_PREFIX = 'batch-'
HOST_LABEL = re.compile(r'(?!-)[A-Za-z0-9-]{1,63}(?<!-)')
# what dnsmasq reads in a dhcp-host name field as something else: an IPv4
# address (no letter), a lease time ("600", "10m"), a keyword
NOT_A_HOSTNAME = re.compile(r'[0-9.]+|[0-9]+[wdhms]|infinite|ignore',
                            re.IGNORECASE)
MAC = re.compile(r'[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(\1[0-9A-Fa-f]{2}){4}')
STATEFUL, STATELESS, SLAAC = 'dhcpv6-stateful', 'dhcpv6-stateless', 'slaac'
# dnsmasq reads an opts line of at most 1024 characters and a DHCPv4
# option of at most 255 bytes: these keep every line within both
MAX_DNS_SERVERS = 16
MAX_HOST_ROUTES = 24
MIN_MTU, MAX_MTU = 68, 65535
# Neutron allows 5 by default: past this a port is junk, not worth the work
MAX_FIXED_IPS = 64


class InvalidData(ValueError):
    """An IPAM resource (or a value in a request) is malformed. str() is
    the reason, with every outside value shown escaped."""

    def __init__(self, reason, mac=None):
        super().__init__(reason)
        self.mac = mac          # the port's MAC, when that much was valid


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

    @functools.cached_property
    def network(self):
        """cidr parsed (once: every port's every IP is checked in it)."""
        return ipaddress.ip_network(self.cidr)


@dataclass(frozen=True)
class NetworkInfo:
    id: str
    admin_state_up: bool
    mtu: int = None
    problems: tuple = ()


@dataclass(frozen=True)
class Port:
    """A port whose every field we read is valid (says nothing yet of how
    it fits its network: that is the planner's)."""
    id: str
    mac: str
    device_owner: str
    host: str
    fixed_ips: tuple                 # ((subnet id, ipaddress address), ...)
    dns_name: str                    # '' when none


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
    # network id -> what was dropped while indexing (a duplicate network)
    notes: dict = field(default_factory=dict)
    # network id -> why the source could not fetch it (the rest could be)
    errors: dict = field(default_factory=dict)

    @classmethod
    def from_lists(cls, networks, subnets, ports):
        """Index the raw lists; never raises on their content. Items that
        are not objects with a string network id cannot be placed in any
        network and are dropped here."""
        snap = cls({}, {}, {})
        for net in networks:
            if isinstance(net, dict) and isinstance(net.get('id'), str):
                key = net['id'].lower()
                if key in snap.networks:
                    if not _same(snap.networks[key], net):
                        snap.notes.setdefault(key, []).append(
                            'the IPAM lists network %s twice with different '
                            'data: the first one is used' % show(net['id']))
                    continue
                snap.networks[key] = net
        for key, items in (('subnets', subnets), ('ports', ports)):
            index = getattr(snap, key)
            for item in items:
                if isinstance(item, dict) and isinstance(
                        item.get('network_id'), str):
                    index.setdefault(item['network_id'].lower(),
                                     []).append(item)
        return snap


def _same(a, b):
    try:
        return a == b
    except RecursionError:     # compared level by level: too deep to tell
        return False


def namespace_name(quantum_id):
    return 'qdhcp-' + quantum_id


# -- the validation boundary: raw value -> typed value or InvalidData -------

def normalize_mac(value):
    """Canonical lower-case colon MAC of a unicast address, or
    InvalidData (a ValueError)."""
    if not isinstance(value, str) or not MAC.fullmatch(value):
        raise InvalidData('MAC %s is not a MAC address' % show(value))
    mac = value.lower().replace('-', ':')
    if int(mac[:2], 16) & 1:
        raise InvalidData('MAC %s is a multicast address' % mac)
    if mac == '00:00:00:00:00:00':
        raise InvalidData('MAC %s is all zeros' % mac)
    return mac


def shown_id(value):
    """An id for a message: as is when safe, else escaped."""
    if isinstance(value, str) and SAFE_ID.fullmatch(value):
        return value
    return show(value)


def safe_id(value, what):
    if not isinstance(value, str) or not SAFE_ID.fullmatch(value):
        raise InvalidData('%s %s is not a safe identifier' % (what,
                                                              show(value)))
    return value


def parse_ip(value, what):
    """An ipaddress address from its text form only (no int, no scope)."""
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        ip = ipaddress.ip_address(value)
        if getattr(ip, 'scope_id', None):
            raise ValueError(value)
    except ValueError:
        raise InvalidData('%s %s is not an IP address' % (what, show(value))
                          ) from None
    return ip


def parse_cidr(value, what):
    """An ipaddress network from "address/prefix" (host bits cleared)."""
    try:
        if not isinstance(value, str) or '/' not in value:
            raise ValueError(value)
        net = ipaddress.ip_network(value, strict=False)
        if getattr(net.network_address, 'scope_id', None):
            raise ValueError(value)
    except ValueError:
        raise InvalidData('%s %s is not a network (address/prefix)'
                          % (what, show(value))) from None
    return net


def _list_field(resource, key, what, limit=None):
    value = resource.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidData('%s %s is not a list' % (what, show(value)))
    if limit is not None and len(value) > limit:
        raise InvalidData('%s has %d entries, more than the %d allowed'
                          % (what, len(value), limit))
    return value


def _bool_field(resource, key, what, default):
    value = resource.get(key, default)
    if not isinstance(value, bool):
        raise InvalidData('%s %s is not true or false' % (what, show(value)))
    return value


def validate_network(raw):
    """NetworkInfo of a network dict, or InvalidData."""
    nid = safe_id(raw.get('id'), 'network id')
    admin = _bool_field(raw, 'admin_state_up', 'network admin_state_up',
                        True)
    mtu, problems = raw.get('mtu'), ()
    if mtu is not None and (type(mtu) is not int
                            or not MIN_MTU <= mtu <= MAX_MTU):
        # optional for DHCP: send no MTU option rather than drop the network
        problems = ('network mtu %s is not an integer %d-%d: no MTU option '
                    'is sent' % (show(mtu), MIN_MTU, MAX_MTU),)
        mtu = None
    return NetworkInfo(nid, admin, mtu, problems)


def validate_subnet(raw):
    """SubnetPlan of a DHCP-enabled subnet dict; None when its DHCP is
    off (nothing else of it is read); InvalidData naming the subnet."""
    sid = raw.get('id')
    try:
        safe_id(sid, 'id')
        if not _bool_field(raw, 'enable_dhcp', 'enable_dhcp', True):
            return None
        return _subnet(sid, raw)
    except InvalidData as e:
        raise InvalidData('subnet %s: %s' % (shown_id(sid), e)) from None


def _subnet(sid, raw):
    net = parse_cidr(raw.get('cidr'), 'cidr')
    version = net.version
    declared = raw.get('ip_version', version)
    if declared != version or type(declared) is not int:
        raise InvalidData('ip_version %s does not match cidr %s'
                          % (show(declared), net))

    def address(value, what):
        ip = parse_ip(value, what)
        if ip.version != version:
            raise InvalidData('%s %s is not IPv%d' % (what, ip, version))
        return ip

    gateway = raw.get('gateway_ip')
    if gateway is not None and gateway != '':
        gateway = address(gateway, 'gateway_ip')
        if gateway not in net:
            raise InvalidData('gateway_ip %s is outside %s' % (gateway, net))
    dns = tuple(str(address(d, 'DNS server')) for d in _list_field(
        raw, 'dns_nameservers', 'dns_nameservers', MAX_DNS_SERVERS))
    routes = []
    for route in _list_field(raw, 'host_routes', 'host_routes',
                             MAX_HOST_ROUTES):
        if not isinstance(route, dict):
            raise InvalidData('host route %s is not an object' % show(route))
        dest = parse_cidr(route.get('destination'), 'host route destination')
        if dest.version != version:
            raise InvalidData('host route destination %s is not IPv%d'
                              % (dest, version))
        hop = address(route.get('nexthop'), 'host route nexthop')
        routes.append((str(dest), str(hop)))
    mode = None
    if version == 6:
        mode = raw.get('ipv6_address_mode')
        if mode is None:
            mode = STATEFUL
        elif not isinstance(mode, str) or mode not in (STATEFUL, STATELESS,
                                                        SLAAC):
            raise InvalidData('unknown ipv6_address_mode %s' % show(mode))
    return SubnetPlan(id=sid, cidr=str(net), ip_version=version,
                      gateway=str(gateway) if gateway else None, dns=dns,
                      host_routes=tuple(routes), ipv6_address_mode=mode)


def validate_hostname(name):
    """A DNS name dnsmasq takes as the host name of a dhcp-host line."""
    if not isinstance(name, str) or len(name) > 253 or not all(
            HOST_LABEL.fullmatch(label) for label in name.split('.')) \
            or NOT_A_HOSTNAME.fullmatch(name):
        raise InvalidData('hostname %s is not a valid DNS name' % show(name))
    return name


def _optional_str(resource, key, what):
    value = resource.get(key)
    if value is None:
        return ''
    if not isinstance(value, str):
        raise InvalidData('%s %s is not a string' % (what, show(value)))
    return value


# every field validate_port reads (the planner's memo is keyed on them)
PORT_FIELDS = ('id', 'mac_address', 'device_owner', 'binding:host_id',
               'fixed_ips', 'dns_name')


def validate_port(raw):
    """Port of a port dict, or InvalidData (with .mac when the MAC was
    valid, so that `why` can still say why that MAC is not served)."""
    mac = None
    try:
        pid = safe_id(raw.get('id'), 'port id')
        if pid.startswith(RESERVED_ID_PREFIX):
            raise InvalidData('port id %s starts with %s, which names the '
                              "agent's own files" % (pid, RESERVED_ID_PREFIX))
        mac = normalize_mac(raw.get('mac_address'))
        owner = _optional_str(raw, 'device_owner', 'device_owner')
        host = _optional_str(raw, 'binding:host_id', 'binding:host_id')
        fixed_ips = []
        for fixed in _list_field(raw, 'fixed_ips', 'fixed_ips',
                                 MAX_FIXED_IPS):
            if not isinstance(fixed, dict):
                raise InvalidData('fixed_ips entry %s is not an object'
                                  % show(fixed))
            fixed_ips.append((safe_id(fixed.get('subnet_id'), 'subnet id'),
                              parse_ip(fixed.get('ip_address'), 'IP')))
        dns_name = _optional_str(raw, 'dns_name', 'dns_name')
        if dns_name:
            validate_hostname(dns_name)
    except InvalidData as e:
        raise InvalidData(str(e), mac) from None
    return Port(pid, mac, owner, host, tuple(fixed_ips), dns_name)


# -- rendering: the one place a dhcp-host line is made ----------------------

HOST_LINE = re.compile(
    r'(?P<mac>[0-9a-f]{2}(:[0-9a-f]{2}){5}),'
    r'(?P<addr>[0-9.]{7,15}|\[[0-9a-f:.]{2,45}\]),'
    r'(?P<name>[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63})*)')


class RenderError(ValueError):
    """A line for dnsmasq is not of its expected shape: a validation rule
    let something through. Never written."""


def host_line(mac, ip, hostname):
    """One --dhcp-hostsdir line (with its newline)."""
    line = '%s,%s,%s' % (mac, ip if ip.version == 4 else '[%s]' % ip,
                         hostname)
    if not HOST_LINE.fullmatch(line) or NOT_A_HOSTNAME.fullmatch(hostname):
        raise RenderError('refusing to write the host line %s' % show(line))
    return line + '\n'


def default_hostname(ip):
    return 'host-' + str(ip).replace('.', '-').replace(':', '-')


# -- planning, on typed values only ----------------------------------------

def _port_entry(port, subnets):
    """(host file content or None, [IP text]) of a valid port on these
    served subnets, or InvalidData naming the problem."""
    lines, ips, first_ip = [], [], None
    for sid, ip in port.fixed_ips:
        subnet = subnets.get(sid)
        if subnet is None:
            continue  # a subnet without DHCP (or unknown): nothing to serve
        net = subnet.network
        if ip.version != net.version or ip not in net:
            raise InvalidData('IP %s is outside its subnet %s (%s)'
                              % (ip, sid, net), port.mac)
        if ip.version == 4 and net.prefixlen < 31 and ip in (
                net.network_address, net.broadcast_address):
            raise InvalidData('IP %s is the network or broadcast address of '
                              '%s' % (ip, net), port.mac)
        if subnet.ip_version == 6 and not subnet.stateful:
            continue  # stateless/SLAAC: the client picks its address
        first_ip = first_ip or ip
        lines.append(ip)
        ips.append(str(ip))
    if not lines:
        return None, []
    hostname = port.dns_name or default_hostname(first_ip)
    try:
        content = ''.join(host_line(port.mac, ip, hostname) for ip in lines)
    except RenderError as e:
        raise InvalidData(str(e), port.mac) from None
    return content, ips


def _order(raw):
    """Oldest first (the first created wins a conflict); only strings are
    compared, a hostile value never reaches str()."""
    created, pid = raw.get('created_at'), raw.get('id')
    return (created if isinstance(created, str) else '',
            pid if isinstance(pid, str) else '')


def _fingerprint(raw):
    """A hashable key of every field validate_port reads (PORT_FIELDS),
    each with its type (1, 1.0 and True are equal but different data);
    None when a field is not a scalar (no memo for that port). Unrolled:
    it runs for every port of every round."""
    get = raw.get
    fixed = get('fixed_ips')
    if type(fixed) is list:
        entries = []
        for f in fixed:
            if type(f) is dict:
                sid, ip = f.get('subnet_id'), f.get('ip_address')
                entries.append((sid, type(sid), ip, type(ip)))
            else:
                entries.append((f, type(f)))
        fixed = tuple(entries)
    pid, mac, owner = get('id'), get('mac_address'), get('device_owner')
    host, name = get('binding:host_id'), get('dns_name')
    key = (pid, type(pid), mac, type(mac), owner, type(owner), host,
           type(host), fixed, type(fixed), name, type(name))
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _entry_or_error(raw, subnets):
    try:
        port = validate_port(raw)
        return ('ok', port) + _port_entry(port, subnets)
    except InvalidData as e:
        return ('error', e)


def _dhcp_port_addresses(dhcp_port, subnets):
    """(interface addresses, subnets served) of our DHCP port."""
    addresses, served = [], []
    for sid, ip in dhcp_port.fixed_ips:
        subnet = subnets.get(sid)
        if subnet is None or subnet in served:
            continue
        net = subnet.network
        if ip.version == net.version and ip in net:
            addresses.append('%s/%d' % (ip, net.prefixlen))
            served.append(subnet)
    return addresses, served


def _overlapping(blocks, plan):
    """The accepted subnet plan's block overlaps, or None. blocks: per IP
    version, a sorted list of disjoint (first, last, subnet): only the
    neighbours of plan's first address can overlap it (log n, not n: a
    document may list thousands of subnets)."""
    net = plan.network
    first, last = int(net.network_address), int(net.broadcast_address)
    ranges = blocks.setdefault(net.version, [])
    at = bisect.bisect_left(ranges, (first,))
    if at < len(ranges) and ranges[at][0] <= last:
        return ranges[at][2]
    if at and ranges[at - 1][1] >= first:
        return ranges[at - 1][2]
    ranges.insert(at, (first, last, plan))
    return None


def _valid_subnets(raws, problems):
    subnets, blocks = {}, {}
    for raw in raws:
        try:
            plan = validate_subnet(raw)
        except InvalidData as e:
            problems.append(str(e))
            continue
        if plan is None:
            continue
        if plan.id in subnets:
            problems.append('subnet %s is listed twice: the first one is used'
                            % plan.id)
            continue
        overlap = _overlapping(blocks, plan)
        if overlap is not None:
            problems.append('subnet %s: %s overlaps subnet %s (%s); not '
                            'served' % (plan.id, plan.cidr, overlap.id,
                                        overlap.cidr))
            continue
        subnets[plan.id] = plan
    return subnets


def plan_network(listed, snapshot, bridges, host, memo=None):
    qid, name = listed.quantum_id, listed.name
    raw_net = snapshot.networks.get(qid)
    if raw_net is None:
        return NotServed(qid, name, snapshot.errors.get(qid) or
                         'network %s is unknown to the IPAM' % qid)
    problems = list(snapshot.notes.get(qid, ()))
    try:
        net = validate_network(raw_net)
    except InvalidData as e:
        return NotServed(qid, name, str(e), problems)
    problems.extend(net.problems)
    if not net.admin_state_up:
        return NotServed(qid, name, 'network is administratively down',
                         problems)
    subnets = _valid_subnets(snapshot.subnets.get(qid, ()), problems)
    if not subnets:
        return NotServed(qid, name, 'no DHCP-enabled subnet', problems)
    if name not in bridges:
        return NotServed(qid, name, 'bridge %s does not exist on this host'
                         % name, problems)
    raw_ports = sorted(snapshot.ports.get(qid, ()), key=_order)
    # DHCP ports (every host's): ours is the interface; the addresses of
    # all of them belong to DHCP servers, never to a VM
    dhcp_port, dhcp_error, reserved = None, None, {}
    for raw in raw_ports:
        if raw.get('device_owner') != DHCP_OWNER:
            continue
        try:
            port = validate_port(raw)
        except InvalidData as e:
            problem = 'DHCP port %s: %s' % (shown_id(raw.get('id')), e)
            problems.append(problem)
            if raw.get('binding:host_id') == host and dhcp_error is None:
                dhcp_error = problem
            continue
        if port.host == host and dhcp_port is None:
            dhcp_port = port
        reserved.setdefault(port.mac, port)
        for _, ip in port.fixed_ips:
            reserved.setdefault(str(ip), port)
    if dhcp_port is None:
        return NotServed(qid, name, dhcp_error or 'no DHCP port (device_owner '
                         '%s) bound to host %s' % (DHCP_OWNER, host),
                         problems)
    addresses, served = _dhcp_port_addresses(dhcp_port, subnets)
    for sid in sorted(set(subnets) - {s.id for s in served}):
        problems.append('subnet %s: the DHCP port has no address in it; not '
                        'served' % sid)
    if not served:
        return NotServed(qid, name, 'the DHCP port %s has no address on a '
                         'DHCP-enabled subnet' % dhcp_port.id, problems)
    served_ids = {s.id: s for s in served}
    # the memo holds entries computed against these subnets only
    subnets_key = tuple(sorted(served_ids.items()))
    entries, fresh = {}, {}
    if memo is not None:
        old_key, old_entries = memo.get(qid, (None, {}))
        entries = old_entries if old_key == subnets_key else {}
    hosts, macs, ips, skipped = {}, {}, {}, {}

    def skip(raw, why, mac):
        problem = 'port %s skipped: %s' % (shown_id(raw.get('id')), why)
        problems.append(problem)
        if mac is not None:
            skipped.setdefault(mac, problem)

    for raw in raw_ports:
        if raw.get('device_owner') == DHCP_OWNER:
            continue
        key = _fingerprint(raw) if memo is not None else None
        # a change to one port of 10,000 re-validates one port
        hit = entries.get(key) if key is not None else None
        if hit is None:
            hit = _entry_or_error(raw, served_ids)
        if key is not None:
            fresh[key] = hit
        if hit[0] == 'error':
            skip(raw, hit[1], hit[1].mac)
            continue
        port, content, port_ips = hit[1:]
        if content is None:
            continue
        if port.id in hosts:
            skip(raw, 'port id %s is listed twice' % port.id, port.mac)
            continue
        clash = port.mac if port.mac in reserved else None
        for ip in port_ips:
            if clash is None and ip in reserved:
                clash = ip
        if clash is not None:
            owner = reserved[clash]
            skip(raw, '%s %s belongs to DHCP port %s (host %s)'
                 % ('MAC' if clash == port.mac else 'IP', clash, owner.id,
                    shown_id(owner.host)), port.mac)
            continue
        if port.mac in macs:
            skip(raw, 'MAC %s is also port %s' % (port.mac, macs[port.mac]),
                 port.mac)
            continue
        taken = [ip for ip in port_ips if ip in ips]
        if taken:
            skip(raw, 'IP %s is also port %s' % (taken[0], ips[taken[0]]),
                 port.mac)
            continue
        hosts[port.id] = content
        macs[port.mac] = port.id
        for ip in port_ips:
            ips[ip] = port.id
    if memo is not None:
        memo[qid] = (subnets_key, fresh)    # forget ports that are gone
    return NetworkPlan(
        quantum_id=qid, name=name, mtu=net.mtu,
        interface=InterfacePlan(namespace_name(qid), name, dhcp_port.mac,
                                tuple(addresses)),
        subnets=tuple(sorted(served, key=lambda s: s.id)),
        hosts=hosts, macs=macs, problems=problems,
        skipped={m: p for m, p in skipped.items() if m not in macs})


_last_failure = {}      # quantum id -> the unexpected error last logged


def compute(listed_networks, snapshot, bridges, host, memo=None):
    """quantumId -> NetworkPlan or NotServed, for every listed network.
    memo (a dict the caller keeps between calls) only saves work: the
    result is the same with or without it. Never raises on IPAM data."""
    plans = {}
    for listed in listed_networks:
        qid = listed.quantum_id
        try:
            plans[qid] = plan_network(listed, snapshot, bridges, host, memo)
            _last_failure.pop(qid, None)
        except Exception as e:     # a rule this module lacks: one network
            reason = 'the IPAM data of this network cannot be planned ' \
                     '(%s: %s)' % (type(e).__name__, show(str(e)))
            if _last_failure.get(qid) != reason:
                _last_failure[qid] = reason
                log.exception('network %s: %s', listed.name, reason,
                              extra=logs.network(qid, listed.name))
            if memo is not None:
                memo.pop(qid, None)
            plans[qid] = NotServed(qid, listed.name, reason)
    return plans
