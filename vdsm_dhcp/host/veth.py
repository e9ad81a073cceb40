"""The veth interface driver, with pyroute2 only (no `ip` subprocesses).

plug() checks what exists (namespace, veth, its bridge by ifindex) with a
few sysfs reads, and touches only what differs: drift (a deleted veth, a
bridge deleted and re-created) is repaired by the next plug, and a plug
that finds everything right writes nothing. unplug() removes the namespace
and both veth ends.

Our mark: an empty file MARK_DIR/<namespace> exists from before the
namespace is created until after it is removed; the host veth end carries
the ifalias DEVICE_MARK<quantumId>. ours() returns only what is marked.
"""
import logging
import os

from pyroute2 import IPRoute, NetNS, netns
from pyroute2.netlink.exceptions import NetlinkError

from vdsm_dhcp.host import bridges
from vdsm_dhcp.model import namespace_name
from vdsm_dhcp.host.interface import (DEVICE_MARK, HOST_PREFIX, NS_PREFIX,
                                 PlugError, device_names)

log = logging.getLogger('vdsm_dhcp.veth')

IFA_F_NODAD = 0x02
IFF_UP = 0x1
SYS_NET = '/sys/class/net/'
NETNS_DIR = '/run/netns/'


def _netns_names():
    try:
        return set(netns.listnetns())
    except FileNotFoundError:
        return set()


def _read_int(path, base=10):
    with open(path) as f:
        return int(f.read().strip(), base)


class VethDriver:
    def __init__(self, mark_dir):
        self.mark_dir = mark_dir
        self._plugged = {}   # namespace -> (InterfacePlan, mtu) last plugged

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
        with IPRoute() as ipr:
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
    def plug(self, quantum_id, iface):
        """Make the namespace look like iface (an InterfacePlan). Returns
        whether the interface's addresses or MAC had to change (a dnsmasq
        bound to the old ones must restart); an adopted namespace that is
        already right returns False."""
        mtu = bridges.mtu(iface.bridge)
        host_if, ns_if = device_names(quantum_id)
        if self._plugged.get(iface.namespace) == (iface, mtu) and \
                self._intact(iface, host_if, mtu):
            return False
        try:
            changed = self._plug(quantum_id, iface, host_if, ns_if, mtu)
        except NetlinkError as e:
            raise PlugError('plugging %s into bridge %s: %s'
                            % (iface.namespace, iface.bridge, e)) from None
        except OSError as e:
            raise PlugError('plugging %s into bridge %s: %s'
                            % (iface.namespace, iface.bridge, e)) from None
        self._plugged[iface.namespace] = (iface, mtu)
        return changed

    def _intact(self, iface, host_if, mtu):
        """What was plugged is still there, from sysfs alone (no netlink,
        no namespace switch): namespace and mark, host veth up, enslaved
        to the bridge that has this name now (by ifindex: a bridge deleted
        and re-created is another device), with the bridge's MTU."""
        try:
            if not (os.path.exists(NETNS_DIR + iface.namespace) and
                    os.path.exists(self._mark_path(iface.namespace))):
                return False
            if not _read_int(SYS_NET + host_if + '/flags', 16) & IFF_UP:
                return False
            if mtu and _read_int(SYS_NET + host_if + '/mtu') != mtu:
                return False
            return (_read_int(SYS_NET + host_if + '/master/ifindex') ==
                    _read_int(SYS_NET + iface.bridge + '/ifindex'))
        except (OSError, ValueError):
            return False

    def _plug(self, quantum_id, iface, host_if, ns_if, mtu):
        self._mark(iface.namespace)    # before creating: never unmarked
        if iface.namespace not in _netns_names():
            netns.create(iface.namespace)
        with IPRoute() as ipr:
            bridge = ipr.link_lookup(ifname=iface.bridge)
            if not bridge:
                raise PlugError('bridge %s does not exist' % iface.bridge)
            host = ipr.link_lookup(ifname=host_if)
            with NetNS(iface.namespace) as ns:
                peer = ns.link_lookup(ifname=ns_if)
                if host and not peer:   # its peer is elsewhere: start over
                    ipr.link('del', index=host[0])
                    host = []
                elif peer and not host:   # the host end vanished
                    ns.link('del', index=peer[0])
            if not host:
                log.info('%s: creating veth %s into bridge %s',
                         iface.namespace, host_if, iface.bridge)
                ipr.link('add', ifname=host_if, kind='veth',
                         peer={'ifname': ns_if,
                               'net_ns_fd': iface.namespace})
                host = ipr.link_lookup(ifname=host_if)
            link = ipr.get_links(host[0])[0]
            settings = {}
            if link.get_attr('IFLA_MASTER') != bridge[0]:
                settings['master'] = bridge[0]
            if not link['flags'] & IFF_UP:
                settings['state'] = 'up'
            if mtu and link.get_attr('IFLA_MTU') != mtu:
                settings['mtu'] = mtu
            if link.get_attr('IFLA_IFALIAS') != DEVICE_MARK + quantum_id:
                settings['ifalias'] = DEVICE_MARK + quantum_id
            if settings:
                ipr.link('set', index=host[0], **settings)
        with NetNS(iface.namespace) as ns:
            lo = ns.link_lookup(ifname='lo')
            ns.link('set', index=lo[0], state='up')
            index = ns.link_lookup(ifname=ns_if)[0]
            link = ns.get_links(index)[0]
            mac_changed = link.get_attr('IFLA_ADDRESS') != iface.mac
            if mac_changed:
                ns.link('set', index=index, state='down')
                ns.link('set', index=index, address=iface.mac)
            if mtu and link.get_attr('IFLA_MTU') != mtu:
                ns.link('set', index=index, mtu=mtu)
            ns.link('set', index=index, state='up')
            return self._sync_addresses(ns, index, iface.addresses) \
                or mac_changed

    @staticmethod
    def _sync_addresses(ns, index, wanted):
        have = {}
        for addr in ns.get_addr(index=index):
            ip = addr.get_attr('IFA_ADDRESS')
            if ip and not ip.startswith('fe80:'):
                have['%s/%d' % (ip, addr['prefixlen'])] = addr
        for cidr in set(have) - set(wanted):
            ip, plen = cidr.split('/')
            ns.addr('del', index=index, address=ip, prefixlen=int(plen))
        for cidr in wanted:
            if cidr in have:
                continue
            ip, plen = cidr.split('/')
            extra = {'flags': IFA_F_NODAD} if ':' in ip else {}
            ns.addr('add', index=index, address=ip, prefixlen=int(plen),
                    **extra)
        return set(have) != set(wanted)

    # -- unplug -------------------------------------------------------------
    def unplug(self, quantum_id):
        namespace = namespace_name(quantum_id)
        host_if, _ = device_names(quantum_id)
        self._plugged.pop(namespace, None)
        self.remove(namespace, host_if)

    def remove(self, namespace, host_if):
        """Delete the host veth end (its peer goes with it), the namespace
        and its mark; either may be None."""
        with IPRoute() as ipr:
            index = ipr.link_lookup(ifname=host_if) if host_if else []
            if index:
                try:
                    ipr.link('del', index=index[0])
                except NetlinkError as e:
                    if e.code != 19:   # ENODEV: already gone
                        raise
        if namespace:
            self._plugged.pop(namespace, None)
            if namespace in _netns_names():
                netns.remove(namespace)
            self._unmark(namespace)
