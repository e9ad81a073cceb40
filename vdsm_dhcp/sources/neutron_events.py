"""Neutron's notifications (network.*, subnet.*, port.*.end on topic
`notifications`): an oslo.messaging listener in a pool of its own, so that
every host gets every event; applied to the cache at once, stale ones
dropped by revision_number. A part of NeutronSource (sources/neutron.py).
"""
import logging

from vdsm_dhcp.sources.neutron_client import check_item, shorten

log = logging.getLogger('vdsm_dhcp.neutron')


class Notifications:
    """The notification half of NeutronSource (uses its cache and state)."""

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
                              '(the poll goes on; retrying)', shorten(str(e)))
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
                        'counted in status)', shorten(event_type), why)
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
                              shorten(event_type))
            self.source.notifications_dropped += 1
