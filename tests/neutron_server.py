"""A real OpenStack Neutron API server for integration tests.

NeutronLab().start() builds, from nothing and inside one private temp dir:
a MariaDB server, a RabbitMQ broker (with its own epmd), the Neutron schema,
and the Neutron 29.0.0 API (ml2, noauth, flat networks) served by gunicorn.
Everything listens on 127.0.0.1 only, on free ports; every process started
is recorded by PID and stop() ends exactly those (never by name), also after
a start() that failed halfway. Needs root and scripts/install-neutron-lab.

    lab = NeutronLab()
    try:
        lab.start()
        net = lab.create_network('n1', **{'provider:network_type': 'flat',
                                          'provider:physical_network': 'p1'})
        ...
        lab.api_stop(); ...; lab.api_start()   # "Neutron API down a while"
        lab.rabbit_stop(); ...; lab.rabbit_start()   # "the broker down"
    finally:
        lab.stop()
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

from vdsm_dhcp.dnsmasq.pids import pid_alive

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NEUTRON_VENV = os.environ.get('VDSM_DHCP_NEUTRON_VENV',
                              os.path.join(ROOT, '.venv-neutron'))
RABBIT_BIN = '/usr/lib/rabbitmq/bin'
HOST = '127.0.0.1'
MARK = 'VDSM_DHCP_NEUTRON_LAB'     # in the environment of all we start

NEUTRON_CONF = """\
[DEFAULT]
core_plugin = ml2
service_plugins =
auth_strategy = noauth
api_paste_config = {base}/etc/api-paste.ini
transport_url = fake:/
notify_nova_on_port_status_changes = false
notify_nova_on_port_data_changes = false
dhcp_agent_notification = false
filter_validation = false
host = vdsm-dhcp-neutron-lab
state_path = {base}/state
log_file = {base}/log/neutron-server.log
debug = false

[database]
connection = mysql+pymysql://neutron:{db_password}@127.0.0.1:{db_port}/neutron?charset=utf8mb4

[oslo_concurrency]
lock_path = {base}/state/lock

[oslo_messaging_notifications]
driver = messagingv2
transport_url = {transport_url}
# while the broker is down (rabbit_stop), drop a notification at once
# rather than retry for ever inside the API request (the API would hang)
retry = 0
"""

ML2_CONF = """\
[ml2]
type_drivers = flat,vlan
project_network_types =
mechanism_drivers =
extension_drivers = port_security

[ml2_type_flat]
flat_networks = *
"""

# gunicorn leaves its own command line in sys.argv; Neutron's config parser
# reads sys.argv[1:] while the app is imported and dies on "-b".
WSGI_WRAPPER = """\
import sys

_argv = sys.argv
sys.argv = _argv[:1]
try:
    from neutron.wsgi.api import application  # noqa: F401
finally:
    sys.argv = _argv
"""


class NeutronError(Exception):
    def __init__(self, method, path, status, body):
        super().__init__('%s %s -> %s: %s' % (method, path, status, body))
        self.status = status
        self.body = body


def free_port(taken=()):
    while True:
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port not in taken:
            return port


def _port_open(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


# alive and not a zombie (Erlang's helpers linger as zombies of PID 1)
_alive = pid_alive


class NeutronLab:
    """MariaDB + RabbitMQ + Neutron API on 127.0.0.1, all in one temp dir."""

    def __init__(self, venv=NEUTRON_VENV, project_id=None):
        self.venv = venv
        self.project_id = project_id or uuid.uuid4().hex
        self.base = None
        self.url = None
        self.transport_url = None
        self.timings = {}
        self.pids = {}          # name -> PID of every process started
        self._procs = {}        # name -> Popen
        self._logs = []
        self.db_password = uuid.uuid4().hex
        self.node = 'vdsmdhcp%d@localhost' % os.getpid()
        self.ports = {}

    # ---- lifecycle -----------------------------------------------------

    def start(self, timeout=180):
        t0 = time.monotonic()
        self._check_install()
        self.base = tempfile.mkdtemp(prefix='vdsm-dhcp-neutron-')
        for d in ('etc', 'log', 'state/lock', 'mysql', 'rabbit/home',
                  'rabbit/mnesia', 'rabbit/log'):
            os.makedirs(os.path.join(self.base, d))
        taken = set()
        for name in ('db', 'amqp', 'epmd', 'dist', 'ctl_dist', 'api'):
            self.ports[name] = free_port(taken)
            taken.add(self.ports[name])
        self.url = 'http://%s:%d' % (HOST, self.ports['api'])
        self.transport_url = 'rabbit://guest:guest@%s:%d/' % (
            HOST, self.ports['amqp'])
        for step in (self._start_mariadb, self._start_rabbitmq,
                     self._write_neutron_conf, self._db_manage,
                     self.api_start):
            t = time.monotonic()
            step()
            self.timings[step.__name__.strip('_')] = round(
                time.monotonic() - t, 2)
        self.timings['total'] = round(time.monotonic() - t0, 2)
        return self

    def stop(self):
        """End every process started, by PID, then remove the temp dir.
        Every step runs even if an earlier one fails or start() never
        finished; raises at the end if something could not be stopped."""
        errors = []
        for step in (self.api_stop, self._stop_rabbitmq, self._stop_mariadb,
                     self._sweep):
            try:
                step()
            except Exception as e:
                errors.append('%s: %r' % (step.__name__, e))
        left = [(n, p) for n, p in self.pids.items() if _alive(p)]
        if left:
            errors.append('still running: %s' % left)
        elif self.base:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None
        if errors:
            raise RuntimeError('NeutronLab.stop: %s' % '; '.join(errors))

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()

    def _check_install(self):
        missing = [p for p in (os.path.join(self.venv, 'bin', 'gunicorn'),
                               os.path.join(self.venv, 'bin',
                                            'neutron-db-manage'),
                               '/usr/sbin/mariadbd',
                               os.path.join(RABBIT_BIN, 'rabbitmq-server'))
                   if not os.path.exists(p)]
        if missing:
            raise RuntimeError('missing %s: run scripts/install-neutron-lab '
                               '(as root)' % ', '.join(missing))

    # ---- process helpers -------------------------------------------------

    def _path(self, *parts):
        return os.path.join(self.base, *parts)

    def _spawn(self, name, argv, env=None, log=None):
        env = dict(env or os.environ, **{MARK: self.base})
        log = log or self._path('log', name + '.log')
        self._logs.append(log)
        with open(log, 'ab') as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT,
                                    env=env, cwd=self.base,
                                    start_new_session=True)
        self._procs[name] = proc
        self.pids[name] = proc.pid
        return proc

    def _run(self, name, argv, env=None, timeout=120):
        env = dict(env or os.environ, **{MARK: self.base})
        log = self._path('log', name + '.log')
        if log not in self._logs:
            self._logs.append(log)
        with open(log, 'ab') as out:
            rc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=env,
                                cwd=self.base, timeout=timeout).returncode
        if rc:
            raise RuntimeError('%s exited %d:\n%s'
                               % (' '.join(argv), rc, self.log_tail()))

    def _end(self, name, timeout=30, sig=signal.SIGTERM):
        """End one recorded process by its PID (then its own session by id,
        for children it may have left, e.g. gunicorn's workers)."""
        proc = self._procs.get(name)
        pid = self.pids.get(name)
        if pid is None:
            return
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        elif proc is None and _alive(pid):
            os.kill(pid, sig)
            deadline = time.monotonic() + timeout
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        try:        # the session we created has the leader's PID as its id
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.pids.pop(name, None)
        self._procs.pop(name, None)

    def _wait(self, predicate, what, timeout, proc_name=None):
        deadline = time.monotonic() + timeout
        while not predicate():
            proc = self._procs.get(proc_name)
            if proc is not None and proc.poll() is not None:
                raise RuntimeError('%s exited %s while waiting for %s:\n%s'
                                   % (proc_name, proc.returncode, what,
                                      self.log_tail()))
            if time.monotonic() > deadline:
                raise RuntimeError('timed out after %ss waiting for %s:\n%s'
                                   % (timeout, what, self.log_tail()))
            time.sleep(0.1)

    def log_tail(self, lines=40):
        out = []
        if not self.base:
            return '(no lab dir)'
        logs = list(self._logs) + [self._path('log', 'neutron-server.log'),
                                   self._path('mysql', 'error.log')]
        for log in dict.fromkeys(logs):
            try:
                with open(log, errors='replace') as f:
                    tail = f.readlines()[-lines:]
            except OSError:
                continue
            out.append('==> %s <==\n%s' % (log, ''.join(tail)))
        return '\n'.join(out)

    # ---- MariaDB ---------------------------------------------------------

    def _start_mariadb(self):
        datadir = self._path('mysql', 'data')
        self._sock = self._path('mysql', 'mysql.sock')
        self._run('mariadb-install-db', [
            'mariadb-install-db', '--no-defaults', '--user=root',
            '--datadir=' + datadir, '--skip-test-db',
            '--auth-root-authentication-method=socket',
            '--skip-name-resolve'])
        self._spawn('mariadbd', [
            '/usr/sbin/mariadbd', '--no-defaults', '--user=root',
            '--datadir=' + datadir, '--socket=' + self._sock,
            '--pid-file=' + self._path('mysql', 'mariadbd.pid'),
            '--log-error=' + self._path('mysql', 'error.log'),
            '--bind-address=' + HOST, '--port=%d' % self.ports['db'],
            '--skip-name-resolve', '--skip-log-bin',
            '--character-set-server=utf8mb4',
            '--innodb-buffer-pool-size=64M',
            '--innodb-flush-log-at-trx-commit=0', '--innodb-doublewrite=0',
            '--max-connections=200'])
        self._wait(lambda: os.path.exists(self._sock)
                   and _port_open(self.ports['db']),
                   'mariadbd on port %d' % self.ports['db'], 60, 'mariadbd')
        self._run('mariadb-create-db', [
            'mariadb', '--no-defaults', '--socket=' + self._sock, '-uroot',
            '-e', "CREATE DATABASE neutron CHARACTER SET utf8mb4; "
                  "CREATE USER 'neutron'@'127.0.0.1' IDENTIFIED BY '%s'; "
                  "GRANT ALL PRIVILEGES ON neutron.* TO "
                  "'neutron'@'127.0.0.1';" % self.db_password])

    def _stop_mariadb(self):
        pid = self.pids.get('mariadbd')
        pidfile = self.base and self._path('mysql', 'mariadbd.pid')
        if pid is None and pidfile and os.path.exists(pidfile):
            with open(pidfile) as f:
                self.pids['mariadbd'] = int(f.read().strip())
        self._end('mariadbd', timeout=60)

    # ---- RabbitMQ --------------------------------------------------------

    def _rabbit_env(self):
        r = self._path('rabbit')
        with open(self._path('rabbit', 'rabbitmq.conf'), 'w') as f:
            f.write('listeners.tcp.default = %s:%d\n'
                    'loopback_users.guest = true\n'
                    'log.file.level = info\n'
                    'log.console = false\n' % (HOST, self.ports['amqp']))
        for name, text in (('enabled_plugins', '[].\n'),
                           ('rabbitmq-env.conf', '')):
            with open(os.path.join(r, name), 'w') as f:
                f.write(text)
        only_lo = '-kernel inet_dist_use_interface {127,0,0,1}'
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(('RABBITMQ_', 'ERL_'))}
        env.update({
            'HOME': os.path.join(r, 'home'),      # its own .erlang.cookie
            'LC_ALL': 'C.UTF-8', 'LANG': 'C.UTF-8',
            'RABBITMQ_NODENAME': self.node,
            'RABBITMQ_NODE_IP_ADDRESS': HOST,
            'RABBITMQ_NODE_PORT': str(self.ports['amqp']),
            'RABBITMQ_DIST_PORT': str(self.ports['dist']),
            'RABBITMQ_CTL_DIST_PORT_MIN': str(self.ports['ctl_dist']),
            'RABBITMQ_CTL_DIST_PORT_MAX': str(self.ports['ctl_dist']),
            'RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS': only_lo,
            'RABBITMQ_CTL_ERL_ARGS': only_lo,
            'ERL_EPMD_ADDRESS': HOST,
            'ERL_EPMD_PORT': str(self.ports['epmd']),
            'RABBITMQ_MNESIA_BASE': os.path.join(r, 'mnesia'),
            'RABBITMQ_LOG_BASE': os.path.join(r, 'log'),
            'RABBITMQ_PID_FILE': os.path.join(r, 'rabbitmq.pid'),
            'RABBITMQ_CONFIG_FILE': os.path.join(r, 'rabbitmq.conf'),
            'RABBITMQ_ADVANCED_CONFIG_FILE': os.path.join(r,
                                                          'advanced.config'),
            'RABBITMQ_ENABLED_PLUGINS_FILE': os.path.join(r,
                                                          'enabled_plugins'),
            'RABBITMQ_CONF_ENV_FILE': os.path.join(r, 'rabbitmq-env.conf'),
        })
        return env

    def _start_rabbitmq(self):
        self._renv = env = self._rabbit_env()
        # our own epmd, in the foreground: its PID is ours to end
        self._spawn('epmd', ['epmd', '-address', HOST,
                             '-port', str(self.ports['epmd'])], env=env)
        self._wait(lambda: _port_open(self.ports['epmd']),
                   'epmd on port %d' % self.ports['epmd'], 20, 'epmd')
        self._spawn('rabbitmq', [os.path.join(RABBIT_BIN, 'rabbitmq-server')],
                    env=env)
        self._run('rabbitmqctl-wait', [
            os.path.join(RABBIT_BIN, 'rabbitmqctl'), '-n', self.node, 'wait',
            '--timeout', '90', env['RABBITMQ_PID_FILE']], env=env,
            timeout=120)
        # the script stays as beam.smp's parent: record the VM's PID too
        with open(env['RABBITMQ_PID_FILE']) as f:
            self.pids['beam.smp'] = int(f.read().strip())
        self._wait(lambda: _port_open(self.ports['amqp']),
                   'AMQP on port %d' % self.ports['amqp'], 30, 'rabbitmq')

    def _stop_rabbitmq(self):
        if self.pids.get('rabbitmq') and _alive(self.pids['rabbitmq']):
            pidfile = self._renv['RABBITMQ_PID_FILE']
            if 'beam.smp' not in self.pids and os.path.exists(pidfile):
                with open(pidfile) as f:
                    self.pids['beam.smp'] = int(f.read().strip())
            try:
                self._run('rabbitmqctl-stop', [
                    os.path.join(RABBIT_BIN, 'rabbitmqctl'), '-n', self.node,
                    'stop', pidfile], env=self._renv, timeout=60)
            except Exception:
                pass            # ended by PID below
        self._end('beam.smp', timeout=30)
        self._end('rabbitmq', timeout=30)
        self._end('epmd', timeout=10)

    def rabbit_stop(self):
        """Stop only the broker (and its epmd); the API keeps serving."""
        self._stop_rabbitmq()

    def rabbit_start(self):
        """Start the broker again on the same ports (its data dir kept)."""
        if self.pids.get('rabbitmq'):
            raise RuntimeError('RabbitMQ already running')
        try:    # `rabbitmqctl wait` would wait on the old PID
            os.unlink(self._renv['RABBITMQ_PID_FILE'])
        except FileNotFoundError:
            pass
        self._start_rabbitmq()

    def _marked_pids(self):
        """Processes of this lab left behind by the ones we recorded (e.g.
        the Erlang VMs' inet_gethost, or an epmd that a VM started by
        itself): found by PID through a marker only this lab's processes
        carry in their environment, never by name."""
        marks = []
        if self.base:
            marks.append(b'\0%s=%s\0' % (MARK.encode(), self.base.encode()))
        if self.ports.get('epmd'):
            marks.append(b'\0ERL_EPMD_PORT=%d\0' % self.ports['epmd'])
        found = []
        for pid in filter(str.isdigit, os.listdir('/proc')):
            if int(pid) == os.getpid():
                continue
            try:
                with open('/proc/%s/environ' % pid, 'rb') as f:
                    environ = b'\0' + f.read() + b'\0'
            except OSError:
                continue
            if any(m in environ for m in marks):
                found.append(int(pid))
        return found

    def _sweep(self, grace=5):
        deadline = time.monotonic() + grace
        while self._marked_pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in self._marked_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while self._marked_pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        left = self._marked_pids()
        if left:
            raise RuntimeError('processes of the lab left: %s' % left)

    # ---- Neutron -----------------------------------------------------------

    def _write_neutron_conf(self):
        values = dict(base=self.base, db_password=self.db_password,
                      db_port=self.ports['db'],
                      transport_url=self.transport_url)
        with open(self._path('etc', 'neutron.conf'), 'w') as f:
            f.write(NEUTRON_CONF.format(**values))
        with open(self._path('etc', 'ml2_conf.ini'), 'w') as f:
            f.write(ML2_CONF)
        shutil.copy(os.path.join(self.venv, 'etc', 'neutron', 'api-paste.ini'),
                    self._path('etc', 'api-paste.ini'))
        with open(self._path('etc', 'neutron_lab_wsgi.py'), 'w') as f:
            f.write(WSGI_WRAPPER)

    def _db_manage(self):
        self._run('neutron-db-manage', [
            os.path.join(self.venv, 'bin', 'neutron-db-manage'),
            '--config-file', self._path('etc', 'neutron.conf'),
            '--config-file', self._path('etc', 'ml2_conf.ini'),
            'upgrade', 'heads'], timeout=300)

    def api_start(self, timeout=120):
        """Start the API (again) on the same port; returns when
        GET /v2.0/networks answers 200."""
        if self.pids.get('neutron-api'):
            raise RuntimeError('Neutron API already running')
        env = dict(os.environ,
                   OS_NEUTRON_CONFIG_DIR=self._path('etc'),
                   OS_NEUTRON_CONFIG_FILES='neutron.conf;ml2_conf.ini',
                   PYTHONWARNINGS='ignore')
        env.pop('PYTHONPATH', None)
        self._spawn('neutron-api', [
            os.path.join(self.venv, 'bin', 'gunicorn'),
            '--bind', '%s:%d' % (HOST, self.ports['api']),
            '--workers', '1', '--timeout', '300', '--graceful-timeout', '5',
            '--pythonpath', self._path('etc'), '--chdir', self._path('etc'),
            '--pid', self._path('state', 'gunicorn.pid'),
            'neutron_lab_wsgi:application'], env=env)
        self._wait(self._api_ready, 'GET /v2.0/networks -> 200', timeout,
                   'neutron-api')

    def api_stop(self, timeout=30):
        """Stop only the API server (the DB and the broker keep running)."""
        self._end('neutron-api', timeout=timeout)

    def _api_ready(self):
        try:
            with urllib.request.urlopen(self.url + '/v2.0/networks',
                                        timeout=5) as r:
                return r.status == 200
        except (urllib.error.URLError, ConnectionError, OSError):
            return False

    # ---- REST ------------------------------------------------------------

    def request(self, method, path, body=None, timeout=60):
        """One call to the API (path under /v2.0 unless it starts with
        /v); returns the parsed JSON (None for an empty answer). Sends no
        X-Project-Id: noauth then runs it as admin; put project_id in
        bodies."""
        if not path.startswith('/v'):
            path = '/v2.0' + (path if path.startswith('/') else '/' + path)
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data,
                                     method=method)
        req.add_header('Accept', 'application/json')
        if data is not None:
            req.add_header('Content-Type', 'application/json')
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw = r.read()
        except urllib.error.HTTPError as e:
            raise NeutronError(method, path, e.code,
                               e.read().decode(errors='replace')) from None
        return json.loads(raw) if raw else None

    def _create(self, kind, attrs):
        attrs.setdefault('project_id', self.project_id)
        return self.request('POST', '/%ss' % kind, {kind: attrs})[kind]

    def create_network(self, name, **kw):
        return self._create('network', dict(kw, name=name))

    def create_subnet(self, network_id, cidr, **kw):
        kw.setdefault('ip_version', 6 if ':' in cidr else 4)
        return self._create('subnet', dict(kw, network_id=network_id,
                                           cidr=cidr))

    def create_port(self, network_id, **kw):
        return self._create('port', dict(kw, network_id=network_id))

    def update_port(self, id, **kw):
        return self.request('PUT', '/ports/%s' % id, {'port': kw})['port']

    def show_port(self, id):
        return self.request('GET', '/ports/%s' % id)['port']

    def delete_port(self, id):
        self.request('DELETE', '/ports/%s' % id)

    def delete_subnet(self, id):
        self.request('DELETE', '/subnets/%s' % id)

    def delete_network(self, id):
        self.request('DELETE', '/networks/%s' % id)

    def list_ports(self, **filters):
        query = urllib.parse.urlencode(filters, doseq=True)
        return self.request('GET', '/ports' + ('?' + query if query else ''))[
            'ports']
