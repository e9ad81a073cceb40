"""The veth interface driver: netlink only (no `ip` subprocesses), and no
helper process per namespace operation.

plug() checks what exists by reads only: the host side (namespace, mark,
veth up, its bridge by ifindex, MTU, our alias) in sysfs, the namespace
side (its veth's MAC, MTU and up flag, lo up, addresses) by netlink from
inside the namespace. It writes only what differs: drift (a deleted veth,
a bridge deleted and re-created, an address removed) is repaired, and a
plug that finds everything right (an agent restart adopting a running
network) sends no netlink write. After one plug, the next ones check the
host side in sysfs alone until it drifts. unplug() removes the namespace
and both veth ends.

Netlink: one host-side socket per thread (the agent's workers), kept
until close(); a namespace is reached by a socket made inside it by the
calling thread (netns_exec.thread_in_netns), not by pyroute2's NetNS,
which forks a helper per instance (pyroute2 0.9.7: netns.create_socket);
its checks are read by hand (host/ns_netlink.py), pyroute2 writes.

Our mark: an empty file MARK_DIR/<namespace> exists from before the
namespace is created until after it is removed; the host veth end carries
the ifalias DEVICE_MARK<unit id>. ours() returns only what is marked.
"""
import contextlib
import logging
import os
import threading

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from vdsm_dhcp.host import bridges
from vdsm_dhcp.host.ns_netlink import Namespace
from vdsm_dhcp.host.netns_exec import (NETNS_DIR, create_netns,
                                       remove_netns)
from vdsm_dhcp.model import namespace_name
from vdsm_dhcp.host.interface import (DEVICE_MARK, HOST_PREFIX, NS_PREFIX,
                                      PlugError, device_names)

log = logging.getLogger('vdsm_dhcp.veth')

IFA_F_NODAD = 0x02
IFF_UP = 0x1
SYS_NET = '/sys/class/net/'


def _read(path):
    with open(path) as f:
        return f.read().strip()


def _read_int(path, base=10):
    return int(_read(path), base)


class VethDriver:
    def __init__(self, mark_dir):
        self.mark_dir = mark_dir
        self._plugged = {}   # namespace -> (InterfacePlan, mtu) last plugged
        self._local = threading.local()    # .ipr: this thread's socket
        self._sockets = set()              # every thread's, for close()
        self._sockets_lock = threading.Lock()

    # -- netlink sockets ------------------------------------------------------
    @contextlib.contextmanager
    def _host(self):
        """This thread's host-side netlink socket, made on first use; one
        that failed other than by a kernel answer (NetlinkError) is closed
        and the next call makes a new one."""
        ipr = getattr(self._local, 'ipr', None)
        if ipr is None:
            ipr = self._local.ipr = IPRoute()
            with self._sockets_lock:
                self._sockets.add(ipr)
        try:
            yield ipr
        except (NetlinkError, PlugError):
            raise            # an answer: the socket works
        except Exception:
            self._drop(ipr)
            raise

    def _drop(self, ipr):
        self._local.ipr = None
        with self._sockets_lock:
            self._sockets.discard(ipr)
        with contextlib.suppress(Exception):
            ipr.close()

    def close(self):
        """Close every thread's host-side socket (the agent's end)."""
        with self._sockets_lock:
            sockets, self._sockets = self._sockets, set()
        for ipr in sockets:
            with contextlib.suppress(Exception):
                ipr.close()
        self._local = threading.local()

    # -- our mark -------------------------------------------------------------
    def _mark_path(self, namespace):
        return os.path.join(self.mark_dir, namespace)

    def _mark(self, namespace):
        path = self._mark_path(namespace)
        if not os.path.exists(path):
            os.makedirs(self.mark_dir, mode=0o755, exist_ok=True)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC,
                             0o644))

    def _unmark(self, namespace):
        try:
            os.unlink(self._mark_path(namespace))
        except FileNotFoundError:
            pass

    def ours(self):
        """(namespaces, host devices) that carry our mark: marked
        namespaces (also a mark whose namespace is gone: remove() drops
        it) and vdh* devices whose ifalias is ours."""
        with self._host() as ipr:
            links = [(link.get_attr('IFLA_IFNAME'),
                      link.get_attr('IFLA_IFALIAS') or '')
                     for link in ipr.get_links()]
        try:
            marked = {n for n in os.listdir(self.mark_dir)
                      if n.startswith(NS_PREFIX)}
        except FileNotFoundError:
            marked = set()
        return (marked,
                {name for name, alias in links
                 if name and name.startswith(HOST_PREFIX)
                 and alias.startswith(DEVICE_MARK)})

    # -- plug ---------------------------------------------------------------
    def plug(self, unit_id, iface):
        """Make the namespace look like iface (an InterfacePlan). unit_id:
        a network's quantumId, or "<quantumId>.<port id>" for a further
        shard (only named from here). Returns whether the interface's
        addresses or MAC had to change (a dnsmasq bound to the old ones
        must restart); an adopted namespace that is already right returns
        False, having written nothing."""
        mtu = bridges.mtu(iface.bridge)
        host_if, ns_if = device_names(unit_id)
        host_ok = self._intact(unit_id, iface, host_if, mtu)
        if host_ok and self._plugged.get(iface.namespace) == (iface, mtu):
            return False
        try:
            changed = self._plug(unit_id, iface, host_if, ns_if, mtu,
                                 host_ok)
        except (NetlinkError, OSError) as e:
            raise PlugError('plugging %s into bridge %s: %s'
                            % (iface.namespace, iface.bridge, e)) from None
        self._plugged[iface.namespace] = (iface, mtu)
        return changed

    def _intact(self, unit_id, iface, host_if, mtu):
        """The host side is right, from sysfs alone (no netlink, no
        namespace switch): namespace and mark, host veth up, enslaved to
        the bridge that has this name now (by ifindex: a bridge deleted
        and re-created is another device), with the bridge's MTU and our
        alias."""
        try:
            if not (os.path.exists(NETNS_DIR + iface.namespace) and
                    os.path.exists(self._mark_path(iface.namespace))):
                return False
            if not _read_int(SYS_NET + host_if + '/flags', 16) & IFF_UP:
                return False
            if mtu and _read_int(SYS_NET + host_if + '/mtu') != mtu:
                return False
            if _read(SYS_NET + host_if + '/ifalias') != DEVICE_MARK + unit_id:
                return False
            return (_read_int(SYS_NET + host_if + '/master/ifindex') ==
                    _read_int(SYS_NET + iface.bridge + '/ifindex'))
        except (OSError, ValueError):
            return False

    def _plug(self, unit_id, iface, host_if, ns_if, mtu, host_ok):
        self._mark(iface.namespace)    # before creating: never unmarked
        if not os.path.exists(NETNS_DIR + iface.namespace):
            log.info('%s: creating the namespace', iface.namespace)
            create_netns(iface.namespace)
        ns = Namespace(iface.namespace)
        try:
            links = ns.links()
            peer = links.get(ns_if)
            if not (host_ok and peer):
                self._plug_host(unit_id, iface, host_if, ns_if, mtu, ns,
                                peer)
                peer = ns.links()[ns_if]
            lo = links.get('lo')
            if lo is not None and not lo.flags & IFF_UP:
                ns.ipr.link('set', index=lo.index, state='up')
            mac_changed = peer.mac != iface.mac
            if mac_changed:
                if peer.flags & IFF_UP:
                    ns.ipr.link('set', index=peer.index, state='down')
                ns.ipr.link('set', index=peer.index, address=iface.mac)
            if mtu and peer.mtu != mtu:
                ns.ipr.link('set', index=peer.index, mtu=mtu)
            if mac_changed or not peer.flags & IFF_UP:
                ns.ipr.link('set', index=peer.index, state='up')
            return self._sync_addresses(ns, peer.index, iface.addresses) \
                or mac_changed
        finally:
            ns.close()

    def _plug_host(self, unit_id, iface, host_if, ns_if, mtu, ns, peer):
        """The host end, created or set right (netlink, host side)."""
        with self._host() as ipr:
            bridge = ipr.link_lookup(ifname=iface.bridge)
            if not bridge:
                raise PlugError('bridge %s does not exist' % iface.bridge)
            host = ipr.link_lookup(ifname=host_if)
            if host and not peer:   # its peer is elsewhere: start over
                ipr.link('del', index=host[0])
                host = []
            elif peer and not host:   # the host end vanished
                ns.ipr.link('del', index=peer.index)
            if not host:
                log.info('%s: creating veth %s into bridge %s',
                         iface.namespace, host_if, iface.bridge)
                ipr.link('add', ifname=host_if, kind='veth',
                         peer={'ifname': ns_if,
                               'net_ns_fd': iface.namespace})
                host = ipr.link_lookup(ifname=host_if)
            link = ipr.link('get', index=host[0])[0]
            settings = {}
            if link.get_attr('IFLA_MASTER') != bridge[0]:
                settings['master'] = bridge[0]
            if not link['flags'] & IFF_UP:
                settings['state'] = 'up'
            if mtu and link.get_attr('IFLA_MTU') != mtu:
                settings['mtu'] = mtu
            if link.get_attr('IFLA_IFALIAS') != DEVICE_MARK + unit_id:
                settings['ifalias'] = DEVICE_MARK + unit_id
            if settings:
                ipr.link('set', index=host[0], **settings)

    @staticmethod
    def _sync_addresses(ns, index, wanted):
        have = ns.addresses(index)
        for cidr in have - set(wanted):
            ip, plen = cidr.split('/')
            ns.ipr.addr('del', index=index, address=ip, prefixlen=int(plen))
        for cidr in wanted:
            if cidr in have:
                continue
            ip, plen = cidr.split('/')
            extra = {'flags': IFA_F_NODAD} if ':' in ip else {}
            ns.ipr.addr('add', index=index, address=ip, prefixlen=int(plen),
                        **extra)
        return have != set(wanted)

    # -- unplug -------------------------------------------------------------
    def unplug(self, unit_id):
        namespace = namespace_name(unit_id)
        host_if, _ = device_names(unit_id)
        self._plugged.pop(namespace, None)
        self.remove(namespace, host_if)

    def remove(self, namespace, host_if):
        """Delete the host veth end (its peer goes with it), the namespace
        and its mark; either may be None."""
        if host_if:
            with self._host() as ipr:
                index = ipr.link_lookup(ifname=host_if)
                if index:
                    try:
                        ipr.link('del', index=index[0])
                    except NetlinkError as e:
                        if e.code != 19:   # ENODEV: already gone
                            raise
        if namespace:
            self._plugged.pop(namespace, None)
            if os.path.lexists(NETNS_DIR + namespace):
                remove_netns(namespace)
            self._unmark(namespace)
