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
        self._keys = None
        self._owners = {}

    def owner(self, mac, shard_keys):
        keys = tuple(shard_keys)
        if keys != self._keys:
            self._keys, self._owners = keys, {}
        found = self._owners.get(mac)
        if found is None:
            found = self._owners[mac] = owner(mac, keys)
        return found

    def forget(self, macs):
        for mac in macs:
            self._owners.pop(mac, None)
