"""vdsm-dhcp-agent: serve DHCP for the networks in the networks file.

Loop: wait for a change (SIGHUP: networks file; the source; a bridge; a
dnsmasq that died; a control `sync`), then reconcile: desired state (pure,
desired.py) against what runs, networks applied in parallel. A change that
arrives while applying is picked up by the next round: bursts coalesce.
An error in one network marks only that network for a retry with backoff.

Stopping (SIGTERM) leaves dnsmasq running, so a restart of the agent never
interrupts DHCP; the next agent adopts it. With an empty networks file
(setDHCP([])), everything is torn down before the agent exits.
"""
import argparse
import concurrent.futures
import logging
import os
import signal
import sys
import threading
import time

from oslo_config import cfg

from vdsm_dhcp import bridges, config, control, desired, dnsmasq
from vdsm_dhcp import errors, networks_file
from vdsm_dhcp.interface import NS_PREFIX, device_names, load_driver
from vdsm_dhcp.source import SourceError, make_source

log = logging.getLogger('vdsm_dhcp.agent')

agent_opts = [
    cfg.IntOpt('workers', default=8, min=1,
               help='Networks configured in parallel.'),
    cfg.FloatOpt('resync_interval', default=30.0, min=0.5,
                 help='Seconds between full reconciliations when nothing '
                      'changed (catches drift, e.g. a deleted namespace).'),
    cfg.FloatOpt('retry_max', default=30.0, min=0.1,
                 help='Longest back-off between retries of a failed '
                      'network.'),
    cfg.FloatOpt('supervise_interval', default=0.25, min=0.01,
                 help='Seconds between checks that every dnsmasq lives.'),
    cfg.BoolOpt('debug', default=False, help='Log at debug level.'),
    cfg.FloatOpt('wait_max', default=600.0, min=0,
                 help='Longest timeout a `wait` request may ask for.'),
]


class NetworkRuntime:
    """What this agent runs for one network, and how that went."""

    def __init__(self, conf, quantum_id):
        self.quantum_id = quantum_id
        self.dnsmasq = dnsmasq.Dnsmasq(conf, quantum_id)
        self.plan = None
        self.error = None
        self.failures = 0
        self.retry_at = None
        self.last_sync = None


class Agent:
    def __init__(self, conf, source=None, driver=None):
        self.conf = conf
        self.source = source or make_source(conf)
        self.driver = driver or load_driver(conf)
        self.listed = []
        self.served_ids = set()      # listed at the last reconcile
        self.plans = {}
        self.plan_memo = {}          # desired.compute's per-port memo
        self.runtimes = {}
        self.source_error = None
        self.source_error_since = None
        self.networks_error = None
        self.started_at = time.time()
        self.last_reconcile = None
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._reconciled = threading.Condition()
        self._started_rounds = 0     # reconcile rounds begun
        self._done_rounds = 0        # reconcile rounds finished
        self._dirty = True
        self._full = True        # re-apply unchanged networks too (drift)
        self._stopping = False
        self._pool = concurrent.futures.ThreadPoolExecutor(
            conf.workers, thread_name_prefix='network')
        self.control = control.ControlServer(conf, {
            'status': lambda req: self.status(),
            'sync': lambda req: self.request_sync(),
            'why': lambda req: self.why(req.get('mac')),
            'hosts': lambda req: self.hosts(req.get('network')),
            'wait': self.wait,
        })

    # -- events -------------------------------------------------------------
    def changed(self, *_):
        """Something other than the IPAM changed: apply every network."""
        self._full = True
        self.source_changed()

    def source_changed(self):
        """Only the IPAM changed: networks whose plan is the same are left
        alone (with 10,000 ports, re-applying all of them per change costs
        more than the change)."""
        self._dirty = True
        self._wake.set()

    def request_sync(self):
        """Ask for a reconcile; returns the round that will include every
        change made before this call."""
        with self._reconciled:
            target = self._started_rounds + 1
        self.changed()
        return {'queued': True, 'round': target}

    def _on_signal(self, signum, frame):
        if signum == signal.SIGHUP:
            log.info('SIGHUP: re-reading %s', self.conf.networks_file)
            self.changed()
        else:
            self._stopping = True
            self._wake.set()

    # -- main loop ------------------------------------------------------------
    def run(self):
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        os.makedirs(self.conf.state_dir, mode=0o755, exist_ok=True)
        check_traversable(self.conf.state_dir)
        self._read_networks_file()
        check_inotify_room(len(self.listed))
        self.adopt_or_clean()
        self.control.start()
        self.source.start(self.source_changed)
        watch = bridges.BridgeWatch(self._bridge_event)
        watch.start()
        log.info('agent started (pid %d, host %s, %d listed networks, '
                 'bridge events from %s)', os.getpid(), self.conf.host,
                 len(self.listed), watch.source)
        next_resync = 0
        while not self._stopping:
            self._wake.wait(self.conf.supervise_interval)
            self._wake.clear()
            if self._stopping:
                break
            self._supervise()
            now = time.monotonic()
            due = any(r.retry_at and r.retry_at <= now
                      for r in self.runtimes.values())
            if now >= next_resync:
                self._full = True
            if self._dirty or due or self._full:
                full, self._dirty, self._full = self._full, False, False
                self.reconcile(full)
                next_resync = now + self.conf.resync_interval
        watch.stop()
        self.control.stop()
        self._read_networks_file()
        if not self.listed and not self.networks_error:
            log.info('stopping with an empty networks list: tearing down')
            self.teardown_all()
        else:
            log.info('stopping; dnsmasq keeps serving %d networks',
                     len(self.runtimes))
        self.source.stop()
        self._pool.shutdown()

    def _bridge_event(self, ifname):
        if any(n.name == ifname for n in self.listed):
            log.info('bridge event for %s', ifname)
            self.changed()

    def _supervise(self):
        for runtime in list(self.runtimes.values()):
            dm = runtime.dnsmasq
            dm.tracker.rotate(self.conf.dnsmasq.log_max_bytes)
            if dm.cmdline and not dm.alive():
                log.error('network %s: dnsmasq pid %s died; restarting: %s',
                          runtime.quantum_id, dm.pid, dm.log_tail(300))
                dm.pid = dm.proc = dm.cmdline = None   # alive() reaped it
                self._dirty = True

    def _read_networks_file(self):
        try:
            listed = networks_file.read(self.conf.networks_file)
        except errors.NetworksFileError as e:
            if str(e) != self.networks_error:
                log.error('%s; keeping the last good list', e)
            self.networks_error = str(e)
            return
        self.networks_error = None
        self.listed = listed

    # -- reconcile ----------------------------------------------------------
    def reconcile(self, full=True):
        with self._reconciled:
            self._started_rounds += 1
        try:
            self._reconcile(full)
        finally:
            with self._reconciled:
                self._done_rounds = self._started_rounds
                self._reconciled.notify_all()

    def _reconcile(self, full):
        self._read_networks_file()
        listed_ids = {n.quantum_id for n in self.listed}
        self._teardown_many([q for q in self.runtimes if q not in listed_ids],
                            'no longer in the networks file')
        for qid in self.served_ids - listed_ids:
            self.source.release(qid)
        self.served_ids = listed_ids
        try:
            snap = self.source.snapshot(sorted(listed_ids))
        except SourceError as e:
            if self.source_error is None:
                log.error('IPAM source unreachable: %s (dnsmasq keeps '
                          'serving what it has)', e)
                self.source_error_since = time.time()
            self.source_error = str(e)
            self._retry_all()
            return
        if self.source_error is not None:
            log.info('IPAM source reachable again')
            self.source_error = self.source_error_since = None
        present = bridges.present({n.name for n in self.listed})
        plans = desired.compute(self.listed, snap, present, self.conf.host,
                                self.plan_memo)
        with self._lock:
            self.plans = plans
        jobs = {}
        now = time.monotonic()
        for qid, plan in plans.items():
            runtime = self.runtimes.get(qid)
            if not plan.served:
                if runtime is not None:
                    self._teardown(qid, plan.reason)
                continue
            if runtime is None:
                with self._lock:
                    runtime = self.runtimes[qid] = NetworkRuntime(
                        self.conf, qid)
            elif runtime.retry_at and runtime.retry_at > now and \
                    runtime.plan is not None:
                continue   # backing off; the retry comes when due
            elif not full and runtime.plan == plan and not runtime.error \
                    and runtime.dnsmasq.alive():
                continue   # the IPAM changed elsewhere
            jobs[self._pool.submit(self._apply, runtime, plan)] = runtime
        for future in concurrent.futures.as_completed(jobs):
            runtime = jobs[future]
            try:
                future.result()
            except Exception as e:
                self._failed(runtime, e)
        self.last_reconcile = time.time()

    def _apply(self, runtime, plan):
        qid = plan.quantum_id
        if runtime.plan is None or runtime.plan.problems != plan.problems:
            for problem in plan.problems:
                log.warning('network %s: %s', plan.name, problem)
        readdressed = self.driver.plug(qid, plan.interface)
        dm = runtime.dnsmasq
        argv = dnsmasq.command_line(self.conf, plan, dm.files,
                                    device_names(qid)[1])
        if dm.alive() and dm.cmdline == argv and not readdressed:
            reload = dm.sync_hosts(plan.hosts)
            reload |= dm.sync_opts(dnsmasq.opts_content(plan))
            if reload:
                dm.signal(signal.SIGHUP)
                dm.reloads += 1
        else:
            if dm.alive():
                log.info('network %s: dnsmasq command line changed; '
                         'restarting it', plan.name)
                dm.stop()
                dm.restarts += 1
            dm.clear_files()
            dm.sync_hosts(plan.hosts)
            dm.sync_opts(dnsmasq.opts_content(plan))
            dm.seed_leases(plan.hosts)
            dm.start(argv, plan.interface.namespace)
        with self._lock:
            runtime.plan = plan
            if runtime.error:
                log.info('network %s: recovered', plan.name)
            runtime.error = None
            runtime.failures = 0
            runtime.retry_at = None
            runtime.last_sync = time.time()

    def _failed(self, runtime, exc):
        runtime.failures += 1
        delay = min(self.conf.retry_max, 0.5 * 2 ** (runtime.failures - 1))
        runtime.retry_at = time.monotonic() + delay
        if str(exc) != runtime.error:
            log.error('network %s: %s (retrying in %.1fs)',
                      runtime.quantum_id, exc, delay)
        runtime.error = str(exc)
        self._wake.set()

    def _retry_all(self):
        for runtime in self.runtimes.values():
            runtime.retry_at = time.monotonic() + self.conf.retry_max / 4

    def _teardown(self, qid, reason):
        log.info('network %s: tearing down (%s)', qid, reason)
        with self._lock:
            runtime = self.runtimes.pop(qid, None)
        dm = runtime.dnsmasq if runtime else dnsmasq.Dnsmasq(self.conf, qid)
        dm.stop()
        self.driver.unplug(qid)
        dm.remove_files()

    def _teardown_many(self, qids, reason):
        """In parallel: 100 networks one by one take seconds."""
        for future in [self._pool.submit(self._teardown, q, reason)
                       for q in qids]:
            try:
                future.result()
            except Exception as e:
                log.error('teardown failed: %s', e)

    def teardown_all(self):
        self._teardown_many(list(self.runtimes), 'the networks list is empty')
        for qid in self.served_ids | {n.quantum_id for n in self.listed}:
            self.source.release(qid)
        self.served_ids = set()
        self.clean_stale(set())

    # -- start-up -------------------------------------------------------------
    def adopt_or_clean(self):
        """Adopt the dnsmasq of listed networks; remove anything of ours
        that is not listed (namespaces, veths, dnsmasq, state)."""
        listed_ids = {n.quantum_id for n in self.listed}
        for qid in listed_ids:
            runtime = NetworkRuntime(self.conf, qid)
            if runtime.dnsmasq.adopt():
                self.runtimes[qid] = runtime
        self.clean_stale(listed_ids)

    def clean_stale(self, keep_ids):
        namespaces, devices = self.driver.ours()
        keep_devices = {device_names(q)[0] for q in keep_ids}
        for ns in namespaces:
            qid = ns[len(NS_PREFIX):]
            if qid not in keep_ids:
                log.info('removing stale namespace %s', ns)
                dm = dnsmasq.Dnsmasq(self.conf, qid)
                if dm.adopt():
                    dm.stop()
                self.driver.remove(ns, device_names(qid)[0])
        for dev in devices - keep_devices:
            log.info('removing stale device %s', dev)
            self.driver.remove(None, dev)
        try:
            state_dirs = os.listdir(self.conf.state_dir)
        except FileNotFoundError:
            state_dirs = []
        for qid in state_dirs:
            if qid not in keep_ids and os.path.isfile(
                    os.path.join(self.conf.state_dir, qid, 'pid')):
                dm = dnsmasq.Dnsmasq(self.conf, qid)
                if dm.adopt():
                    dm.stop()
                dm.remove_files()

    # -- queries (control socket) ---------------------------------------------
    def status(self):
        with self._lock:
            plans = dict(self.plans)
            runtimes = dict(self.runtimes)
        present = bridges.present({n.name for n in self.listed})
        networks = []
        for net in self.listed:
            plan = plans.get(net.quantum_id)
            runtime = runtimes.get(net.quantum_id)
            entry = {
                'name': net.name, 'quantumId': net.quantum_id,
                'bridge_present': net.name in present,
                'namespace': desired.namespace_name(net.quantum_id)
                if runtime else None,
                'served': bool(runtime and runtime.plan and
                               runtime.dnsmasq.alive()),
                'reason': None, 'problems': [],
                'dhcp_ips': [], 'dnsmasq_pid': None, 'hosts': 0,
                'last_sync': None, 'error': None,
            }
            if plan is not None:
                entry['problems'] = list(plan.problems)
                if not plan.served:
                    entry['reason'] = plan.reason
            elif self.source_error:
                entry['reason'] = 'IPAM source unreachable'
            else:
                entry['reason'] = 'not reconciled yet'
            if runtime is not None:
                dm = runtime.dnsmasq
                if runtime.plan is not None:
                    entry['dhcp_ips'] = list(runtime.plan.interface.addresses)
                entry.update(dnsmasq_pid=dm.pid, hosts=len(dm.written),
                             hosts_loaded=dm.loaded_count(),
                             last_sync=runtime.last_sync,
                             error=runtime.error, reloads=dm.reloads,
                             restarts=dm.restarts, adopted=dm.adopted)
                if runtime.error and not entry['reason']:
                    entry['reason'] = runtime.error
            networks.append(entry)
        return {
            'pid': os.getpid(), 'host': self.conf.host,
            'started_at': self.started_at,
            'last_reconcile': self.last_reconcile,
            'networks_file': self.conf.networks_file,
            'networks_file_error': self.networks_error,
            'source': self._source_status(),
            'networks': networks,
        }

    def _source_status(self):
        status = self.source.status()
        if self.source_error:     # the last snapshot failed
            status.update(reachable=False, error=self.source_error)
            status.setdefault('unreachable_since', self.source_error_since)
            status['unreachable_since'] = (status['unreachable_since']
                                           or self.source_error_since)
        return status

    def why(self, mac):
        try:
            mac = desired.normalize_mac(mac)
        except ValueError as e:
            raise control.ControlError(str(e)) from None
        with self._lock:
            plans = dict(self.plans)
            runtimes = dict(self.runtimes)
        answer = {'mac': mac, 'network': None, 'listed': False,
                  'port': None, 'in_dnsmasq': False, 'verdict': None}
        for qid, plan in plans.items():
            listed = next(n for n in self.listed if n.quantum_id == qid)
            if plan.served and mac in plan.macs:
                port_id = plan.macs[mac]
                runtime = runtimes.get(qid)
                written = runtime.dnsmasq.written if runtime else {}
                loaded = bool(runtime) and runtime.dnsmasq.loaded(port_id)
                answer.update(network=listed.name, quantumId=qid, listed=True,
                              port=port_id, written=port_id in written,
                              in_dnsmasq=loaded,
                              entry=plan.hosts[port_id].strip())
                answer['verdict'] = (
                    'served: loaded by dnsmasq pid %s' % runtime.dnsmasq.pid
                    if loaded else 'known to the IPAM, not yet loaded by '
                    'dnsmasq' + (' (written, waiting for dnsmasq to read it)'
                                 if port_id in written else ''))
                return answer
        for qid, plan in plans.items():
            if plan.served and mac in plan.skipped:
                answer.update(network=None, quantumId=qid, listed=True,
                              verdict='not served: ' + plan.skipped[mac])
                return answer
        answer['verdict'] = ('no port with this MAC on any network listed '
                             'for this host (%s)' % (', '.join(
                                 n.name for n in self.listed) or 'none'))
        return answer

    # -- the readiness gate ---------------------------------------------------
    def readiness(self, macs):
        """mac -> None when dnsmasq can answer it now, else why not."""
        with self._lock:
            plans = dict(self.plans)
            runtimes = dict(self.runtimes)
        answers = {}
        for mac in macs:
            answers[mac] = self._why_not(mac, plans, runtimes)
        return answers

    def _why_not(self, mac, plans, runtimes):
        for qid, plan in plans.items():
            if not plan.served:
                continue
            port_id = plan.macs.get(mac)
            if port_id is None:
                continue
            runtime = runtimes.get(qid)
            if runtime is None or runtime.plan is None:
                return 'network %s is not configured yet' % plan.name
            if runtime.error:
                return 'network %s: %s' % (plan.name, runtime.error)
            entry = runtime.dnsmasq.written.get(port_id)
            if entry is None or entry[1] != plan.hosts[port_id]:
                return 'port %s is not written for dnsmasq yet' % port_id
            if not runtime.dnsmasq.loaded(port_id):
                return 'port %s: dnsmasq has not loaded it yet' % port_id
            return None
        for plan in plans.values():
            if plan.served and mac in plan.skipped:
                return 'network %s: %s' % (plan.name, plan.skipped[mac])
        not_served = ['%s (%s)' % (p.name, p.reason) for p in plans.values()
                      if not p.served]
        if self.source_error:
            return 'IPAM source unreachable: %s' % self.source_error
        return 'no port with this MAC on a served network' + (
            '; not served: ' + ', '.join(not_served) if not_served else '')

    def wait(self, request):
        """Block until dnsmasq can answer every MAC, or the timeout.
        Always syncs with the IPAM first: a port created just before the
        VM starts must not be missed."""
        macs = request.get('macs')
        timeout = request.get('timeout', 30)
        if not isinstance(macs, list) or not macs:
            raise control.ControlError('"macs" must be a non-empty list')
        if not isinstance(timeout, (int, float)) or isinstance(
                timeout, bool) or not 0 <= timeout <= self.conf.wait_max:
            raise control.ControlError('"timeout" must be 0-%s seconds'
                                       % self.conf.wait_max)
        try:
            macs = [desired.normalize_mac(m) for m in macs]
        except ValueError as e:
            raise control.ControlError(str(e)) from None
        started = time.monotonic()
        deadline = started + timeout
        target = self.request_sync()['round']
        while True:
            with self._reconciled:
                synced = self._done_rounds >= target
            answers = self.readiness(macs) if synced else {
                m: 'the agent has not synced with the IPAM yet' for m in macs}
            if all(reason is None for reason in answers.values()) or \
                    time.monotonic() >= deadline:
                break
            with self._reconciled:
                self._reconciled.wait(min(0.005, max(
                    0, deadline - time.monotonic())))
        return {'ready': [m for m, r in answers.items() if r is None],
                'not_ready': {m: r for m, r in answers.items()
                              if r is not None},
                'waited': round(time.monotonic() - started, 4)}

    def hosts(self, network):
        for net in self.listed:
            if network in (net.name, net.quantum_id):
                runtime = self.runtimes.get(net.quantum_id)
                if runtime is None:
                    return {'network': net.name, 'quantumId': net.quantum_id,
                            'hosts': []}
                entries = sorted(
                    (line for _, text in runtime.dnsmasq.written.values()
                     for line in text.splitlines() if line))
                return {'network': net.name, 'quantumId': net.quantum_id,
                        'hosts': entries}
        raise control.ControlError('network %r is not in the networks file'
                                   % network)


def check_traversable(path):
    """dnsmasq drops privileges: it must be able to reach its files."""
    path = os.path.abspath(path)
    while path != '/':
        if not os.stat(path).st_mode & 0o001:
            log.error('%s is not searchable by others: dnsmasq, running '
                      'unprivileged, will not read its files below it', path)
        path = os.path.dirname(path)


def check_inotify_room(networks):
    """Each dnsmasq takes an inotify instance, counted against its user:
    past fs.inotify.max_user_instances, dnsmasq exits at start ("failed to
    create inotify")."""
    try:
        with open('/proc/sys/fs/inotify/max_user_instances') as f:
            limit = int(f.read())
    except (OSError, ValueError):
        return
    if networks > limit - 8:
        log.error('%d networks listed, but fs.inotify.max_user_instances is '
                  '%d: dnsmasq beyond that fails to start; raise it '
                  '(/usr/lib/sysctl.d/60-vdsm-dhcp.conf does)',
                  networks, limit)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='vdsm-dhcp-agent',
        description='Serve DHCP for the VDSM networks in the networks file.')
    parser.add_argument('--config-file', help='default: $%s or %s'
                        % (config.CONFIG_ENV, config.DEFAULT_CONFIG_FILE))
    parser.add_argument('--cleanup', action='store_true',
                        help='remove every namespace, veth, dnsmasq and '
                             'state of ours, then exit')
    args = parser.parse_args(argv)
    try:
        conf = config.load(args.config_file)
    except cfg.Error as e:
        print('vdsm-dhcp-agent: %s' % e, file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.DEBUG if conf.debug else logging.INFO,
        format='%(asctime)s %(levelname)s %(name)s: %(message)s',
        stream=sys.stderr)
    try:
        if args.cleanup:
            Agent(conf).clean_stale(set())
        else:
            Agent(conf).run()
    except Exception:
        log.exception('agent failed')
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
