"""The planner's memo: the key of a raw port (validate_port's verdict on
a port whose key is unchanged is reused, so a change to one port of 10,000
re-validates one port), what is kept of it, and the plans kept from round
to round. Pure; runs for every port of every round.

What outlives a round holds no object of the IPAM document (see
validate.owned) and as few as it can per port (10,000s of them)."""
import ipaddress

from vdsm_dhcp.model import HostEntry
from vdsm_dhcp.sources.validate import owned, shared

PLAIN = (str, type(None))


def fingerprint(raw):
    """A hashable key of every field validate_port reads (PORT_FIELDS),
    equal only for the same data; None when a field is not a scalar (no
    memo for that port). Strings and None are keyed as they are (nothing
    else equals them): (id, MAC, owner, host, DNS name, subnet id, IP,
    subnet id, IP, ...), one flat tuple (it is kept per port); other values
    with their type (1, 1.0 and True are equal but different data), in a
    key of 12 items that a flat one (odd length) never equals."""
    get = raw.get
    fixed = get('fixed_ips')
    if type(fixed) is list:
        key = (get('id'), get('mac_address'), get('device_owner'),
               get('binding:host_id'), get('dns_name'))
        if type(key[0]) in PLAIN and type(key[1]) in PLAIN and \
                type(key[2]) in PLAIN and type(key[3]) in PLAIN and \
                type(key[4]) in PLAIN:
            for f in fixed:
                if type(f) is not dict:
                    return _typed(raw)
                sid, ip = f.get('subnet_id'), f.get('ip_address')
                if type(sid) is not str or type(ip) is not str:
                    return _typed(raw)
                key += (sid, ip)
            return key
    return _typed(raw)


def _typed(raw):
    """fingerprint() of a port with a value that is not a string."""
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


def kept(key, entry):
    """(key, entry) as the memo keeps them: the strings of a flat key
    copied (the few values thousands of ports repeat, once), and the
    entry's strings those of the key when equal (one string, not two)."""
    if key is None or not len(key) % 2:
        return key, entry
    key = tuple([v if type(v) is not str else
                 shared(v) if at in (2, 3) or at > 4 and at % 2 else
                 owned(v) for at, v in enumerate(key)])
    same = {v: v for v in key}
    return key, HostEntry(same.get(entry.port_id, entry.port_id),
                          same.get(entry.mac, entry.mac), entry.ips,
                          same.get(entry.hostname, entry.hostname))


# an IPv6 address's key is apart from every IPv4 one's
V6_KEY = 1 << 128


def ip_key(ip):
    """An address as the conflict checks key it: the int its ipaddress
    object holds already (the memo keeps no text of it per port)."""
    return int(ip) if ip.version == 4 else int(ip) | V6_KEY


def ip_text(key):
    return str(ipaddress.IPv4Address(key) if key < V6_KEY
               else ipaddress.IPv6Address(key ^ V6_KEY))


def same_plan(memo, qid, plan):
    """The plan of the last round when equal to this one: an unchanged
    network keeps its objects, nothing new outlives the round."""
    if memo is None:
        return plan
    if not plan.served:
        memo.pop(('plan', qid), None)
        return plan
    last = memo.get(('plan', qid))
    if last == plan:
        return last
    memo[('plan', qid)] = plan
    return plan


def forget_unlisted(memo, plans):
    """Drop what the memo holds of networks no longer listed (keys: a
    quantumId, or (kind, quantumId))."""
    if memo is not None:
        for key in [k for k in memo
                    if (k[1] if type(k) is tuple else k) not in plans]:
            del memo[key]
