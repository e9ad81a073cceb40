"""The planner's memo key of a raw port: validate_port's verdict on a
port whose key is unchanged is reused, so a change to one port of 10,000
re-validates one port. Pure; runs for every port of every round."""

PLAIN = (str, type(None))


def fingerprint(raw):
    """A hashable key of every field validate_port reads (PORT_FIELDS),
    equal only for the same data; None when a field is not a scalar (no
    memo for that port). Strings and None are keyed as they are (nothing
    else equals them); other values with their type (1, 1.0 and True are
    equal but different data)."""
    get = raw.get
    pid, mac, owner = get('id'), get('mac_address'), get('device_owner')
    host, name, fixed = get('binding:host_id'), get('dns_name'), \
        get('fixed_ips')
    if type(fixed) is list:
        try:
            fixed = tuple([(f['subnet_id'], f['ip_address'])
                           for f in fixed])
        except (TypeError, KeyError):
            return _typed(raw)
        if type(pid) in PLAIN and type(mac) in PLAIN and \
                type(owner) in PLAIN and type(host) in PLAIN and \
                type(name) in PLAIN:
            for sid, ip in fixed:
                if type(sid) is not str or type(ip) is not str:
                    return _typed(raw)
            return (pid, mac, owner, host, fixed, name)
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
