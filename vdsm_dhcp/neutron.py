"""The Neutron (Quantum) source: REST sync, notifications, this host's DHCP
ports.

Only the networks in the networks file are fetched (a host serves a handful
out of thousands), with `fields=` for what the agent uses, paginated.
Changes arrive two ways:
  notifications  an oslo.messaging listener on Neutron's `notifications`
                 topic (when `transport_url` is set), applied to the cache
                 at once, stale ones dropped by revision_number;
  a poll         every `poll_interval`: (id, revision_number) of every
                 resource of the served networks; what is new or newer is
                 fetched, what is gone is dropped. It catches whatever a
                 lost notification missed, deletions included.
While Neutron is unreachable the cache keeps serving (dnsmasq answers what
it has), the poll retries with back-off and logs once per state change.

Per served network the agent owns a DHCP port (device_owner network:dhcp,
binding:host_id this host, device_id derived from host and network), as
Neutron's own agent does, so that the IPAM reserves the server's addresses;
it is released when the network is dropped from the list.
"""
import logging
import threading
import time
import uuid

from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import loading as ks_loading
from oslo_config import cfg

from vdsm_dhcp.desired import DHCP_OWNER, Snapshot
from vdsm_dhcp.source import SourceError

log = logging.getLogger(__name__)

GROUP = 'neutron'
NETWORK_FIELDS = ('id', 'name', 'admin_state_up', 'mtu', 'project_id',
                  'revision_number')
SUBNET_FIELDS = ('id', 'network_id', 'cidr', 'ip_version', 'gateway_ip',
                 'enable_dhcp', 'dns_nameservers', 'host_routes',
                 'ipv6_address_mode', 'ipv6_ra_mode', 'revision_number')
PORT_FIELDS = ('id', 'network_id', 'mac_address', 'fixed_ips',
               'device_owner', 'device_id', 'binding:host_id', 'dns_name',
               'created_at', 'revision_number')
PAGE = 500
ID_CHUNK = 80   # ids per GET ...?id=&id= (URL length)
# a stable namespace for the DHCP ports' device_id
DEVICE_NS = uuid.UUID('6c1b9f0e-54d3-4d8a-9a51-2c6d0f0f2b7e')

neutron_opts = [
    cfg.FloatOpt('poll_interval', default=2.0, min=0.1,
                 help='Seconds between polls of (id, revision) of the '
                      'served networks\' resources.'),
    cfg.FloatOpt('retry_max', default=30.0, min=0.5,
                 help='Longest back-off between attempts while Neutron '
                      'is unreachable.'),
    cfg.StrOpt('transport_url', secret=True,
               help='oslo.messaging URL of Neutron\'s notifications '
                    '(rabbit://...); unset: poll only.'),
    cfg.StrOpt('notification_topic', default='notifications',
               help='The topic Neutron sends its notifications to.'),
    cfg.StrOpt('notification_exchange', default='neutron',
               help='The exchange Neutron publishes on (its control_exchange).'),
    cfg.BoolOpt('manage_dhcp_port', default=True,
                help='Create this host\'s DHCP port on each served network '
                     'and release it when the network is dropped.'),
]


def list_opts(sample=False):
    """Ours, the session's, the adapter's, and auth_type. The sample also
    shows the password plugin's (the usual [neutron] section); at run time
    keystoneauth1 registers the options of whichever plugin auth_type names.
    """
    opts = (neutron_opts + ks_loading.get_session_conf_options()
            + ks_loading.get_auth_common_conf_options()
            + ks_loading.get_adapter_conf_options())
    if sample:
        opts += ks_loading.get_auth_plugin_conf_options('password')
    return opts


class NeutronError(Exception):
    pass


def dhcp_device_id(host, network_id):
    return 'dhcp%s-%s' % (uuid.uuid5(DEVICE_NS, host), network_id)


class NeutronClient:
    """The few Neutron API calls the agent needs, over a keystoneauth1
    adapter (password, token, or `auth_type = none` with `endpoint`)."""

    def __init__(self, conf):
        # keystoneauth1 logs request bodies and tokens at debug level
        logging.getLogger('keystoneauth').setLevel(logging.WARNING)
        auth = ks_loading.load_auth_from_conf_options(conf, GROUP)
        # a hung Neutron must not hang the agent: the session's timeout
        # defaults to none at all
        session = ks_loading.load_session_from_conf_options(
            conf, GROUP, auth=auth, timeout=conf.neutron.timeout or 10)
        self.adapter = ks_loading.load_adapter_from_conf_options(
            conf, GROUP, session=session, auth=auth,
            service_type=conf.neutron.service_type or 'network')
        if self.adapter.service_type is None:
            self.adapter.service_type = 'network'

    def endpoint(self):
        try:
            return self.adapter.get_endpoint()
        except ks_exc.ClientException:
            return None

    def _call(self, method, path, **kw):
        try:
            resp = self.adapter.request(path, method, raise_exc=False, **kw)
        except ks_exc.ClientException as e:
            raise NeutronError('%s %s: %s' % (method, path.split('?')[0],
                                              type(e).__name__)) from None
        if resp.status_code >= 400:
            raise NeutronError('%s %s: HTTP %d %s' % (
                method, path.split('?')[0], resp.status_code,
                resp.text[:200]))
        return resp.json() if resp.content else None

    def list(self, resource, filters, fields):
        """Every item (all pages) of GET /v2.0/<resource>."""
        params = [(k, v) for k, values in filters.items() for v in values]
        params += [('fields', f) for f in fields]
        params.append(('limit', PAGE))
        items, marker = [], None
        while True:
            page = params + ([('marker', marker)] if marker else [])
            body = self._call('GET', '/v2.0/' + resource, params=page)
            batch = body.get(resource, [])
            items.extend(batch)
            if len(batch) < PAGE or not any(
                    link.get('rel') == 'next'
                    for link in body.get(resource + '_links', [])):
                return items
            marker = batch[-1]['id']

    def list_by_ids(self, resource, ids, fields):
        items = []
        ids = sorted(ids)
        for i in range(0, len(ids), ID_CHUNK):
            items += self.list(resource, {'id': ids[i:i + ID_CHUNK]},
                               fields)
        return items

    def create_port(self, body):
        return self._call('POST', '/v2.0/ports', json={'port': body})['port']

    def update_port(self, port_id, body):
        return self._call('PUT', '/v2.0/ports/' + port_id,
                          json={'port': body})['port']

    def delete_port(self, port_id):
        try:
            self._call('DELETE', '/v2.0/ports/' + port_id)
        except NeutronError as e:
            if 'HTTP 404' not in str(e):
                raise


class Cache:
    """id -> item per resource, for the served networks; revision-aware."""

    def __init__(self):
        self.networks, self.subnets, self.ports = {}, {}, {}
        self.lock = threading.Lock()

    def table(self, resource):
        return getattr(self, resource)

    def put(self, resource, item):
        """Store item unless what we hold is newer; True if it changed."""
        table = self.table(resource)
        old = table.get(item['id'])
        if old is not None and (old == item or old.get(
                'revision_number', -1) > item.get('revision_number', -1)):
            return False
        table[item['id']] = item
        return True

    def drop_network(self, network_id):
        self.networks.pop(network_id, None)
        for table in (self.subnets, self.ports):
            for key in [k for k, v in table.items()
                        if v.get('network_id') == network_id]:
                del table[key]

    def snapshot(self, ids):
        return Snapshot.from_lists(
            [n for k, n in self.networks.items() if k in ids],
            [s for s in self.subnets.values() if s['network_id'] in ids],
            [p for p in self.ports.values() if p['network_id'] in ids])


class NeutronSource:
    def __init__(self, conf, client=None):
        self.conf = conf
        self.host = conf.host
        self.client = client or NeutronClient(conf)
        self.cache = Cache()
        self.synced = set()        # network ids fully fetched at least once
        self.wanted = set()        # network ids the agent asked for
        self.owned = {}            # network id -> our DHCP port id
        self._on_change = lambda: None
        self._stopped = threading.Event()
        self._poke = threading.Event()
        # one sync at a time (the poll thread and the agent's snapshot):
        # two concurrent ones would each create this host's DHCP port
        self._syncing = threading.RLock()
        self.error = None
        self.error_since = None
        self.last_sync = None
        self.notifications = 'disabled'
        self._listener = None

    # -- the source interface -------------------------------------------------
    def start(self, on_change):
        self._on_change = on_change
        threading.Thread(target=self._poll_loop, name='neutron-poll',
                         daemon=True).start()
        if self.conf.neutron.transport_url:
            self._start_listener()

    def stop(self):
        self._stopped.set()
        self._poke.set()
        if self._listener is not None:
            try:
                self._listener.stop()
                self._listener.wait()
            except Exception:   # a broker gone away must not block exit
                pass

    def snapshot(self, network_ids):
        ids = set(network_ids)
        self.wanted = ids
        if ids - self.synced:   # else the cache is all we need: no waiting
            with self._syncing:
                missing = ids - self.synced
                try:
                    if missing and self.last_sync is None:
                        self._release_strays(ids)
                    if missing:
                        self._full_sync(missing)
                except NeutronError as e:
                    self._failed(e)
                    raise SourceError('Neutron unreachable: %s' % e) \
                        from None
        with self.cache.lock:
            return self.cache.snapshot(ids & self.synced)

    def status(self):
        return {'type': 'neutron', 'url': self.client.endpoint(),
                'reachable': self.error is None, 'error': self.error,
                'unreachable_since': self.error_since,
                'loaded_at': self.last_sync,
                'notifications': self.notifications,
                'networks_synced': len(self.synced)}

    def release(self, network_id):
        """The network is no longer served here: give back our DHCP port."""
        with self._syncing:
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
        if port_id and self.conf.neutron.manage_dhcp_port:
            try:
                self.client.delete_port(port_id)
                log.info('network %s: released DHCP port %s', network_id,
                         port_id)
            except NeutronError as e:
                log.error('network %s: cannot release DHCP port %s: %s',
                          network_id, port_id, e)

    def _release_strays(self, keep):
        """Our DHCP ports on networks dropped while no agent ran."""
        if not self.conf.neutron.manage_dhcp_port:
            return
        ports = self.client.list('ports', {'device_owner': [DHCP_OWNER],
                                           'binding:host_id': [self.host]},
                                 ('id', 'network_id', 'device_id',
                                  'device_owner'))
        for port in ports:
            if port['network_id'] not in keep and self._ours(port):
                self.client.delete_port(port['id'])
                log.info('network %s: released stray DHCP port %s',
                         port['network_id'], port['id'])

    # -- sync -----------------------------------------------------------------
    def _ours(self, port):
        return port.get('device_owner') == DHCP_OWNER and port.get(
            'device_id') == dhcp_device_id(self.host, port['network_id'])

    def _full_sync(self, ids):
        ids = sorted(ids)
        networks = self.client.list('networks', {'id': ids}, NETWORK_FIELDS)
        subnets = self.client.list('subnets', {'network_id': ids},
                                   SUBNET_FIELDS)
        ports = self.client.list('ports', {'network_id': ids}, PORT_FIELDS)
        with self.cache.lock:
            for network_id in ids:
                self.cache.drop_network(network_id)
            for resource, items in (('networks', networks),
                                    ('subnets', subnets), ('ports', ports)):
                for item in items:
                    self.cache.put(resource, item)
        for network_id in ids:
            self._ensure_dhcp_port(network_id)
        self.synced.update(ids)
        self._succeeded()

    def _poll(self):
        """One incremental round: compare (id, revision) lists."""
        ids = sorted(self.synced & self.wanted)
        if not ids:
            return False
        changed = False
        for resource, filt, fields in (
                ('networks', 'id', NETWORK_FIELDS),
                ('subnets', 'network_id', SUBNET_FIELDS),
                ('ports', 'network_id', PORT_FIELDS)):
            current = {i['id']: i.get('revision_number') for i in
                       self.client.list(resource, {filt: ids},
                                        ('id', 'revision_number'))}
            with self.cache.lock:
                table = self.cache.table(resource)
                stale = [k for k in table if k not in current and (
                    resource == 'networks' or table[k]['network_id'] in ids)]
                fetch = [k for k, rev in current.items()
                         if k not in table or
                         table[k].get('revision_number') != rev]
                for key in stale:
                    del table[key]
            items = self.client.list_by_ids(resource, fetch, fields) \
                if fetch else []
            with self.cache.lock:
                for item in items:
                    changed |= self.cache.put(resource, item)
            changed |= bool(stale)
        for network_id in ids:
            changed |= self._ensure_dhcp_port(network_id)
        self._succeeded()
        return changed

    def _ensure_dhcp_port(self, network_id):
        """This host's DHCP port exists, with an address on every
        DHCP-enabled subnet. Returns whether Neutron was changed."""
        if not self.conf.neutron.manage_dhcp_port:
            return False
        with self.cache.lock:
            net = self.cache.networks.get(network_id)
            dhcp_subnets = sorted(s['id'] for s in self.cache.subnets.values()
                                  if s['network_id'] == network_id
                                  and s.get('enable_dhcp', True))
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
            if net.get('project_id'):
                body['project_id'] = net['project_id']
            port = self.client.create_port(body)
            log.info('network %s: created DHCP port %s (%s)', network_id,
                     port['id'], ', '.join(f['ip_address']
                                           for f in port['fixed_ips']))
        else:
            have = {f['subnet_id'] for f in port.get('fixed_ips', [])}
            if set(dhcp_subnets) <= have:
                self.owned[network_id] = port['id']
                return False
            fixed = list(port['fixed_ips']) + [
                {'subnet_id': s} for s in dhcp_subnets if s not in have]
            port = self.client.update_port(port['id'], {'fixed_ips': fixed})
            log.info('network %s: DHCP port %s now on subnets %s',
                     network_id, port['id'], ', '.join(dhcp_subnets))
        with self.cache.lock:
            self.cache.put('ports', port)
        self.owned[network_id] = port['id']
        return True

    def _poll_loop(self):
        delay = self.conf.neutron.poll_interval
        while not self._stopped.is_set():
            self._poke.wait(delay)
            self._poke.clear()
            if self._stopped.is_set():
                return
            try:
                with self._syncing:
                    missing = self.wanted - self.synced
                    if missing:
                        self._full_sync(missing)
                    changed = bool(missing) or self._poll()
                delay = self.conf.neutron.poll_interval
            except NeutronError as e:
                self._failed(e)
                delay = min(self.conf.neutron.retry_max,
                            max(delay * 2, self.conf.neutron.poll_interval))
                continue
            if changed:
                self._on_change()

    def _failed(self, error):
        if self.error is None:
            log.error('Neutron unreachable: %s (dnsmasq keeps serving what '
                      'it has; retrying)', error)
            self.error_since = time.time()
        self.error = str(error)

    def _succeeded(self):
        if self.error is not None:
            log.info('Neutron reachable again after %.0fs',
                     time.time() - self.error_since)
            # what changed meanwhile is fetched by the next poll
        self.error = self.error_since = None
        self.last_sync = time.time()

    # -- notifications --------------------------------------------------------
    def _start_listener(self):
        import oslo_messaging
        transport = oslo_messaging.get_notification_transport(
            self.conf, url=self.conf.neutron.transport_url)
        targets = [oslo_messaging.Target(
            exchange=self.conf.neutron.notification_exchange,
            topic=self.conf.neutron.notification_topic)]
        # a pool of our own: every host gets every notification, rather than
        # competing with the other agents (and Neutron's) for them
        self._listener = oslo_messaging.get_notification_listener(
            transport, targets, [_Endpoint(self)], executor='threading',
            pool='vdsm-dhcp-' + self.host, allow_requeue=False)
        self._listener.start()
        self.notifications = 'listening'

    def notified(self, event_type, payload):
        resource, _, action = event_type.partition('.')
        if resource not in ('network', 'subnet', 'port') or \
                not action.endswith('.end'):
            return
        table = resource + 's'
        if action == 'delete.end':
            item_id = payload.get(resource + '_id') or (
                payload.get(resource) or {}).get('id')
            with self.cache.lock:
                item = self.cache.table(table).get(item_id)
                if item is None:
                    return
                if resource == 'network':
                    self.cache.drop_network(item_id)
                else:
                    del self.cache.table(table)[item_id]
        else:
            item = payload.get(resource)
            if not isinstance(item, dict):
                return
            network_id = item['id'] if resource == 'network' else \
                item.get('network_id')
            if network_id not in self.synced:
                return      # not a network served here
            with self.cache.lock:
                if not self.cache.put(table, item):
                    return  # stale or same: dropped by revision_number
        log.debug('notification %s applied', event_type)
        self._on_change()
        if resource == 'subnet':
            self._poke.set()   # a new subnet may need our DHCP port on it


class _Endpoint:
    def __init__(self, source):
        self.source = source

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        try:
            self.source.notified(event_type, payload)
        except Exception:
            log.exception('notification %s not applied', event_type)
