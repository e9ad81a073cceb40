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
Neutron's own agent does, so that the IPAM reserves the server's addresses,
and one more per shard of a network past [dnsmasq] shard_size hosts
(sources/neutron_ports.py); they are released when the network is dropped
from the list.
"""
import logging
import threading
import time


from vdsm_dhcp import logs
from vdsm_dhcp.sources.base import Reachability
from vdsm_dhcp.sources.neutron_client import (NETWORK_FIELDS, PORT_FIELDS,
                                              SUBNET_FIELDS, Cache,
                                              NeutronClient, NeutronError,
                                              shorten)
from vdsm_dhcp.sources.neutron_events import Notifications
from vdsm_dhcp.sources.neutron_ports import DhcpPorts

log = logging.getLogger('vdsm_dhcp.neutron')


class NeutronSource(DhcpPorts, Notifications):
    """The source: the sync (here), this host's DHCP ports (DhcpPorts),
    notifications (Notifications)."""

    def __init__(self, conf, client=None):
        self.conf = conf
        self.host = conf.host
        self.client = client or NeutronClient(conf)
        self.cache = Cache()
        self.synced = set()        # network ids fully fetched at least once
        self.wanted = set()        # network ids the agent asked for
        self.owned = {}            # network id -> our DHCP port ids
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
        self.reach = Reachability(log, 'Neutron')
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
                    if self.reach.error is None:
                        log.exception('Neutron sync failed')
                    error = NeutronError('sync failed: %s: %s' % (
                        type(e).__name__, shorten(str(e))))
                    self._failed(error)
                    raise error from None
        with self.cache.lock:
            snap = self.cache.snapshot(ids & self.synced)
        # network id -> why Neutron could not give it (fully): a network
        # absent for that reason is not served with it as the reason
        # (snap.errors, read by agent/desired.py); one served from the data it
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
                **self.reach.status(),
                'loaded_at': self.last_sync,
                'notifications': self.notifications,
                'notifications_received': self.notifications_received,
                'notifications_dropped': self.notifications_dropped,
                'networks_synced': len(self.synced),
                'network_errors': {k: v for k, v in
                                   self.network_errors().items()
                                   if k in self.wanted}}

    def _sync_round(self, jobs, ensure_ids):
        """Run jobs [(action, network ids)]; action(ids) -> changed. A batch
        Neutron answers with an error is run again one network at a time:
        the networks that still fail are recorded in fetch_errors and the
        others go on. Raises NeutronError when Neutron did not answer, or
        answered nothing but errors while no other network is fine
        (Neutron itself is failing). Then this host's DHCP ports on each
        of ensure_ids. Returns changed."""
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
        others_fine = self.reach.error is None and any(
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
        changed |= self._ensure_dhcp_ports(ensure_ids & self.synced)
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
                    if self.reach.error is None:
                        log.exception('Neutron poll failed')
                    e = NeutronError('poll failed: %s: %s' % (
                        type(e).__name__, shorten(str(e))))
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
        # a new HTTP status (or no answer after one) is a new kind
        self.reach.failed(error, (getattr(error, 'status', None),
                                  type(error).__name__))

    def _succeeded(self):
        # what changed meanwhile is fetched by the next poll
        self.reach.succeeded()
        self.last_sync = time.time()
