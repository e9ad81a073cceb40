"""This host's DHCP ports on each served Neutron network (device_owner
network:dhcp, binding:host_id this host, device_id derived from host and
network), as Neutron's own agent makes one, so that the IPAM reserves the
servers' addresses; released when the network leaves the list. A part of
NeutronSource (sources/neutron.py).

A network past [dnsmasq] shard_size hosts is served by several dnsmasq
("shards", see vdsm_dhcp/shards.py), each with a DHCP port of its own:
shard 0 keeps the device_id a single DHCP port always had (a network that
grows keeps its port), shard k >= 1 has that device_id + '-shard<k>'. The
planner takes every DHCP port bound to this host as a shard; here we only
keep their number at shards_needed(), as the planner computes it."""
import logging
import re
import uuid

from vdsm_dhcp import logs
from vdsm_dhcp.model import DHCP_OWNER
from vdsm_dhcp.shards import shards_needed
from vdsm_dhcp.sources.neutron_client import NeutronError, shorten

log = logging.getLogger('vdsm_dhcp.neutron')


# a stable namespace for the DHCP ports' device_id
DEVICE_NS = uuid.UUID('6c1b9f0e-54d3-4d8a-9a51-2c6d0f0f2b7e')

SHARD_SUFFIX = re.compile(r'-shard([1-9][0-9]{0,5})')


def dhcp_device_id(host, network_id, shard=0):
    base = 'dhcp%s-%s' % (uuid.uuid5(DEVICE_NS, host), network_id)
    return base if not shard else '%s-shard%d' % (base, shard)


def dhcp_shard(host, port):
    """Which of this host's shards `port` is (0, 1, ...) by its device_id,
    or None when it is not one of this host's DHCP ports."""
    if port.get('device_owner') != DHCP_OWNER:
        return None
    device_id = port.get('device_id')
    base = dhcp_device_id(host, port['network_id'])
    if not isinstance(device_id, str) or not device_id.startswith(base):
        return None
    if device_id == base:
        return 0
    match = SHARD_SUFFIX.fullmatch(device_id, len(base))
    return int(match.group(1)) if match else None


def _fixed_ips(port):
    fixed = port.get('fixed_ips')
    return [f for f in fixed if isinstance(f, dict)] \
        if isinstance(fixed, list) else []


def _age(port):
    created = port.get('created_at')
    return (created if isinstance(created, str) else '', port['id'])


class DhcpPorts:
    """The DHCP-port half of NeutronSource (uses its client, cache, conf)."""

    # bulk create (POST {"ports": [...]}) until Neutron says it has none
    _bulk_create = True

    def release(self, network_id):
        """The network is no longer served here: give back our DHCP ports.
        It leaves `wanted` at once, under the sync lock: a poll round that
        ran on the old set would otherwise make the ports again."""
        with self._syncing:
            self.wanted = self.wanted - {network_id}
            self._release(network_id)

    def _release(self, network_id):
        port_ids = list(self.owned.pop(network_id, ()))
        with self.cache.lock:
            port_ids += [p['id'] for p in self.cache.ports.values()
                         if p['network_id'] == network_id and self._ours(p)
                         and p['id'] not in port_ids]
            self.cache.drop_network(network_id)
        self.synced.discard(network_id)
        self.fetch_errors.pop(network_id, None)
        self.port_errors.pop(network_id, None)
        if not self.conf.neutron.manage_dhcp_port:
            return
        for port_id in port_ids:
            try:
                self.client.delete_port(port_id)
                log.info('network %s: released DHCP port %s', network_id,
                         port_id, extra=logs.network(network_id))
            except NeutronError as e:
                log.error('network %s: cannot release DHCP port %s: %s',
                          network_id, port_id, e,
                          extra=logs.network(network_id))

    def _release_strays(self, keep):
        """Our DHCP ports (every shard's) on networks dropped while no
        agent ran (once)."""
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
        return dhcp_shard(self.host, port) is not None

    def _ensure_dhcp_ports(self, network_ids):
        """_ensure_dhcp_port on each of these networks, from one pass over
        the cache (not one per network: 200 networks x 10,000 ports every
        poll round). Returns whether Neutron was changed."""
        if not network_ids or not self.conf.neutron.manage_dhcp_port:
            return False
        # network id -> [hosts, [(shard, age, our DHCP port)], DHCP subnets]
        view = {i: [0, [], []] for i in network_ids}
        with self.cache.lock:
            for p in self.cache.ports.values():
                entry = view.get(p['network_id'])
                if entry is None:
                    continue
                if p.get('device_owner') != DHCP_OWNER:
                    entry[0] += 1
                    continue
                shard = dhcp_shard(self.host, p)
                if shard is not None:
                    entry[1].append((shard, _age(p), p))
            for s in self.cache.subnets.values():
                entry = view.get(s['network_id'])
                if entry is not None and s.get('enable_dhcp', True) \
                        is not False:
                    entry[2].append(s['id'])
            nets = {i: self.cache.networks.get(i) for i in network_ids}
        changed = False
        for network_id in sorted(network_ids):
            hosts, ours, subnets = view[network_id]
            changed |= self._ensure_dhcp_port_logged(
                network_id, nets[network_id], sorted(subnets), hosts, ours)
        return changed

    def _ensure_dhcp_port_logged(self, network_id, *args):
        """_ensure_dhcp_port; a failure that is this network's alone is
        recorded for it (the network is then not served, with the reason,
        or served by the shards it has, with the reason among its
        problems)."""
        try:
            changed = self._ensure_dhcp_port(*args)
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

    def _ensure_dhcp_port(self, net, dhcp_subnets, hosts, ours):
        """This host's DHCP ports (ours: [(shard, age, port)]) are as many
        as shards_needed() says for the network's hosts (its ports but
        DHCP ones, as the planner counts them), each with an address on
        every DHCP-enabled subnet. Returns whether Neutron was changed."""
        if net is None or not dhcp_subnets:
            return False
        network_id = net['id']
        ours = sorted(ours, key=lambda t: t[:2])
        owned = self.owned[network_id] = [p['id'] for _, _, p in ours]
        need = shards_needed(hosts, self.conf.dnsmasq.shard_size,
                             available=1 << 16, previous=len(ours))
        changed = False
        # shrink: the highest shards go first (a duplicate before its
        # elder); what serves on keeps its port
        while len(ours) > need:
            shard, _, port = ours.pop()
            self.client.delete_port(port['id'])
            changed = True
            owned.remove(port['id'])
            with self.cache.lock:
                self.cache.ports.pop(port['id'], None)
            log.info('network %s: released DHCP port %s (shard %d: %d '
                     'hosts need %d)', network_id, port['id'], shard, hosts,
                     need, extra=logs.network(network_id))
        # grow: the lowest free shard numbers
        taken = {shard for shard, _, _ in ours}
        free = (k for k in range(need + len(taken)) if k not in taken)
        missing = [next(free) for _ in range(need - len(ours))]
        if missing:
            self._create_dhcp_ports(net, dhcp_subnets, missing, hosts)
            changed = True
        for _, _, port in ours:
            changed |= self._complete_dhcp_port(network_id, port,
                                                dhcp_subnets)
        return changed

    def _dhcp_port_body(self, net, dhcp_subnets, shard):
        network_id = net['id']
        body = {'network_id': network_id, 'device_owner': DHCP_OWNER,
                'device_id': dhcp_device_id(self.host, network_id, shard),
                'binding:host_id': self.host,
                'name': 'vdsm-dhcp-' + self.host + (
                    '-shard%d' % shard if shard else ''),
                'fixed_ips': [{'subnet_id': s} for s in dhcp_subnets]}
        if isinstance(net.get('project_id'), str) and net['project_id']:
            body['project_id'] = net['project_id']
        return body

    def _create_dhcp_ports(self, net, dhcp_subnets, shards, hosts):
        """Create these shards' ports: in one request when there are
        several (16 ports for a big network in one round trip), one by one
        when Neutron refuses the bulk request. Each one made is cached and
        owned at once, also when a later one fails."""
        network_id = net['id']
        bodies = [self._dhcp_port_body(net, dhcp_subnets, k) for k in shards]
        made = None
        if len(bodies) > 1 and self._bulk_create:
            try:
                made = self.client.create_ports(bodies)
            except NeutronError as e:
                if not e.answered:
                    raise
                # one at a time now: what can be made is made, and the
                # first that cannot says why (bulk is all or nothing)
                if e.status == 400:     # allow_bulk = false, or our body
                    self._bulk_create = False
                    log.warning('Neutron refused a bulk create of DHCP '
                                'ports (%s): they are made one at a time',
                                e)
        if made is None:
            made = []
            try:
                for body in bodies:
                    made.append(self.client.create_port(body))
            finally:
                self._keep_made(network_id, made, hosts)
        else:
            self._keep_made(network_id, made, hosts)

    def _keep_made(self, network_id, made, hosts):
        with self.cache.lock:
            for port in made:
                self.cache.put('ports', port, authoritative=True)
        self.owned.setdefault(network_id, []).extend(p['id'] for p in made)
        for port in made:
            shard = dhcp_shard(self.host, port)
            log.info('network %s: created DHCP port %s (%s)%s', network_id,
                     port['id'], ', '.join(shorten(f.get('ip_address'))
                                           for f in _fixed_ips(port)),
                     ' for shard %s of a network of %d hosts' % (
                         shard, hosts) if shard != 0 else '',
                     extra=logs.network(network_id))

    def _complete_dhcp_port(self, network_id, port, dhcp_subnets):
        """An address on every DHCP-enabled subnet for an existing port
        (a subnet added since). Returns whether Neutron was changed."""
        fixed = _fixed_ips(port)
        have = {f.get('subnet_id') for f in fixed}
        if set(dhcp_subnets) <= have:
            return False
        fixed += [{'subnet_id': s} for s in dhcp_subnets if s not in have]
        port = self.client.update_port(port['id'], {'fixed_ips': fixed})
        log.info('network %s: DHCP port %s now on subnets %s',
                 network_id, port['id'], ', '.join(dhcp_subnets),
                 extra=logs.network(network_id))
        with self.cache.lock:
            self.cache.put('ports', port, authoritative=True)
        return True
