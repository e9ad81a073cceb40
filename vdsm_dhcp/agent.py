"""vdsm-dhcp-agent: serve DHCP for the networks in the networks file.

Loop: wait for a change (SIGHUP: networks file; the source; a bridge; a
dnsmasq that died; a control `sync`), then reconcile: desired state (pure,
desired.py) against what runs, networks applied in parallel. A change that
arrives while applying is picked up by the next round: bursts coalesce.
An error in one network marks only that network for a retry with backoff.

Stopping (SIGTERM) leaves dnsmasq running, so a restart of the agent never
interrupts DHCP; the next agent adopts it. With an empty networks file
(setDHCP([])), everything is torn down before the agent exits.

Reloadable from its first instant: SIGHUP and SIGTERM are blocked from
before the slow imports until run() has its handlers in place, so one
that arrives during start-up waits and is then handled, never a death.
Under systemd (Type=notify), READY=1 is sent once the handlers and the
control socket are up. One agent per run_dir (an flock): a second one
exits with EXIT_ALREADY_RUNNING and touches nothing.
"""
import os
import signal
import sys

AGENT_SIGNALS = {signal.SIGHUP, signal.SIGTERM, signal.SIGINT}
# Only in the agent program (its console script, or python -m): other
# programs import this module for its options.
if __name__ == '__main__' or os.path.basename(
        (getattr(sys, 'argv', None) or [''])[0]) == 'vdsm-dhcp-agent':
    signal.pthread_sigmask(signal.SIG_BLOCK, AGENT_SIGNALS)

import argparse  # noqa: E402
import concurrent.futures  # noqa: E402
import fcntl  # noqa: E402
import logging  # noqa: E402
import socket  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

from oslo_config import cfg  # noqa: E402

from vdsm_dhcp import bridges, config, control, desired, dnsmasq  # noqa
from vdsm_dhcp import errors, networks_file  # noqa: E402
from vdsm_dhcp import leasefile, logs, metrics, readiness  # noqa: E402
from vdsm_dhcp.fileutil import remove_leftovers  # noqa: E402
from vdsm_dhcp.interface import NS_PREFIX, device_names  # noqa: E402
from vdsm_dhcp.interface import load_driver  # noqa: E402
from vdsm_dhcp.source import SourceError, make_source  # noqa: E402

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


# Exit statuses a restart cannot cure: the unit does not restart on them
# (vdsm_dhcp.systemd's RestartPreventExitStatus; keep the two equal).
EXIT_BAD_CONFIG = 2
EXIT_ALREADY_RUNNING = 3
RUN_LOCK = 'agent.lock'
# A dnsmasq that dies within this many seconds of its start counts as a
# crash loop: its next start waits, doubling each time up to retry_max.
CRASH_WINDOW = 10.0


# `wait`: the most MACs asked at once (a VM has a few vNICs), and the
# longest it sleeps without a wake-up (only a missed one would need it)
MAX_MACS = 1024
WAIT_FALLBACK = 0.5


class NetworkRuntime:
    """What this agent runs for one network, and how that went."""

    def __init__(self, conf, quantum_id):
        self.quantum_id = quantum_id
        self.dnsmasq = dnsmasq.Dnsmasq(conf, quantum_id)
        self.plan = None
        self.error = None
        self.failures = 0
        self.crashes = 0          # dnsmasq deaths soon after a start, in a row
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
        self._list_read = False      # a good networks file was read once
        self._clean_pending = False  # start-up cleaning put off (bad list)
        self._run_lock = None
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
        self._load_events = 0        # dnsmasq loaded entries: wakes `wait`
        self._round_error = None     # the last unexpected error of a round
        self._round_failures = 0
        self._round_retry_at = 0
        readiness.WATCHER.listen(self._loads_changed)
        self.metrics = metrics.Metrics(lambda: self.status(leases=True))
        readiness.on_loaded = self.metrics.loaded_after
        self.control = control.ControlServer(conf, {
            'status': lambda req: self.status(),
            'sync': lambda req: self.request_sync(),
            'why': lambda req: self.why(req.get('mac')),
            'hosts': lambda req: self.hosts(req.get('network')),
            'leases': lambda req: self.leases(req.get('network')),
            'wait': self.wait,
            'metrics': lambda req: self.metrics.text(),
        }, on_error=self.metrics.control_error)

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

    def request_sync(self, full=True):
        """Ask for a reconcile; returns the round that will include every
        change made before this call. full=False: only what the IPAM
        changed (the readiness gate's sync: re-applying every network per
        VM start would cost a boot storm dearly)."""
        with self._reconciled:
            target = self._started_rounds + 1
        if full:
            self.changed()
        else:
            self.source_changed()
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
        # handlers, then unblock: a signal that came during start-up (held
        # since the module was loaded) is handled now
        for sig in AGENT_SIGNALS:
            signal.signal(sig, self._on_signal)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, AGENT_SIGNALS)
        self._run_lock = hold_run_lock(self.conf.run_dir)
        self._prepare_state_dir()
        self._read_networks_file()
        self.control.start()
        notify_systemd('READY=1')
        try:
            self.metrics.start(self.conf)
        except (OSError, ValueError) as e:   # e.g. the port is taken
            log.error('metrics: cannot start the endpoint %s: %s',
                      self.conf.metrics.listen, e)
        check_inotify_room(len(self.listed))
        self.adopt_or_clean()
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
            now = time.monotonic()
            if now < self._round_retry_at:
                continue     # the last round failed: back off
            try:
                self._supervise()
                due = any(r.retry_at and r.retry_at <= now
                          for r in self.runtimes.values())
                if now >= next_resync:
                    self._full = True
                if self._dirty or due or self._full:
                    full, self._dirty, self._full = self._full, False, False
                    self.reconcile(full)
                    next_resync = now + self.conf.resync_interval
                self._round_ok()
            except Exception as e:   # a bug of ours: never the agent's end
                self._round_failed(e)
        notify_systemd('STOPPING=1')
        self.metrics.stop()
        watch.stop()
        self.control.stop()
        self._read_networks_file()
        if self._list_read and not self.listed and not self.networks_error:
            log.info('stopping with an empty networks list: tearing down')
            self.teardown_all()
        else:
            log.info('stopping; dnsmasq keeps serving %d networks',
                     len(self.runtimes))
        self.source.stop()
        self._pool.shutdown()

    def _round_failed(self, exc):
        """An unexpected error in a round: log it once per distinct error,
        retry the whole round (full) with a back-off up to retry_max."""
        self._round_failures += 1
        delay = min(self.conf.retry_max, 0.5 * 2 ** (self._round_failures - 1))
        self._round_retry_at = time.monotonic() + delay
        self._full = True
        if repr(exc) != self._round_error:
            log.exception('reconcile round failed (retrying in %.1fs)', delay)
        self._round_error = repr(exc)

    def _round_ok(self):
        if self._round_error:
            log.info('reconcile rounds work again')
        self._round_error, self._round_failures = None, 0
        self._round_retry_at = 0

    def _bridge_event(self, ifname):
        """A listed network's bridge, or one of our veth ends (deleted
        under us: drift), came or went."""
        if any(ifname in (n.name, device_names(n.quantum_id)[0])
               for n in self.listed):
            log.info('device event for %s', ifname)
            self.changed()

    def _prepare_state_dir(self):
        """Never fatal: a full or read-only file system shows, network by
        network, as an error in `status`, and is retried."""
        try:
            os.makedirs(self.conf.state_dir, mode=0o755, exist_ok=True)
            check_traversable(self.conf.state_dir)
        except OSError as e:
            log.error('state dir %s: %s', self.conf.state_dir, e)
        # temp files of a write the previous agent did not finish: with
        # the run lock held, nobody else writes there
        for qid in state_ids(self.conf.state_dir):
            files = dnsmasq.Files(self.conf.state_dir, qid)
            for directory in (files.base, files.tmp):
                for name in remove_leftovers(directory):
                    log.info('removed %s/%s, left by a crash',
                             directory, name)

    def _supervise(self):
        for runtime in list(self.runtimes.values()):
            dm = runtime.dnsmasq
            dm.rotate_log()
            if dm.cmdline and not dm.alive():
                self._dnsmasq_died(runtime)
            elif runtime.crashes and (dm.uptime() or 0) >= CRASH_WINDOW:
                runtime.crashes = 0     # up for a while: no crash loop

    def _dnsmasq_died(self, runtime):
        """Restart at once, unless it keeps dying soon after each start:
        then each next start waits twice as long (up to retry_max); the
        error and the wait show in `status`."""
        dm = runtime.dnsmasq
        pid, lived = dm.pid, dm.uptime()
        tail = dm.log_tail(300)
        dm.forget()
        if lived is not None and lived < CRASH_WINDOW:
            runtime.crashes += 1
        else:
            runtime.crashes = 1
        delay = 0 if runtime.crashes < 2 else min(
            self.conf.retry_max, 0.5 * 2 ** (runtime.crashes - 2))
        if delay:
            with self._lock:
                runtime.retry_at = time.monotonic() + delay
                runtime.error = ('dnsmasq exited %d times in a row within '
                                 '%ds of its start; next start in %.1fs'
                                 % (runtime.crashes, CRASH_WINDOW, delay))
        log.error('network %s: dnsmasq pid %s died%s; restarting%s: %s',
                  runtime.quantum_id, pid,
                  '' if lived is None else ' %.1fs after its start' % lived,
                  ' in %.1fs' % delay if delay else '', tail,
                  extra=logs.network(runtime.quantum_id))
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
        self._list_read = True
        with self._lock:
            self.listed = listed

    # -- reconcile ----------------------------------------------------------
    def reconcile(self, full=True):
        with self._reconciled:
            self._started_rounds += 1
        started = time.monotonic()
        try:
            self._reconcile(full)
        finally:
            self.metrics.round_took(time.monotonic() - started)
            with self._reconciled:
                self._done_rounds = self._started_rounds
                self._reconciled.notify_all()

    def _reconcile(self, full):
        self._read_networks_file()
        if not self._list_read:
            return   # unreadable since the start: touch nothing (adopted)
        listed_ids = {n.quantum_id for n in self.listed}
        self._teardown_many([q for q in self.runtimes if q not in listed_ids],
                            'no longer in the networks file')
        if self._clean_pending:    # what start-up could not do
            self._clean_pending = False
            self.clean_stale(listed_ids)
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
                if runtime is not None and qid in snap.errors:
                    continue   # not fetched this time: dnsmasq keeps serving
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
                log.warning('network %s: %s', plan.name, problem,
                            extra=logs.network(qid, plan.name))
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
                         'restarting it', plan.name,
                         extra=logs.network(qid, plan.name))
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
                log.info('network %s: recovered', plan.name,
                         extra=logs.network(qid, plan.name))
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
                      runtime.quantum_id, exc, delay,
                      extra=logs.network(runtime.quantum_id))
        runtime.error = str(exc)
        self._wake.set()

    def _retry_all(self):
        for runtime in self.runtimes.values():
            runtime.retry_at = time.monotonic() + self.conf.retry_max / 4

    def _teardown(self, qid, reason):
        log.info('network %s: tearing down (%s)', qid, reason,
                 extra=logs.network(qid))
        with self._lock:
            runtime = self.runtimes.pop(qid, None)
        dm = runtime.dnsmasq if runtime else dnsmasq.Dnsmasq(self.conf, qid)
        dm.stop()
        # the files before the namespace: no state is left once the
        # namespace (what goes last, and is watched) is gone
        dm.remove_files()
        self.driver.unplug(qid)

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
        that is not listed (namespaces, veths, dnsmasq, state). With a
        networks file that cannot be read, adopt every dnsmasq of ours and
        remove nothing until a good list is read (the list is unknown, not
        empty)."""
        if not self._list_read:
            log.error('the networks file cannot be read at start: keeping '
                      'every dnsmasq of ours as it is until it can')
            for qid in state_ids(self.conf.state_dir):
                runtime = NetworkRuntime(self.conf, qid)
                if runtime.dnsmasq.adopt():
                    with self._lock:
                        self.runtimes[qid] = runtime
            self._clean_pending = True
            return
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
                dm.remove_files()
                self.driver.remove(ns, device_names(qid)[0])
        for dev in devices - keep_devices:
            log.info('removing stale device %s', dev)
            self.driver.remove(None, dev)
        for qid in state_ids(self.conf.state_dir):
            if qid not in keep_ids and os.path.isfile(
                    os.path.join(self.conf.state_dir, qid, 'pid')):
                dm = dnsmasq.Dnsmasq(self.conf, qid)
                if dm.adopt():
                    dm.stop()
                dm.remove_files()

    # -- queries (control socket) ---------------------------------------------
    def _snapshot(self):
        """The queries' view, taken at one moment: the reconcile replaces
        the list and the plans and changes each dnsmasq's entries while a
        query runs (iterating the live dicts raised "changed size")."""
        with self._lock:
            return list(self.listed), dict(self.plans), dict(self.runtimes)

    @staticmethod
    def _written(runtime):
        """What dnsmasq was given (port id -> (file, entry)), read once:
        Dnsmasq publishes a new dict per change, never edits one in place
        (iterating the live one raised "changed size during iteration")."""
        return runtime.dnsmasq.written if runtime else {}

    def status(self, leases=False):
        """leases=True adds each network's lease count (reads the lease
        files: the metrics ask, the hooks' status does not)."""
        listed, plans, runtimes = self._snapshot()
        present = bridges.present({n.name for n in listed})
        networks = []
        for net in listed:
            plan = plans.get(net.quantum_id)
            runtime = runtimes.get(net.quantum_id)
            applied = runtime.plan if runtime else None
            entry = {
                'name': net.name, 'quantumId': net.quantum_id,
                'bridge_present': net.name in present,
                'namespace': desired.namespace_name(net.quantum_id)
                if runtime else None,
                'served': bool(applied and runtime.dnsmasq.alive()),
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
                if applied is not None:
                    entry['dhcp_ips'] = list(applied.interface.addresses)
                entry.update(dnsmasq_pid=dm.pid, hosts=len(dm.written),
                             hosts_loaded=dm.loaded_count(),
                             last_sync=runtime.last_sync,
                             error=runtime.error, reloads=dm.reloads,
                             restarts=dm.restarts, adopted=dm.adopted,
                             crashes=runtime.crashes,
                             retry_in=_seconds_until(runtime.retry_at))
                if runtime.error and not entry['reason']:
                    entry['reason'] = runtime.error
                if leases:
                    entry['leases'] = self._lease_count(net.quantum_id)
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
        listed, plans, runtimes = self._snapshot()
        names = {n.quantum_id: n.name for n in listed}
        answer = {'mac': mac, 'network': None, 'listed': False,
                  'port': None, 'in_dnsmasq': False, 'verdict': None}
        for qid, plan in plans.items():
            if plan.served and mac in plan.macs:
                port_id = plan.macs[mac]
                runtime = runtimes.get(qid)
                written = self._written(runtime)
                loaded = bool(runtime) and runtime.dnsmasq.loaded(port_id)
                answer.update(network=names.get(qid, plan.name),
                              quantumId=qid, listed=True,
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
                                 n.name for n in listed) or 'none'))
        return answer

    # -- the readiness gate ---------------------------------------------------
    def readiness(self, macs):
        """mac -> None when dnsmasq can answer it now, else why not."""
        _, plans, runtimes = self._snapshot()
        written = {}     # network -> its entries, read once per call
        return {mac: self._why_not(mac, plans, runtimes, written)
                for mac in macs}

    def _why_not(self, mac, plans, runtimes, written):
        for qid, plan in plans.items():
            if not plan.served:
                continue
            port_id = plan.macs.get(mac)
            if port_id is None:
                continue
            runtime = runtimes.get(qid)
            if runtime is None or runtime.plan is None:
                return 'network %s is not configured yet' % plan.name
            error = runtime.error
            if error:
                return 'network %s: %s' % (plan.name, error)
            if qid not in written:
                written[qid] = self._written(runtime)
            entry = written[qid].get(port_id)
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
        source_error = self.source_error
        if source_error:
            return 'IPAM source unreachable: %s' % source_error
        return 'no port with this MAC on a served network' + (
            '; not served: ' + ', '.join(not_served) if not_served else '')

    def _loads_changed(self):
        """dnsmasq loaded entries (readiness.WATCHER): wake the waiters."""
        with self._reconciled:
            self._load_events += 1
            self._reconciled.notify_all()

    def wait(self, request):
        """Block until dnsmasq can answer every MAC, or the timeout.
        Always syncs with the IPAM first: a port created just before the
        VM starts must not be missed. Woken by what can change an answer
        (a reconcile round ends, dnsmasq loads entries), not by polling;
        WAIT_FALLBACK only bounds a missed wake-up. A timeout above
        wait_max is served as wait_max (the reply says so): refusing it
        made a hook retry in a loop until its own timeout."""
        macs = request.get('macs')
        timeout = request.get('timeout', 30)
        if not isinstance(macs, list) or not macs or len(macs) > MAX_MACS:
            raise control.ControlError('"macs" must be a list of 1-%d MACs'
                                       % MAX_MACS)
        if not isinstance(timeout, (int, float)) or isinstance(
                timeout, bool) or not timeout >= 0:     # NaN too
            raise control.ControlError('"timeout" must be a number of '
                                       'seconds, 0 or more')
        clamped = timeout > self.conf.wait_max
        timeout = min(timeout, self.conf.wait_max)
        try:
            macs = [desired.normalize_mac(m) for m in macs]
        except ValueError as e:
            raise control.ControlError(str(e)) from None
        started = time.monotonic()
        deadline = started + timeout
        answers = self.readiness(macs)
        if all(reason is None for reason in answers.values()):
            # dnsmasq has loaded them all: their ports exist, nothing to
            # sync first (a VM start on a warm host costs one round trip)
            return self._wait_result(answers, started, clamped)
        target = self.request_sync(full=False)['round']

        def events():
            return self._done_rounds, self._load_events

        while True:
            with self._reconciled:
                seen = events()
            answers = self.readiness(macs) if seen[0] >= target else {
                m: 'the agent has not synced with the IPAM yet' for m in macs}
            left = deadline - time.monotonic()
            if all(reason is None for reason in answers.values()) or \
                    left <= 0 or control.peer_gone():
                break
            with self._reconciled:
                self._reconciled.wait_for(lambda: events() != seen,
                                          min(WAIT_FALLBACK, left))
        return self._wait_result(answers, started, clamped)

    def _wait_result(self, answers, started, clamped):
        self.metrics.wait_answered('ready' if all(
            r is None for r in answers.values()) else 'not_ready')
        for mac, reason in answers.items():
            if reason is not None:   # a VM starts without its DHCP ready
                log.warning('readiness gate: %s not ready after %.1fs: %s',
                            mac, time.monotonic() - started, reason,
                            extra=logs.mac(mac))
        result = {'ready': [m for m, r in answers.items() if r is None],
                  'not_ready': {m: r for m, r in answers.items()
                                if r is not None},
                  'waited': round(time.monotonic() - started, 4)}
        if clamped:
            result['timeout_clamped_to'] = self.conf.wait_max
        return result

    def _listed(self, network):
        """A listed network by name or quantumId."""
        if not isinstance(network, str):
            raise control.ControlError('"network" must be a network name '
                                       'or quantumId')
        for net in list(self.listed):
            if network in (net.name, net.quantum_id):
                return net
        raise control.ControlError('network %r is not in the networks file'
                                   % network)

    def hosts(self, network):
        net = self._listed(network)
        with self._lock:
            runtime = self.runtimes.get(net.quantum_id)
        entries = sorted(({'port': port_id, 'entry': line}
                          for port_id, (_, text) in
                          self._written(runtime).items()
                          for line in text.splitlines() if line),
                         key=lambda e: (e['entry'], e['port']))
        return {'network': net.name, 'quantumId': net.quantum_id,
                'hosts': entries}

    def _lease_count(self, qid):
        try:
            return len(leasefile.read(dnsmasq.Files(
                self.conf.state_dir, qid).leases)[0])
        except OSError:
            return None

    def leases(self, network):
        """dnsmasq's leases of a network (the CLI asks: it never reads the
        agent's files); lines that do not parse are counted, not fatal."""
        net = self._listed(network)
        path = dnsmasq.Files(self.conf.state_dir, net.quantum_id).leases
        try:
            leases, unparsed = leasefile.read(path)
        except OSError as e:
            raise control.ControlError('cannot read the leases of %s: %s'
                                       % (net.name, e.strerror or e))
        return {'network': net.name, 'quantumId': net.quantum_id,
                'leases': leases, 'unparsed_lines': unparsed}


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


class AlreadyRunning(Exception):
    pass


def hold_run_lock(run_dir):
    """One agent per run_dir: an exclusive flock on RUN_DIR/agent.lock,
    held (the returned fd, close-on-exec: dnsmasq must not inherit it)
    for the life of the process. Taken before the control socket, so a
    second agent never unlinks the first one's socket."""
    os.makedirs(run_dir, mode=0o755, exist_ok=True)
    path = os.path.join(run_dir, RUN_LOCK)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = os.read(fd, 32).decode(errors='replace').strip()
        finally:
            os.close(fd)
        raise AlreadyRunning(
            'another vdsm-dhcp agent (pid %s) runs with run_dir %s (it '
            'holds %s): exiting, leaving it alone' % (holder or '?',
                                                      run_dir, path))
    os.ftruncate(fd, 0)
    os.write(fd, b'%d\n' % os.getpid())
    return fd


def notify_systemd(state):
    """sd_notify(3) with the standard library: one datagram to
    $NOTIFY_SOCKET; nothing when not run by systemd (Type=notify)."""
    path = os.environ.get('NOTIFY_SOCKET')
    if not path:
        return False
    if path.startswith('@'):    # an abstract socket
        path = '\0' + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(path)
            sock.sendall(state.encode())
    except OSError as e:
        log.warning('cannot tell systemd %r: %s', state, e)
        return False
    return True


def _seconds_until(monotonic_time):
    if monotonic_time is None:
        return None
    return round(max(0.0, monotonic_time - time.monotonic()), 1)


def state_ids(state_dir):
    """The network ids with a directory in state_dir (our marks and
    other dot files are not networks)."""
    try:
        names = os.listdir(state_dir)
    except OSError:
        return []
    return [n for n in names if not n.startswith('.') and
            os.path.isdir(os.path.join(state_dir, n))]


def main(argv=None):
    # when main is reached without the module-level block (imported by
    # another program first): block until run() has its handlers
    signal.pthread_sigmask(signal.SIG_BLOCK, AGENT_SIGNALS)
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
        return EXIT_BAD_CONFIG
    logs.setup(debug=conf.debug)
    config.warn_misplaced_secrets(conf.config_path)
    try:
        if args.cleanup:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, AGENT_SIGNALS)
            lock = hold_run_lock(conf.run_dir)   # never under a live agent
            try:
                Agent(conf).clean_stale(set())
            finally:
                os.close(lock)
        else:
            Agent(conf).run()
    except AlreadyRunning as e:
        log.error('%s', e)
        return EXIT_ALREADY_RUNNING
    except Exception:
        log.exception('agent failed')
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
