"""The typed values that cross the layers: an IPAM snapshot as the sources
give it (Snapshot), what validation makes of its resources (NetworkInfo,
SubnetPlan, Port, or InvalidData), and what the planner makes of a
network (NetworkPlan with its InterfacePlan, or NotServed); plus the one
naming authority for our namespaces (namespace_name: qdhcp-<quantumId>,
and qdhcp-<quantumId>.<DHCP port id> for a big network's further shards).

Pure data: no I/O, no behaviour module imported.
"""
import functools
import ipaddress
import re
from dataclasses import dataclass, field

from vdsm_dhcp.untrusted import show


# our namespaces are qdhcp-<quantumId>, as Neutron's DHCP agent names its
# own (those are told apart by our mark, see host/interface.py)
NS_PREFIX = 'qdhcp-'
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


@dataclass(frozen=True, slots=True)
class NetworkInfo:
    id: str
    admin_state_up: bool
    mtu: int = None
    problems: tuple = ()


# slots: no __dict__ per instance (the planner's memo keeps one HostEntry
# per port, 10,000s of them)
@dataclass(frozen=True, slots=True)
class Port:
    """A port whose every field we read is valid (says nothing yet of how
    it fits its network: that is the planner's)."""
    id: str
    mac: str
    device_owner: str
    host: str
    fixed_ips: tuple                 # ((subnet id, ipaddress address), ...)
    dns_name: str                    # '' when none


@dataclass(frozen=True, slots=True)
class HostEntry:
    """One port as dnsmasq serves it: its MAC, its addresses on the served
    stateful subnets (ipaddress objects, in the IPAM's order) and the host
    name handed out. Only dnsmasq/conf.py turns it into dnsmasq's syntax
    (host lines, lease lines) and reads it back from our files."""
    port_id: str
    mac: str
    ips: tuple
    hostname: str


@dataclass(frozen=True, slots=True)
class InterfacePlan:
    """The DHCP port as plugged into the namespace."""
    namespace: str
    bridge: str
    mac: str
    addresses: tuple                 # ('10.0.0.2/24', '2001:db8::2/64')


@dataclass
class ShardPlan:
    """One dnsmasq of a network: its unit id (the network's quantumId for
    the first shard, else "<quantumId>.<DHCP port id>": see unit_id), its
    interface (own namespace, own DHCP port) and the hosts it serves."""
    unit: str
    interface: InterfacePlan
    hosts: dict                      # port id -> HostEntry


@dataclass
class NetworkPlan:
    quantum_id: str
    name: str
    mtu: int
    interface: InterfacePlan         # the first shard's (all of a small one)
    subnets: tuple                   # of SubnetPlan, DHCP-enabled, served
    hosts: dict                      # port id -> HostEntry, every shard's
    macs: dict                       # MAC -> port id
    problems: list = field(default_factory=list)
    skipped: dict = field(default_factory=dict)   # MAC -> why not served
    # one per dnsmasq; a small network has one, holding every host
    shards: tuple = ()
    # port id -> unit id, when there are several shards
    owners: dict = field(default_factory=dict)
    served = True

    @property
    def sharded(self):
        return len(self.shards) > 1

    def unit_of(self, port_id):
        """The unit id of the shard that serves this port."""
        return self.owners.get(port_id, self.quantum_id)


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


# a shard's unit id is "<quantumId>.<DHCP port id>": neither holds a dot
UNIT_SEP = '.'


def unit_id(quantum_id, dhcp_port_id=None):
    """The id of one dnsmasq of a network (its namespace, state dir and
    devices are named from it): the network's quantumId for the first
    shard (a small network is exactly as it always was), else
    "<quantumId>.<DHCP port id>"."""
    if dhcp_port_id is None:
        return quantum_id
    return quantum_id + UNIT_SEP + dhcp_port_id


def network_of(unit):
    """The quantumId of a unit id."""
    return unit.split(UNIT_SEP, 1)[0]


def namespace_name(unit):
    """A network's (or shard's) namespace: the one place the qdhcp- name
    is made."""
    return NS_PREFIX + unit
