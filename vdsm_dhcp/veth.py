"""The veth interface driver, with pyroute2 only (no `ip` subprocesses).

plug() is idempotent and touches only what differs; unplug() removes the
namespace and both veth ends.
"""
import logging
import os

from pyroute2 import IPRoute, NetNS, netns
from pyroute2.netlink.exceptions import NetlinkError

from vdsm_dhcp import bridges
from vdsm_dhcp.desired import namespace_name
from vdsm_dhcp.interface import (HOST_PREFIX, NS_PREFIX, PlugError,
                                 device_names)

log = logging.getLogger(__name__)

IFA_F_NODAD = 0x02


def _netns_names():
    try:
        return set(netns.listnetns())
    except FileNotFoundError:
        return set()


class VethDriver:
    def __init__(self):
        self._plugged = {}   # namespace -> (InterfacePlan, mtu) last plugged

    def ours(self):
        """(namespaces, host devices) that this driver may have created."""
        with IPRoute() as ipr:
            links = {link.get_attr('IFLA_IFNAME') for link in ipr.get_links()}
        return ({n for n in _netns_names() if n.startswith(NS_PREFIX)},
                {n for n in links if n and n.startswith(HOST_PREFIX)})

    def plug(self, quantum_id, iface):
        """Make the namespace look like iface (an InterfacePlan). Returns
        whether the interface's addresses or MAC had to change (a dnsmasq
        bound to the old ones must restart); an adopted namespace that is
        already right returns False."""
        mtu = bridges.mtu(iface.bridge)
        if (self._plugged.get(iface.namespace) == (iface, mtu)
                and os.path.exists('/run/netns/' + iface.namespace)):
            return False
        host_if, ns_if = device_names(quantum_id)
        try:
            changed = self._plug(iface, host_if, ns_if, mtu)
        except NetlinkError as e:
            raise PlugError('plugging %s into bridge %s: %s'
                            % (iface.namespace, iface.bridge, e)) from None
        self._plugged[iface.namespace] = (iface, mtu)
        return changed

    def _plug(self, iface, host_if, ns_if, mtu):
        if iface.namespace not in _netns_names():
            netns.create(iface.namespace)
        with IPRoute() as ipr:
            bridge = ipr.link_lookup(ifname=iface.bridge)
            if not bridge:
                raise PlugError('bridge %s does not exist' % iface.bridge)
            if not ipr.link_lookup(ifname=host_if):
                with NetNS(iface.namespace) as ns:
                    stale = ns.link_lookup(ifname=ns_if)
                    if stale:   # the host end vanished, e.g. bridge deleted
                        ns.link('del', index=stale[0])
                ipr.link('add', ifname=host_if, kind='veth',
                         peer={'ifname': ns_if,
                               'net_ns_fd': iface.namespace})
            index = ipr.link_lookup(ifname=host_if)[0]
            settings = {'master': bridge[0], 'state': 'up'}
            if mtu:
                settings['mtu'] = mtu
            ipr.link('set', index=index, **settings)
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

    def unplug(self, quantum_id):
        namespace = namespace_name(quantum_id)
        host_if, _ = device_names(quantum_id)
        self._plugged.pop(namespace, None)
        self.remove(namespace, host_if)

    @staticmethod
    def remove(namespace, host_if):
        """Delete the host veth end (its peer goes with it) and the
        namespace; either may be None."""
        with IPRoute() as ipr:
            index = ipr.link_lookup(ifname=host_if) if host_if else []
            if index:
                try:
                    ipr.link('del', index=index[0])
                except NetlinkError as e:
                    if e.code != 19:   # ENODEV: already gone
                        raise
        if namespace in _netns_names():
            netns.remove(namespace)
