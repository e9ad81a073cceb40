"""Small in-test stand-ins for Neutron and Keystone (stdlib http.server on
127.0.0.1 of the test's own network namespace), for what the real lab
(tests/neutron_server.py) cannot do on demand: faults.

FakeNeutron serves the few calls the agent makes, in Neutron API v2 shape
(list filters, `fields=`, pagination with `<resource>_links`, ports
created (one, or in bulk unless `bulk` is False)/updated/deleted with
addresses from the subnet (409 when it is full), revision_number bumped on
each change). `fault` switches what it answers:

    neutron.fault = Fault.status(500)           # every request
    neutron.fault = Fault.body(b'<html>')       # a 200 with that body
    neutron.fault = Fault.hang()                # no answer until healed
    neutron.fault = Fault.status(500, when=neutron.mentions(net_id))
    neutron.fault = None                        # healthy again

FakeKeystone issues a token for one user/password (Identity v3) with a
catalog naming a network endpoint, and remembers what it was sent.
"""
import ipaddress
import json
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOST = '127.0.0.1'


class Fault:
    """What to answer instead of the truth: respond(handler) writes the
    reply; `when(method, path, params)` narrows it to some requests."""

    def __init__(self, respond, when=None, name=''):
        self.respond, self.when, self.name = respond, when, name

    def applies(self, method, path, params):
        return self.when is None or self.when(method, path, params)

    @classmethod
    def status(cls, code, when=None):
        body = json.dumps({'NeutronError': {
            'type': 'HTTPInternalServerError', 'detail': '',
            'message': 'Request Failed: internal server error'}}).encode()
        return cls(lambda h: h.reply(code, body), when, 'HTTP %d' % code)

    @classmethod
    def body(cls, raw, when=None, name=None):
        return cls(lambda h: h.reply(200, raw), when,
                   name or 'a 200 with %r...' % raw[:30])

    @classmethod
    def json(cls, doc, when=None, name=None):
        return cls.body(json.dumps(doc).encode(), when, name)

    @classmethod
    def hang(cls, when=None):
        """No answer until the server is healed or closed (the client's
        timeout fires first)."""
        def respond(h):
            h.server.owner.released.wait(60)
            h.reply(503, b'')
        return cls(respond, when, 'no answer (hang)')


class _Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def log_message(self, *args):
        pass

    def reply(self, code, body, headers=()):
        try:
            self.send_response(code)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header('Content-Type', 'application/json')
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:     # the client gave up (its timeout)
            pass

    def _handle(self, method):
        url = urllib.parse.urlsplit(self.path)
        params = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        length = int(self.headers.get('Content-Length') or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.server.owner.handle(self, method, url.path, params, body)

    def do_GET(self):
        self._handle('GET')

    def do_POST(self):
        self._handle('POST')

    def do_PUT(self):
        self._handle('PUT')

    def do_DELETE(self):
        self._handle('DELETE')


class _Server:
    def __init__(self):
        self.httpd = ThreadingHTTPServer((HOST, 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self
        self.url = 'http://%s:%d' % (HOST, self.httpd.server_address[1])
        self.released = threading.Event()
        self.requests = []      # (method, path, params, body)
        self._thread = threading.Thread(target=self.httpd.serve_forever,
                                        daemon=True)

    def start(self):
        self._thread.start()
        return self

    def close(self):
        self.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()


class SubnetFull(Exception):
    pass


def _now():
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())


class FakeNeutron(_Server):
    RESOURCES = ('networks', 'subnets', 'ports')

    def __init__(self):
        super().__init__()
        self.lock = threading.Lock()
        self.data = {r: {} for r in self.RESOURCES}
        self._fault = None
        self.bulk = True    # False: a bulk create is a 400, as allow_bulk

    # -- switching faults -------------------------------------------------
    @property
    def fault(self):
        return self._fault

    @fault.setter
    def fault(self, fault):
        if fault is None:
            self.released.set()     # end hung requests
        else:
            self.released.clear()
        self._fault = fault

    @staticmethod
    def mentions(*ids):
        """A `when` for requests that name one of these ids (in a filter
        or the path): "this network cannot be fetched"."""
        ids = set(ids)

        def when(method, path, params):
            named = {v for key in ('id', 'network_id')
                     for v in params.get(key, ())}
            return bool(named & ids) or any(i in path for i in ids)
        return when

    # -- data ---------------------------------------------------------------
    def put(self, resource, item):
        """Store an item as is (a test may set any revision_number)."""
        with self.lock:
            self.data[resource][item['id']] = item
        return item

    def network(self, name='net', **kw):
        return self.put('networks', dict(
            id=str(uuid.uuid4()), name=name, admin_state_up=True, mtu=1500,
            project_id='p1', revision_number=1, **kw))

    def subnet(self, net, cidr, **kw):
        hosts = ipaddress.ip_network(cidr).hosts()
        item = dict(id=str(uuid.uuid4()), network_id=net['id'], cidr=cidr,
                    ip_version=4, gateway_ip=str(next(hosts)),
                    enable_dhcp=True, dns_nameservers=[], host_routes=[],
                    ipv6_address_mode=None, ipv6_ra_mode=None,
                    revision_number=1)
        item.update(kw)
        return self.put('subnets', item)

    def port(self, net, mac, fixed_ips=None, **kw):
        with self.lock:
            item = self._new_port(dict(kw, network_id=net['id'],
                                       mac_address=mac,
                                       fixed_ips=fixed_ips))
        return item

    def update(self, resource, item_id, **changes):
        with self.lock:
            item = self.data[resource][item_id]
            changes.setdefault('revision_number',
                               item.get('revision_number', 0) + 1)
            item = dict(item, **changes)
            self.data[resource][item_id] = item
        return item

    def delete(self, resource, item_id):
        with self.lock:
            self.data[resource].pop(item_id, None)

    def _free_ip(self, subnet_id):
        subnet = self.data['subnets'][subnet_id]
        used = {f['ip_address'] for p in self.data['ports'].values()
                for f in p.get('fixed_ips') or ()} | {subnet['gateway_ip']}
        net = ipaddress.ip_network(subnet['cidr'])
        free = next((str(ip) for ip in list(net.hosts())[9:]
                     if str(ip) not in used), None)
        if free is None:
            raise SubnetFull(subnet_id)
        return free

    def _new_port(self, attrs):
        """Under self.lock."""
        attrs = dict(attrs)
        fixed = attrs.pop('fixed_ips', None)
        if fixed is None:
            fixed = [{'subnet_id': s['id']}
                     for s in self.data['subnets'].values()
                     if s['network_id'] == attrs['network_id']][:1]
        fixed = [dict(f, ip_address=f.get('ip_address') or
                      self._free_ip(f['subnet_id'])) for f in fixed]
        port = dict(id=str(uuid.uuid4()), device_owner='compute:nova',
                    device_id='', dns_name='', created_at=_now(),
                    revision_number=1, **{'binding:host_id': ''})
        port.update(attrs)
        port['fixed_ips'] = fixed
        port.setdefault('mac_address', 'fa:16:3e:%02x:%02x:%02x' % tuple(
            uuid.uuid4().bytes[:3]))
        self.data['ports'][port['id']] = port
        return port

    # -- serving -------------------------------------------------------------
    def handle(self, h, method, path, params, body):
        self.requests.append((method, path, params, body))
        fault = self._fault
        if fault is not None and fault.applies(method, path, params):
            return fault.respond(h)
        parts = path.strip('/').split('/')
        if parts[:1] != ['v2.0'] or len(parts) < 2 or \
                parts[1] not in self.RESOURCES:
            return h.reply(404, b'{}')
        resource = parts[1]
        if method == 'GET' and len(parts) == 2:
            return h.reply(200, json.dumps(self._list(resource, params))
                           .encode())
        if resource != 'ports':
            return h.reply(405, b'{}')
        with self.lock:
            if method == 'POST' and len(parts) == 2:
                return self._create(h, body)
            port_id = parts[2] if len(parts) == 3 else None
            if port_id not in self.data['ports']:
                return h.reply(404, b'{"NeutronError": {}}')
            if method == 'DELETE':
                del self.data['ports'][port_id]
                return h.reply(204, b'')
            if method == 'PUT':
                port = dict(self.data['ports'][port_id])
                changes = dict(body['port'])
                if 'fixed_ips' in changes:
                    changes['fixed_ips'] = [
                        dict(f, ip_address=f.get('ip_address') or
                             self._free_ip(f['subnet_id']))
                        for f in changes['fixed_ips']]
                port.update(changes)
                port['revision_number'] += 1
                self.data['ports'][port_id] = port
                return h.reply(200, json.dumps({'port': port}).encode())
        return h.reply(405, b'{}')

    def _create(self, h, body):
        """POST /v2.0/ports, one ({"port": ...}) or bulk ({"ports":
        [...]}, all or nothing, as Neutron's): under self.lock."""
        if 'ports' in body and not self.bulk:
            return h.reply(400, json.dumps({'NeutronError': {
                'type': 'BadRequest', 'detail': '',
                'message': 'Bulk operation not supported'}}).encode())
        before = dict(self.data['ports'])
        try:
            made = [self._new_port(attrs)
                    for attrs in body.get('ports', [body.get('port')])]
        except SubnetFull:
            self.data['ports'] = before
            return h.reply(409, json.dumps({'NeutronError': {
                'type': 'IpAddressGenerationFailure', 'detail': '',
                'message': 'No more IP addresses available on network'
            }}).encode())
        doc = {'ports': made} if 'ports' in body else {'port': made[0]}
        return h.reply(201, json.dumps(doc).encode())

    def _list(self, resource, params):
        fields = params.get('fields')
        limit = int(params.get('limit', ['0'])[0]) or None
        marker = params.get('marker', [None])[0]
        filters = {k: set(v) for k, v in params.items()
                   if k not in ('fields', 'limit', 'marker')}
        with self.lock:
            items = sorted(self.data[resource].values(),
                           key=lambda i: i['id'])
        items = [i for i in items if all(str(i.get(k)) in v
                                         for k, v in filters.items())]
        if marker:
            items = [i for i in items if i['id'] > marker]
        doc = {}
        if limit and len(items) > limit:
            items = items[:limit]
            doc[resource + '_links'] = [{'rel': 'next', 'href': ''}]
        if fields:
            items = [{k: v for k, v in i.items() if k in fields}
                     for i in items]
        doc[resource] = items
        return doc


class FakeKeystone(_Server):
    """Identity v3 for one user: POST /v3/auth/tokens with the right
    password gets a token and a catalog whose network endpoint is
    `neutron_url`; anything else is 401."""

    def __init__(self, neutron_url, user='vdsm-dhcp', password=None,
                 project='service'):
        super().__init__()
        self.neutron_url = neutron_url
        self.user, self.project = user, project
        self.password = password or uuid.uuid4().hex
        self.tokens = []

    def handle(self, h, method, path, params, body):
        self.requests.append((method, path, params, body))
        path = path.rstrip('/')
        if method == 'GET' and path in ('', '/v3'):
            version = {'id': 'v3.14', 'status': 'stable',
                       'updated': '2020-04-07T00:00:00Z',
                       'links': [{'rel': 'self',
                                  'href': self.url + '/v3/'}],
                       'media-types': [{
                           'base': 'application/json',
                           'type': 'application/vnd.openstack.identity-v3'
                                   '+json'}]}
            doc = {'version': version} if path == '/v3' else \
                {'versions': {'values': [version]}}
            return h.reply(300 if path == '' else 200,
                           json.dumps(doc).encode())
        if method == 'POST' and path == '/v3/auth/tokens':
            try:
                user = body['auth']['identity']['password']['user']
                ok = user['name'] == self.user and \
                    user['password'] == self.password
            except (KeyError, TypeError):
                ok = False
            if not ok:
                return h.reply(401, b'{"error": {"code": 401}}')
            token = uuid.uuid4().hex
            self.tokens.append(token)
            doc = {'token': {
                'methods': ['password'],
                'expires_at': time.strftime(
                    '%Y-%m-%dT%H:%M:%S.000000Z',
                    time.gmtime(time.time() + 3600)),
                'issued_at': time.strftime('%Y-%m-%dT%H:%M:%S.000000Z',
                                           time.gmtime()),
                'user': {'id': 'u1', 'name': self.user,
                         'domain': {'id': 'default', 'name': 'Default'}},
                'project': {'id': 'p1', 'name': self.project,
                            'domain': {'id': 'default',
                                       'name': 'Default'}},
                'roles': [{'id': 'r1', 'name': 'service'}],
                'catalog': [{
                    'type': 'network', 'name': 'neutron', 'id': 's1',
                    'endpoints': [{'id': 'e1', 'interface': 'public',
                                   'region': 'RegionOne',
                                   'region_id': 'RegionOne',
                                   'url': self.neutron_url}]}]}}
            return h.reply(201, json.dumps(doc).encode(),
                           headers=[('X-Subject-Token', token)])
        return h.reply(404, b'{}')
