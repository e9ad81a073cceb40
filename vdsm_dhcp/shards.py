"""Which dnsmasq of a big network serves a host: pure rules, no I/O.

dnsmasq pays O(leases x hosts) per hosts-file read and per SIGHUP (see
docs/architecture.md, "Shards"), so a network past `shard_size` hosts is
served by several dnsmasq ("shards"), each with its own DHCP port from
the IPAM. Each host belongs to exactly one shard, chosen by rendezvous
(highest random weight) hashing of its MAC over the shards' DHCP port
ids: adding a shard moves only the hosts that the new shard wins (about
1/n of them), removing one moves only its own hosts. Every host computes
the same owner from the same IPAM data, so two hosts serving one network
shard it the same way.
"""
import hashlib
import math

from vdsm_dhcp.model import InterfacePlan, ShardPlan, namespace_name, unit_id

# a shard count does not shrink until the network has clearly shrunk:
# hosts moved between shards wait for their REBIND (T2) to be answered
SHRINK_BELOW = 0.8


def weight(mac, shard_key):
    """A stable 64-bit weight of (host, shard): the same on every host
    and every Python (not hash(): salted per process)."""
    digest = hashlib.blake2b(('%s|%s' % (mac.lower(), shard_key)).encode(),
                             digest_size=8).digest()
    return int.from_bytes(digest, 'big')


def owner(mac, shard_keys):
    """The shard key (of shard_keys, non-empty) that serves this MAC."""
    if len(shard_keys) == 1:
        return shard_keys[0]
    return max(shard_keys, key=lambda key: (weight(mac, key), key))


def shards_needed(hosts, shard_size, available, previous=None):
    """How many of the `available` DHCP ports serve a network of `hosts`
    hosts: one per started shard_size, at least 1, at most `available`.
    Grows as soon as a shard would pass shard_size; shrinks only when
    the hosts would fit in one shard fewer at SHRINK_BELOW of its size
    (a network hovering around a boundary does not move hosts back and
    forth)."""
    need = max(1, math.ceil(hosts / shard_size))
    if previous and need < previous and \
            hosts > (previous - 1) * shard_size * SHRINK_BELOW:
        need = previous
    return max(1, min(need, available))


class Assignment:
    """owner() with memory: per MAC, computed once per set of shards (a
    round at 10,000 hosts would otherwise hash 10,000 x shards)."""

    def __init__(self):
        self._keys = ()
        self._owners = {}

    def use(self, shard_keys):
        """The shards of this round (once per round: comparing them per
        host would cost hosts x shards)."""
        keys = tuple(shard_keys)
        if keys != self._keys:
            self._keys, self._owners = keys, {}

    def owner(self, mac):
        found = self._owners.get(mac)
        if found is None:
            found = self._owners[mac] = owner(mac, self._keys)
        return found

    def size(self):
        return len(self._owners)


def split(plan, usable, shard_size, state):
    """Split a big network's hosts (a NetworkPlan with its one shard) over
    the `usable` DHCP ports of this host [(port, its interface addresses)],
    oldest first: the first is the network's own interface. As many as
    shards_needed says; `state` (a dict the caller keeps per network)
    holds the last count and the Assignment memo."""
    qid, hosts = plan.quantum_id, plan.hosts
    count = shards_needed(len(hosts), shard_size, len(usable),
                          state.get('count'))
    state['count'] = count
    if count * shard_size < len(hosts):
        plan.problems.append(
            '%d hosts need %d DHCP ports of this host to stay within '
            'shard_size %d; %d usable: each dnsmasq serves more, and every '
            'change costs more' % (len(hosts), -(-len(hosts) // shard_size),
                                   shard_size, len(usable)))
    if count < 2:
        return
    shards = [plan.shards[0]]
    for port, addresses in usable[1:count]:
        unit = unit_id(qid, port.id)
        shards.append(ShardPlan(unit, InterfacePlan(
            namespace_name(unit), plan.name, port.mac, tuple(addresses)),
            {}))
    # the rendezvous keys are the DHCP port ids: stable while the ports
    # are, whatever their order or unit names
    keys = [port.id for port, _ in usable[:count]]
    unit_by_key = dict(zip(keys, (s.unit for s in shards)))
    assignment = state.get('assignment')
    if assignment is None or assignment.size() > 2 * len(hosts) + 64:
        # new, or holding many MACs that are gone: start afresh
        assignment = state['assignment'] = Assignment()
    assignment.use(keys)
    hosts_of = {s.unit: {} for s in shards}
    for port_id, entry in hosts.items():
        unit = unit_by_key[assignment.owner(entry.mac)]
        hosts_of[unit][port_id] = entry
        plan.owners[port_id] = unit
    plan.shards = tuple(ShardPlan(s.unit, s.interface, hosts_of[s.unit])
                        for s in shards)
