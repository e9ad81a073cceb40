"""Give a removed host's IPv4 lease back: a DHCPRELEASE to dnsmasq, as
dnsmasq's own `dhcp_release` sends it (and Neutron runs it per removed
lease), but from the agent: one socket per apply, no process per lease.

Why: dnsmasq keeps a removed host's lease until it expires, and refuses
to hand that address to the next host it is reserved for ("not using
configured address ... because it is leased to ..."). dnsmasq handles a
RELEASE before its dhcp-ignore check, so it works for a MAC it no longer
knows; it checks that the server identifier is its own address and that
the lease (MAC, address) matches.
"""
import ipaddress
import os
import socket
import struct

from vdsm_dhcp.host.netns_exec import thread_in_netns
from vdsm_dhcp.model import HostEntry

SERVER_PORT = 67
MAGIC_COOKIE = b'\x63\x82\x53\x63'
DHCPRELEASE = 7
OPTION_MESSAGE_TYPE, OPTION_SERVER_ID, OPTION_END = 53, 54, 255


def release_packet(mac, ip, server, xid=None):
    """The BOOTP/DHCP bytes of a DHCPRELEASE of `ip` held by `mac`, to
    the server whose identifier is `server` (pure)."""
    chaddr = bytes.fromhex(mac.replace(':', ''))
    if len(chaddr) != 6:
        raise ValueError('not an Ethernet MAC: %r' % mac)
    xid = int.from_bytes(os.urandom(4), 'big') if xid is None else xid
    header = struct.pack('!BBBBIHH4s4s4s4s16s64s128s',
                         1, 1, 6, 0, xid, 0, 0,
                         ipaddress.IPv4Address(ip).packed, b'\0' * 4,
                         b'\0' * 4, b'\0' * 4, chaddr, b'', b'')
    options = bytes([OPTION_MESSAGE_TYPE, 1, DHCPRELEASE,
                     OPTION_SERVER_ID, 4]) + \
        ipaddress.IPv4Address(server).packed + bytes([OPTION_END])
    return header + MAGIC_COOKIE + options


def removed(written, hosts):
    """What a dnsmasq had (`written`: port id -> (file, HostEntry or
    text)) that `hosts` (port id -> HostEntry, what it serves now) takes
    away, in one pass (pure): (port id -> MAC of the entries gone or now
    with another MAC, [(MAC, IPv4 address) no longer given to that MAC]:
    the leases to release)."""
    macs, leases = {}, []
    for port_id, (_, entry) in written.items():
        if not isinstance(entry, HostEntry):
            continue
        now = hosts.get(port_id)
        if now == entry:
            continue
        same_mac = now is not None and now.mac == entry.mac
        if not same_mac:
            macs[port_id] = entry.mac
        kept = set(now.ips) if same_mac else ()
        leases.extend((entry.mac, ip) for ip in entry.ips
                      if ip.version == 4 and ip not in kept)
    return macs, leases


def server_for(ip, addresses):
    """Of an interface's addresses ('10.0.0.2/24', ...), the IPv4 one on
    ip's subnet: the server identifier dnsmasq gave that lease."""
    for cidr in addresses:
        iface = ipaddress.ip_interface(cidr)
        if iface.version == 4 and ip in iface.network:
            return iface.ip
    return None


def release(namespace, ifname, addresses, leases):
    """Send a DHCPRELEASE for each (mac, IPv4 address) in leases to the
    dnsmasq listening on ifname in namespace. Returns how many were sent;
    OSError when the namespace or interface is not there."""
    packets = []
    for mac, ip in leases:
        server = server_for(ip, addresses) if ip.version == 4 else None
        if server is not None:
            packets.append((release_packet(mac, ip, server), str(server)))
    if not packets:
        return 0
    with thread_in_netns(namespace):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        # as dhcp_release does: out of (and so, to dnsmasq, in through)
        # the interface dnsmasq serves
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE,
                        ifname.encode() + b'\0')
        for data, server in packets:
            sock.sendto(data, (server, SERVER_PORT))
    return len(packets)
