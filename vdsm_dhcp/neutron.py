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

Every reply passes one boundary (NeutronClient._call): JSON, a dict holding
the expected resource, every item a dict with string ids; anything else is
a NeutronError carrying the HTTP status. A batch of networks that Neutron
answers with an error is fetched again one network at a time, so that one
network Neutron cannot give us is reported (not served, with the reason)
while the others are served. What a full fetch or a poll returns is
authoritative (a revision_number going backwards after a database restore
is taken as is); only notifications are dropped as stale by revision.

Per served network the agent owns a DHCP port (device_owner network:dhcp,
binding:host_id this host, device_id derived from host and network), as
Neutron's own agent does, so that the IPAM reserves the server's addresses;
it is released when the network is dropped from the list.
"""
import json
import logging
import threading
import time
import uuid

from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import loading as ks_loading
from oslo_config import cfg

from vdsm_dhcp import logs
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
               help='The exchange Neutron publishes on (its '
                    'control_exchange).'),
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


class NeutronError(SourceError):
    """Neutron could not be used. `status` is the HTTP status of the reply
    when there was one (also a 200 whose body was unusable), None when no
    reply came at all (refused, timed out, no endpoint)."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status

    @property
    def answered(self):
        return self.status is not None


# resource -> the string fields every item of it must carry: the cache is
# indexed by them
ITEM_KEYS = {'networks': ('id',), 'subnets': ('id', 'network_id'),
             'ports': ('id', 'network_id')}


def check_item(resource, item):
    """Why `item` is not a usable <resource> item, or None."""
    if not isinstance(item, dict):
        return 'an item is a %s, not an object' % type(item).__name__
    for key in ITEM_KEYS[resource]:
        if not isinstance(item.get(key), str):
            return 'an item has %s %s' % (key, _short(item.get(key)))
    return None


def _short(value, limit=80):
    """A value from outside, safe for one log line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + '...'


def _revision(item):
    rev = item.get('revision_number')
    return rev if isinstance(rev, int) and not isinstance(rev, bool) else -1


def dhcp_device_id(host, network_id):
    return 'dhcp%s-%s' % (uuid.uuid5(DEVICE_NS, host), network_id)


def _fixed_ips(port):
    fixed = port.get('fixed_ips')
    return [f for f in fixed if isinstance(f, dict)] \
        if isinstance(fixed, list) else []


class NeutronClient:
    """The few Neutron API calls the agent needs, over a keystoneauth1
    adapter (password, token, or `auth_type = none` with `endpoint`)."""

    def __init__(self, conf):
        # keystoneauth1 logs request bodies and tokens at debug level
        logging.getLogger('keystoneauth').setLevel(logging.WARNING)
        auth = ks_loading.load_auth_from_conf_options(conf, GROUP)
        # a hung Neutron must not hang the agent: the session's timeout
        # ([neutron] timeout) defaults to none at all
        session = ks_loading.load_session_from_conf_options(
            conf, GROUP, auth=auth, timeout=conf.neutron.timeout or 10)
        self.adapter = ks_loading.load_adapter_from_conf_options(
            conf, GROUP, session=session, auth=auth,
            service_type=conf.neutron.service_type or 'network')
        if self.adapter.service_type is None:
            self.adapter.service_type = 'network'
        self._endpoint = None

    def endpoint(self):
        """The endpoint last used; never a request of its own (status must
        answer at once, even while Keystone hangs)."""
        return self._endpoint

    def _call(self, method, path, expect=None, **kw):
        """One request; the body's `expect` (a list of items for a plural
        resource name, one item for a singular one), validated. Any failure
        is a NeutronError."""
        where = '%s %s' % (method, path.split('?')[0])
        try:
            resp = self.adapter.request(path, method, raise_exc=False, **kw)
        except ks_exc.ClientException as e:
            # Keystone's own refusals carry a status; a transport failure not
            raise NeutronError('%s: %s' % (where, type(e).__name__),
                               getattr(e, 'http_status', None)) from None
        status = resp.status_code
        if status >= 400:
            raise NeutronError('%s: HTTP %d %s' % (
                where, status, _short(resp.text[:200], 200)), status)
        if self._endpoint is None:
            try:
                self._endpoint = self.adapter.get_endpoint()
            except ks_exc.ClientException:
                pass
        if expect is None:
            return None
        try:
            body = json.loads(resp.content)
        except (ValueError, RecursionError) as e:
            raise NeutronError('%s: HTTP %d, the body is not JSON (%s)' % (
                where, status, type(e).__name__), status) from None
        if not isinstance(body, dict) or expect not in body:
            raise NeutronError('%s: HTTP %d, no "%s" in the reply' % (
                where, status, expect), status)
        value = body[expect]
        if expect in ITEM_KEYS:
            if not isinstance(value, list):
                raise NeutronError('%s: HTTP %d, "%s" is not a list' % (
                    where, status, expect), status)
            problems = (check_item(expect, item) for item in value)
        else:
            value = [value]
            problems = (check_item(expect + 's', value[0]),)
        problem = next((p for p in problems if p), None)
        if problem:
            raise NeutronError('%s: HTTP %d, %s' % (where, status, problem),
                               status)
        links = body.get(expect + '_links')
        return value if expect in ITEM_KEYS else value[0], \
            links if isinstance(links, list) else []

    def list(self, resource, filters, fields):
        """Every item (all pages) of GET /v2.0/<resource>."""
        params = [(k, v) for k, values in filters.items() for v in values]
        params += [('fields', f) for f in fields]
        params.append(('limit', PAGE))
        items, marker = [], None
        while True:
            page = params + ([('marker', marker)] if marker else [])
            batch, links = self._call('GET', '/v2.0/' + resource,
                                      expect=resource, params=page)
            items.extend(batch)
            if len(batch) < PAGE or not any(
                    isinstance(link, dict) and link.get('rel') == 'next'
                    for link in links):
                return items
            if batch[-1]['id'] == marker:   # a server paging in circles
                raise NeutronError('GET /v2.0/%s: the next page does not '
                                   'advance' % resource, 200)
            marker = batch[-1]['id']

    def list_by_ids(self, resource, ids, fields):
        items = []
        ids = sorted(ids)
        for i in range(0, len(ids), ID_CHUNK):
            items += self.list(resource, {'id': ids[i:i + ID_CHUNK]},
                               fields)
        return items

    def create_port(self, body):
        return self._call('POST', '/v2.0/ports', expect='port',
                          json={'port': body})[0]

    def update_port(self, port_id, body):
        return self._call('PUT', '/v2.0/ports/' + port_id, expect='port',
                          json={'port': body})[0]

    def delete_port(self, port_id):
        try:
            self._call('DELETE', '/v2.0/ports/' + port_id)
        except NeutronError as e:
            if e.status != 404:     # already gone is what we wanted
                raise


class Cache:
    """id -> item per resource, for the served networks; revision-aware."""

    def __init__(self):
        self.networks, self.subnets, self.ports = {}, {}, {}
        self.lock = threading.Lock()

    def table(self, resource):
        return getattr(self, resource)

    def put(self, resource, item, authoritative=False):
        """Store item; True if it changed. A notification (not
        authoritative) older than what we hold is dropped; what a fetch
        returns is Neutron's current state, even when its revision went
        backwards (a database restored from a backup)."""
        table = self.table(resource)
        old = table.get(item['id'])
        if old is not None and (old == item or not authoritative and
                                _revision(old) > _revision(item)):
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
        # network id -> why Neutron could not give it to us (while it
        # answered for others), and why its DHCP port could not be made
        self.fetch_errors = {}
        self.port_errors = {}
        self._strays_released = False
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
        self.notifications_dropped = 0
        self.notifications_received = 0
        self._listener = None

    # -- the source interface -------------------------------------------------
    def start(self, on_change):
        self._on_change = on_change
        threading.Thread(target=self._poll_loop, name='neutron-poll',
                         daemon=True).start()
        if self.conf.neutron.transport_url:
            # its own thread: oslo.messaging connects (and retries for ever
            # while the broker is down) inside start()
            self.notifications = 'connecting'
            threading.Thread(target=self._listen_loop,
                             name='neutron-listener-start',
                             daemon=True).start()

    def stop(self):
        self._stopped.set()
        self._poke.set()
        listener = self._listener
        if listener is not None:
            def end():
                try:
                    listener.stop()
                    listener.wait()
                except Exception:   # a broker gone away must not block exit
                    pass
            # bounded: stopping can wait on a broker that is gone
            ender = threading.Thread(target=end, daemon=True)
            ender.start()
            ender.join(5)

    def snapshot(self, network_ids):
        ids = set(network_ids)
        self.wanted = ids
        # networks that failed alone are retried by the poll thread
        if ids - self.synced - set(self.fetch_errors):
            with self._syncing:
                missing = ids - self.synced - set(self.fetch_errors)
                try:
                    if missing:
                        self._release_strays(ids)
                        self._sync_round(
                            [(self._fetch, missing)], missing)
                except NeutronError as e:
                    self._failed(e)
                    raise
                except Exception as e:
                    # a bug meeting data we did not foresee: the agent
                    # keeps serving what it has, and says why
                    if self.error is None:
                        log.exception('Neutron sync failed')
                    error = NeutronError('sync failed: %s: %s' % (
                        type(e).__name__, _short(str(e))))
                    self._failed(error)
                    raise error from None
        with self.cache.lock:
            snap = self.cache.snapshot(ids & self.synced)
        # network id -> why Neutron could not give it (fully): a network
        # absent for that reason is not served with it as the reason
        # (snap.errors, read by desired.py); one served from the data it
        # had shows it among its problems
        snap.errors = {k.lower(): 'Neutron: %s' % v for k, v in
                       self.network_errors().items() if k in ids}
        notes = getattr(snap, 'notes', None)
        for network_id, reason in snap.errors.items():
            if network_id in snap.networks and notes is not None:
                notes.setdefault(network_id, []).append(reason)
        return snap

    def network_errors(self):
        errors = dict(self.port_errors)
        errors.update(self.fetch_errors)
        return errors

    def status(self):
        return {'type': 'neutron', 'url': self.client.endpoint(),
                'reachable': self.error is None, 'error': self.error,
                'unreachable_since': self.error_since,
                'loaded_at': self.last_sync,
                'notifications': self.notifications,
                'notifications_received': self.notifications_received,
                'notifications_dropped': self.notifications_dropped,
                'networks_synced': len(self.synced),
                'network_errors': {k: v for k, v in
                                   self.network_errors().items()
                                   if k in self.wanted}}

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

    def _sync_round(self, jobs, ensure_ids):
        """Run jobs [(action, network ids)]; action(ids) -> changed. A batch
        Neutron answers with an error is run again one network at a time:
        the networks that still fail are recorded in fetch_errors and the
        others go on. Raises NeutronError when Neutron did not answer, or
        answered nothing but errors while no other network is fine
        (Neutron itself is failing). Then this host's DHCP port on each of
        ensure_ids. Returns changed."""
        changed, worked, first, failed = False, False, None, {}
        errors_before = self.network_errors()
        for action, ids in jobs:
            if not ids:
                continue
            batches = [sorted(ids)]
            while batches:
                batch = batches.pop()
                try:
                    changed |= action(batch)
                except NeutronError as e:
                    if not e.answered:
                        raise
                    first = first or e
                    if len(batch) == 1:
                        failed[batch[0]] = str(e)
                    else:
                        batches += [[i] for i in batch]
                    continue
                worked = True
                for network_id in batch:
                    self._fetch_ok(network_id)
        others_fine = self.error is None and any(
            i in self.synced and i not in self.fetch_errors
            and i not in failed for i in self.wanted)
        if first is not None and not worked and not others_fine:
            raise first
        for network_id, reason in failed.items():
            if self.fetch_errors.get(network_id) != reason:
                log.error('network %s: Neutron cannot give it: %s (the '
                          'other networks go on)', network_id, reason,
                          extra=logs.network(network_id))
            self.fetch_errors[network_id] = reason
        for network_id in sorted(ensure_ids & self.synced):
            changed |= self._ensure_dhcp_port_logged(network_id)
        if worked:
            self._succeeded()
        # a new reason for a network not served is a change to show
        return changed or self.network_errors() != errors_before

    def _fetch_ok(self, network_id):
        if self.fetch_errors.pop(network_id, None) is not None:
            log.info('network %s: fetched from Neutron again', network_id,
                     extra=logs.network(network_id))

    def _fetch(self, ids):
        """The whole of these networks, replacing what the cache holds."""
        wanted = set(ids)
        networks = self.client.list('networks', {'id': ids}, NETWORK_FIELDS)
        subnets = self.client.list('subnets', {'network_id': ids},
                                   SUBNET_FIELDS)
        ports = self.client.list('ports', {'network_id': ids}, PORT_FIELDS)
        with self.cache.lock:
            for network_id in ids:
                self.cache.drop_network(network_id)
            for resource, items in (('networks', networks),
                                    ('subnets', subnets), ('ports', ports)):
                key = 'id' if resource == 'networks' else 'network_id'
                for item in items:
                    if item[key] in wanted:
                        self.cache.put(resource, item, authoritative=True)
        self.synced.update(ids)
        return True

    def _poll_networks(self, ids):
        """One incremental round over these networks: compare (id,
        revision) with the cache for equality (a revision may go backwards
        after a restore); fetch what differs, drop what is gone."""
        wanted = set(ids)
        changed = False
        for resource, filt, fields in (
                ('networks', 'id', NETWORK_FIELDS),
                ('subnets', 'network_id', SUBNET_FIELDS),
                ('ports', 'network_id', PORT_FIELDS)):
            key = 'id' if resource == 'networks' else 'network_id'
            current = {i['id']: i.get('revision_number') for i in
                       self.client.list(resource, {filt: ids},
                                        ('id', 'revision_number') +
                                        ((key,) if key != 'id' else ()))
                       if i[key] in wanted}
            with self.cache.lock:
                table = self.cache.table(resource)
                stale = [k for k, v in table.items()
                         if v[key] in wanted and k not in current]
                fetch = [k for k, rev in current.items()
                         if k not in table or
                         table[k].get('revision_number') != rev]
                for k in stale:
                    del table[k]
            items = self.client.list_by_ids(resource, fetch, fields) \
                if fetch else []
            with self.cache.lock:
                for item in items:
                    if item[key] in wanted:
                        changed |= self.cache.put(resource, item,
                                                  authoritative=True)
            changed |= bool(stale)
        return changed

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
                     port['id'], ', '.join(_short(f.get('ip_address'))
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

    def _poll_round(self):
        """What the poll thread does each time: fetch the networks never
        fetched, poll the others; the ones that failed alone separately,
        so they cannot fail the batch of the healthy ones."""
        with self._syncing:
            wanted = set(self.wanted)
            failing = set(self.fetch_errors) & wanted
            missing = wanted - self.synced
            polled = wanted & self.synced
            if not wanted:
                return False
            jobs = [(self._fetch, missing - failing),
                    (self._poll_networks, polled - failing)]
            jobs += [(self._fetch, {i}) for i in sorted(missing & failing)]
            jobs += [(self._poll_networks, {i})
                     for i in sorted(polled & failing)]
            return self._sync_round(jobs, wanted)

    def _poll_loop(self):
        """Never ends but with stop(): every failure is logged once per
        change of state, and retried with back-off."""
        delay = self.conf.neutron.poll_interval
        while not self._stopped.is_set():
            self._poke.wait(delay)
            self._poke.clear()
            if self._stopped.is_set():
                return
            try:
                changed = self._poll_round()
                delay = self.conf.neutron.poll_interval
            except Exception as e:
                if not isinstance(e, NeutronError):
                    if self.error is None:
                        log.exception('Neutron poll failed')
                    e = NeutronError('poll failed: %s: %s' % (
                        type(e).__name__, _short(str(e))))
                self._failed(e)
                delay = min(self.conf.neutron.retry_max,
                            max(delay * 2, self.conf.neutron.poll_interval))
                continue
            if changed:
                self._notify_change()

    def _notify_change(self):
        try:
            self._on_change()
        except Exception:
            log.exception('on_change failed')

    def _failed(self, error):
        kind = (getattr(error, 'status', None), type(error).__name__)
        if self.error is None:
            log.error('Neutron unreachable: %s (dnsmasq keeps serving what '
                      'it has; retrying)', error)
            self.error_since = time.time()
        elif kind != self._error_kind:
            log.warning('Neutron still unreachable, now: %s', error)
        self._error_kind = kind
        self.error = str(error)

    def _succeeded(self):
        if self.error is not None:
            log.info('Neutron reachable again after %.0fs',
                     time.time() - self.error_since)
            # what changed meanwhile is fetched by the next poll
        self.error = self.error_since = self._error_kind = None
        self.last_sync = time.time()

    _error_kind = None

    # -- notifications --------------------------------------------------------
    def _listen_loop(self):
        delay = 1.0
        while not self._stopped.is_set():
            try:
                self._start_listener()
                return
            except Exception as e:
                state = 'not listening: %s' % type(e).__name__
                if self.notifications != state:
                    log.error('Neutron notifications: cannot listen: %s '
                              '(the poll goes on; retrying)', _short(str(e)))
                self.notifications = state
            self._stopped.wait(delay)
            delay = min(delay * 2, self.conf.neutron.retry_max)

    def _start_listener(self):
        import oslo_messaging
        transport = oslo_messaging.get_notification_transport(
            self.conf, url=self.conf.neutron.transport_url)
        targets = [oslo_messaging.Target(
            exchange=self.conf.neutron.notification_exchange,
            topic=self.conf.neutron.notification_topic)]
        # a pool of our own: every host gets every notification, rather than
        # competing with the other agents (and Neutron's) for them
        listener = oslo_messaging.get_notification_listener(
            transport, targets, [_Endpoint(self)], executor='threading',
            pool='vdsm-dhcp-' + self.host, allow_requeue=False)
        listener.start()
        if self._stopped.is_set():     # stop() came while we connected
            listener.stop()
            return
        self._listener = listener
        self.notifications = 'listening'
        log.info('Neutron notifications: listening')

    def _drop(self, event_type, why):
        if not self.notifications_dropped:
            log.warning('notification %s dropped: %s (further ones are '
                        'counted in status)', _short(event_type), why)
        self.notifications_dropped += 1

    def notified(self, event_type, payload):
        self.notifications_received += 1
        if not isinstance(event_type, str):
            return self._drop(event_type, 'the event type is not a string')
        resource, _, action = event_type.partition('.')
        if resource not in ('network', 'subnet', 'port') or \
                not action.endswith('.end'):
            return
        if not isinstance(payload, dict):
            return self._drop(event_type, 'the payload is not an object')
        table = resource + 's'
        if action == 'delete.end':
            item = payload.get(resource)
            item_id = payload.get(resource + '_id') or (
                item.get('id') if isinstance(item, dict) else None)
            if not isinstance(item_id, str):
                return self._drop(event_type, 'no %s id' % resource)
            with self.cache.lock:
                if self.cache.table(table).get(item_id) is None:
                    return
                if resource == 'network':
                    self.cache.drop_network(item_id)
                else:
                    del self.cache.table(table)[item_id]
        else:
            item = payload.get(resource)
            problem = check_item(table, item)
            if problem:
                return self._drop(event_type, problem)
            network_id = item['id'] if resource == 'network' else \
                item['network_id']
            if network_id not in self.synced:
                return      # not a network served here
            with self.cache.lock:
                if not self.cache.put(table, item):
                    return  # stale or same: dropped by revision_number
        log.debug('notification %s applied', event_type)
        self._notify_change()
        if resource == 'subnet':
            self._poke.set()   # a new subnet may need our DHCP port on it


class _Endpoint:
    def __init__(self, source):
        self.source = source
        self._failures_seen = set()

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        try:
            self.source.notified(event_type, payload)
        except Exception as e:
            # never out of here: the listener must go on. A traceback once
            # per kind of failure; the poll repairs what was not applied.
            if type(e) not in self._failures_seen:
                self._failures_seen.add(type(e))
                log.exception('notification %s not applied',
                              _short(event_type))
            self.source.notifications_dropped += 1
