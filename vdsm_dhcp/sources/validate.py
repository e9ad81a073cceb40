"""The one boundary every IPAM resource crosses: validate_network,
validate_subnet, validate_port take a raw dict (untrusted: from Neutron or
a file) and return a typed value of model.py, or raise InvalidData with
the reason (every outside value shown escaped). Ids come from a safe
alphabet, addresses are parsed by ipaddress and rendered back
canonically, the MTU is an int in range.
"""
import ipaddress
import sys

from vdsm_dhcp.model import (HOST_LABEL, MAC, MAX_DNS_SERVERS,
                             MAX_FIXED_IPS, MAX_HOST_ROUTES, MAX_MTU,
                             MIN_MTU, NOT_A_HOSTNAME, SAFE_ID, SLAAC,
                             STATEFUL, STATELESS, InvalidData, NetworkInfo,
                             Port, RESERVED_ID_PREFIX, SubnetPlan)
from vdsm_dhcp.untrusted import show


def owned(text):
    """A copy of a string of the document. What outlives a round must not
    hold the document's own strings: one of them keeps the pool and the
    1 MB arena it was parsed into resident after the rest of the document
    is freed."""
    return ''.join((text, ''))


def shared(text):
    """owned(), one object per distinct value: for the few values that
    thousands of resources repeat (subnet ids, owners, hosts)."""
    return sys.intern(owned(text))


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
    elif mtu is not None:
        mtu = int(str(mtu))     # not the document's object (see owned)
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
        mode = shared(mode)
    return SubnetPlan(id=shared(sid), cidr=str(net), ip_version=version,
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
