"""This host's DHCP port on each served Neutron network (device_owner
network:dhcp, binding:host_id this host, device_id derived from host and
network), as Neutron's own agent makes one, so that the IPAM reserves the
server's addresses; released when the network leaves the list. A part of
NeutronSource (sources/neutron.py)."""
import logging
import uuid

from vdsm_dhcp import logs
from vdsm_dhcp.model import DHCP_OWNER
from vdsm_dhcp.sources.neutron_client import NeutronError, shorten

log = logging.getLogger('vdsm_dhcp.neutron')


# a stable namespace for the DHCP ports' device_id
DEVICE_NS = uuid.UUID('6c1b9f0e-54d3-4d8a-9a51-2c6d0f0f2b7e')


def dhcp_device_id(host, network_id):
    return 'dhcp%s-%s' % (uuid.uuid5(DEVICE_NS, host), network_id)


def _fixed_ips(port):
    fixed = port.get('fixed_ips')
    return [f for f in fixed if isinstance(f, dict)] \
        if isinstance(fixed, list) else []


class DhcpPorts:
    """The DHCP-port half of NeutronSource (uses its client, cache, conf)."""

    def release(self, network_id):
        """The network is no longer served here: give back our DHCP port.
        It leaves `wanted` at once, under the sync lock: a poll round that
        ran on the old set would otherwise make the port again."""
        with self._syncing:
            self.wanted = self.wanted - {network_id}
            self._release(network_id)

    def _release(self, network_id):
        port_id = self.owned.pop(network_id, None)
        with self.cache.lock:
            if port_id is None:
                port_id = next((p['id'] for p in self.cache.ports.values()
                                if p['network_id'] == network_id
                                and self._ours(p)), None)
            self.cache.drop_network(network_id)
        self.synced.discard(network_id)
        self.fetch_errors.pop(network_id, None)
        self.port_errors.pop(network_id, None)
        if port_id and self.conf.neutron.manage_dhcp_port:
            try:
                self.client.delete_port(port_id)
                log.info('network %s: released DHCP port %s', network_id,
                         port_id, extra=logs.network(network_id))
            except NeutronError as e:
                log.error('network %s: cannot release DHCP port %s: %s',
                          network_id, port_id, e,
                          extra=logs.network(network_id))

    def _release_strays(self, keep):
        """Our DHCP ports on networks dropped while no agent ran (once)."""
        if self._strays_released or not self.conf.neutron.manage_dhcp_port:
            return
        try:
            ports = self.client.list(
                'ports', {'device_owner': [DHCP_OWNER],
                          'binding:host_id': [self.host]},
                ('id', 'network_id', 'device_id', 'device_owner'))
            for port in ports:
                if port['network_id'] not in keep and self._ours(port):
                    self.client.delete_port(port['id'])
                    log.info('network %s: released stray DHCP port %s',
                             port['network_id'], port['id'],
                             extra=logs.network(port['network_id']))
        except NeutronError as e:
            if not e.answered:
                raise
            # a leftover port costs an address, not service: go on
            log.warning('stray DHCP ports not released: %s', e)
        self._strays_released = True

    # -- sync -----------------------------------------------------------------
    def _ours(self, port):
        return port.get('device_owner') == DHCP_OWNER and port.get(
            'device_id') == dhcp_device_id(self.host, port['network_id'])

    def _ensure_dhcp_port_logged(self, network_id):
        """_ensure_dhcp_port; a failure that is this network's alone is
        recorded for it (the network is then not served, with the reason)."""
        try:
            changed = self._ensure_dhcp_port(network_id)
        except NeutronError as e:
            if not e.answered:
                raise
            reason = 'cannot make its DHCP port: %s' % e
            if self.port_errors.get(network_id) != reason:
                log.error('network %s: %s', network_id, reason,
                          extra=logs.network(network_id))
            self.port_errors[network_id] = reason
            return False
        if self.port_errors.pop(network_id, None) is not None:
            log.info('network %s: DHCP port in place again', network_id,
                     extra=logs.network(network_id))
        return changed

    def _ensure_dhcp_port(self, network_id):
        """This host's DHCP port exists, with an address on every
        DHCP-enabled subnet. Returns whether Neutron was changed."""
        if not self.conf.neutron.manage_dhcp_port:
            return False
        with self.cache.lock:
            net = self.cache.networks.get(network_id)
            dhcp_subnets = sorted(
                s['id'] for s in self.cache.subnets.values()
                if s['network_id'] == network_id
                and s.get('enable_dhcp', True) is not False)
            port = next((p for p in self.cache.ports.values()
                         if p['network_id'] == network_id and self._ours(p)),
                        None)
        if net is None or not dhcp_subnets:
            return False
        if port is None:
            body = {'network_id': network_id, 'device_owner': DHCP_OWNER,
                    'device_id': dhcp_device_id(self.host, network_id),
                    'binding:host_id': self.host,
                    'name': 'vdsm-dhcp-' + self.host,
                    'fixed_ips': [{'subnet_id': s} for s in dhcp_subnets]}
            if isinstance(net.get('project_id'), str) and net['project_id']:
                body['project_id'] = net['project_id']
            port = self.client.create_port(body)
            log.info('network %s: created DHCP port %s (%s)', network_id,
                     port['id'], ', '.join(shorten(f.get('ip_address'))
                                           for f in _fixed_ips(port)),
                     extra=logs.network(network_id))
        else:
            fixed = _fixed_ips(port)
            have = {f.get('subnet_id') for f in fixed}
            if set(dhcp_subnets) <= have:
                self.owned[network_id] = port['id']
                return False
            fixed += [{'subnet_id': s} for s in dhcp_subnets
                      if s not in have]
            port = self.client.update_port(port['id'], {'fixed_ips': fixed})
            log.info('network %s: DHCP port %s now on subnets %s',
                     network_id, port['id'], ', '.join(dhcp_subnets),
                     extra=logs.network(network_id))
        with self.cache.lock:
            self.cache.put('ports', port, authoritative=True)
        self.owned[network_id] = port['id']
        return True
