"""Neutron's REST API as the Neutron source uses it: one boundary every
reply passes (NeutronClient._call: JSON, a dict holding the expected
resource, every item a dict with string ids; anything else is a
NeutronError carrying the HTTP status), paginated lists, and the cache of
what was fetched, indexed by network."""
import json
import logging
import threading

from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import loading as ks_loading

from vdsm_dhcp.model import Snapshot
from vdsm_dhcp.options import NEUTRON_GROUP as GROUP
from vdsm_dhcp.sources.base import SourceError

log = logging.getLogger('vdsm_dhcp.neutron')


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
            return 'an item has %s %s' % (key, shorten(item.get(key)))
    return None


def shorten(value, limit=80):
    """A value from outside, safe for one log line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + '...'


def _revision(item):
    rev = item.get('revision_number')
    return rev if isinstance(rev, int) and not isinstance(rev, bool) else -1


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
                where, status, shorten(resp.text[:200], 200)), status)
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

    def create_ports(self, bodies):
        """Several ports in one request (Neutron's bulk create: all or
        none), in the order of `bodies`."""
        made = self._call('POST', '/v2.0/ports', expect='ports',
                          json={'ports': bodies})[0]
        if len(made) != len(bodies):
            raise NeutronError('POST /v2.0/ports: %d ports asked, %d made'
                               % (len(bodies), len(made)), 200)
        return made

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
