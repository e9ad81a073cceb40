"""dnsmasq's lease file, read for the `leases` command.

dnsmasq rewrites it as it likes, and VM clients choose their hostnames:
every line is checked, one that does not parse is skipped (and counted),
reading never raises for the content. The format, one lease per line:
  IPv4: EXPIRES MAC IP HOSTNAME CLIENT-ID     (HOSTNAME "*" when none)
  "duid SERVER-DUID", then IPv6: EXPIRES IAID IP HOSTNAME CLIENT-DUID
EXPIRES 0 means infinite. An IPv6 lease names no MAC; the client DUID holds
one when it is of type LL or LLT on Ethernet (what most clients send).
"""
import ipaddress
import re

MAX_BYTES = 64 * 1024 * 1024    # a lease file that big is not dnsmasq's
HEX_MAC = re.compile(r'[0-9a-f]{2}(:[0-9a-f]{2}){5}')
# other hardware types: "TYPE-" then the address ("20-..." InfiniBand)
HW_ADDRESS = re.compile(r'([0-9a-f]{1,2}-)?[0-9a-f]{2}(:[0-9a-f]{2}){0,63}')


def _mac_of_duid(duid):
    """The MAC in a DUID-LLT (1) or DUID-LL (3) of hardware type 1."""
    octets = duid.lower().split(':')
    if len(octets) == 14 and octets[:4] == ['00', '01', '00', '01']:
        octets = octets[8:]
    elif len(octets) == 10 and octets[:4] == ['00', '03', '00', '01']:
        octets = octets[4:]
    else:
        return None
    mac = ':'.join(octets)
    return mac if HEX_MAC.fullmatch(mac) else None


def parse(text):
    """(leases, skipped lines): each lease {"expires", "mac", "ip",
    "hostname"}, IPv6 ones with "iaid" too (and "mac" None when the DUID
    holds none)."""
    leases, skipped, v6 = [], 0, False
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if fields[0] == 'duid' and len(fields) == 2:
            v6 = True
            continue
        try:
            if len(fields) < 4:
                raise ValueError('too few fields')
            expires = int(fields[0])
            if expires < 0:
                raise ValueError('negative expiry')
            ip = ipaddress.ip_address(fields[2])
            if (ip.version == 6) != v6:
                raise ValueError('address of the wrong family')
        except ValueError:
            skipped += 1
            continue
        lease = {'expires': expires, 'ip': str(ip), 'hostname': fields[3]}
        if v6:
            lease['iaid'] = fields[1]
            lease['mac'] = _mac_of_duid(fields[4]) if len(fields) > 4 \
                else None
        else:
            mac = fields[1].lower()
            if not HW_ADDRESS.fullmatch(mac):
                skipped += 1
                continue
            lease['mac'] = mac
        leases.append(lease)
    return leases, skipped


def read(path):
    """parse() of the file; no file is no lease. OSError if unreadable."""
    try:
        with open(path, 'rb') as f:
            data = f.read(MAX_BYTES)
    except FileNotFoundError:
        return [], 0
    return parse(data.decode('utf-8', errors='replace'))
