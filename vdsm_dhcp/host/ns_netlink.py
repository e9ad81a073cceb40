"""Netlink inside one network namespace, from the calling thread (no
helper process: netns_exec.thread_in_netns), for the veth driver's plug.

Reads (the checks of every plug, also of every network an agent restart
adopts) are two dumps parsed here by hand: ~0.1 ms, where pyroute2 parses
every attribute of every message (~2 ms with its socket set up; 200
networks at a restart: 0.4 s of a 1 s budget). Writes (drift only) go
through pyroute2, on a second socket made when the first write comes.
"""
import contextlib
import os
import socket
import struct

from pyroute2 import IPRoute

from vdsm_dhcp.host.netns_exec import thread_in_netns

NETLINK_ROUTE = 0
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_GETLINK, RTM_GETADDR = 18, 22
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU = 1, 3, 4
IFA_ADDRESS = 1
NLA_TYPE_MASK = 0x3fff


def _netlink_socket():
    return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM |
                         socket.SOCK_CLOEXEC, NETLINK_ROUTE)


def _attributes(payload, start):
    """Netlink attributes (type -> raw value) from `start` on."""
    attrs = {}
    while start + 4 <= len(payload):
        length, kind = struct.unpack_from('=HH', payload, start)
        if length < 4:
            break
        attrs[kind & NLA_TYPE_MASK] = payload[start + 4:start + length]
        start += (length + 3) & ~3
    return attrs


class Link:
    __slots__ = ('index', 'flags', 'mac', 'mtu')

    def __init__(self, index, flags, mac, mtu):
        self.index, self.flags, self.mac, self.mtu = index, flags, mac, mtu


class Namespace:
    """Netlink inside one namespace, for one plug. Reads (the checks of
    every plug) are two dumps parsed by hand: ~0.1 ms, where pyroute2
    parses every attribute of every message (~2 ms with its socket set
    up). Writes (drift only) go through pyroute2 on a second socket made
    when the first write comes."""

    def __init__(self, name):
        self.name = name
        with thread_in_netns(name):
            self.sock = _netlink_socket()
        self._writer = self._writer_sock = None
        self._seq = 0

    def close(self):
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
            self._writer_sock.close()
        self.sock.close()

    @property
    def ipr(self):
        """pyroute2 in the namespace, for writes."""
        if self._writer is None:
            with thread_in_netns(self.name):
                self._writer_sock = _netlink_socket()
            self._writer = IPRoute(use_socket=self._writer_sock)
        return self._writer

    def _dump(self, msg_type, body):
        """The payloads of one dump request's answer."""
        self._seq += 1
        self.sock.send(struct.pack('=IHHII', 16 + len(body), msg_type,
                                   NLM_F_REQUEST | NLM_F_DUMP, self._seq, 0)
                       + body)
        while True:
            data = self.sock.recv(1 << 16)
            offset = 0
            while offset + 16 <= len(data):
                length, kind, _, seq = struct.unpack_from('=IHHI', data,
                                                          offset)
                if length < 16:
                    raise OSError('netlink: bad message length %d' % length)
                if seq == self._seq:
                    if kind == NLMSG_DONE:
                        return
                    if kind == NLMSG_ERROR:
                        code = -struct.unpack_from('=i', data, offset + 16)[0]
                        raise OSError(code, 'netlink dump in %s: %s'
                                      % (self.name, os.strerror(code)))
                    yield data[offset + 16:offset + length]
                offset += (length + 3) & ~3

    def links(self):
        """name -> Link, of every device in the namespace."""
        links = {}
        for msg in self._dump(RTM_GETLINK, bytes(16)):   # ifinfomsg
            index, flags = struct.unpack_from('=iI', msg, 4)
            attrs = _attributes(msg, 16)
            name = attrs.get(IFLA_IFNAME, b'').rstrip(b'\0').decode()
            mac = ':'.join('%02x' % b for b in attrs.get(IFLA_ADDRESS, b''))
            mtu = attrs.get(IFLA_MTU)
            links[name] = Link(index, flags, mac,
                               struct.unpack('=I', mtu)[0] if mtu else None)
        return links

    def addresses(self, index):
        """The addresses on device `index`, as 'ip/prefixlen' (link-local
        IPv6 aside: the kernel's own)."""
        have = set()
        for msg in self._dump(RTM_GETADDR, bytes(8)):    # ifaddrmsg
            family, plen, _, _, ifindex = struct.unpack_from('=BBBBI', msg)
            ip = _attributes(msg, 8).get(IFA_ADDRESS)
            if ifindex != index or ip is None or \
                    family not in (socket.AF_INET, socket.AF_INET6):
                continue
            ip = socket.inet_ntop(family, ip)
            if not ip.startswith('fe80:'):
                have.add('%s/%d' % (ip, plen))
        return have
