"""The agent's event loop: serve DHCP for the networks in the networks file.

Loop: wait for a change (SIGHUP: networks file; the source; a bridge; a
dnsmasq that died; a control `sync`), then reconcile: desired state
(pure, agent/desired.py) against what runs, networks applied in
parallel (NetworkRuntime.apply). A change that arrives while applying is
picked up by the next round: bursts coalesce. An error in one network
marks only that network for a retry with backoff.

Stopping (SIGTERM) leaves dnsmasq running, so a restart of the agent never
interrupts DHCP; the next agent adopts it. With an empty networks file
(setDHCP([])), everything is torn down before the agent exits.

The program around it (arguments, run lock, signals blocked during
start-up, systemd notify) is agent/service.py; each network's runtime is
agent/runtime.py.
"""
import concurrent.futures
import logging
import os
import signal
import threading
import time

from vdsm_dhcp import errors
from vdsm_dhcp.agent import control, desired, metrics
from vdsm_dhcp.agent.adoption import Adoption
from vdsm_dhcp.agent.gate import Gate
from vdsm_dhcp.agent.queries import Queries
from vdsm_dhcp.agent.runtime import NetworkRuntime, backoff, teardown
from vdsm_dhcp.agent.lifecycle import (AGENT_SIGNALS, check_inotify_room,
                                     hold_run_lock, notify_systemd)
from vdsm_dhcp.dnsmasq import readiness
from vdsm_dhcp.host import bridges
from vdsm_dhcp.host.interface import device_names, load_driver
from vdsm_dhcp.setdhcp import networks_file
from vdsm_dhcp.sources.base import SourceError
from vdsm_dhcp.sources.factory import make_source

log = logging.getLogger('vdsm_dhcp.agent')


class Agent(Queries, Gate, Adoption):
    """The agent: its state, the event loop and the reconcile. Queries,
    the readiness gate and adoption are its parts in their own modules."""

    def __init__(self, conf, source=None, driver=None):
        self.conf = conf
        self.source = source or make_source(conf)
        self.driver = driver or load_driver(conf)
        self.listed = []
        self.served_ids = set()      # listed at the last reconcile
        self.plans = {}
        self.plan_memo = {}          # desired.compute's per-port memo
        self.runtimes = {}
        self.source_error = None     # why the last snapshot failed
        self.networks_error = None
        self.host_problem = None     # e.g. no room for more inotify
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
        self.host_problem = check_inotify_room(len(self.listed))
        self.adopt_or_clean()
        self.source.start(self.source_changed)
        watch = bridges.BridgeWatch(self._bridge_event)
        watch.start()
        log.info('agent started (pid %d, host %s, %d listed networks, '
                 'bridge events from %s)', os.getpid(), self.conf.host,
                 len(self.listed), watch.source)
        next_resync = 0
        self._wake.set()     # the first round now, not a supervise tick later
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
        self.driver.close()

    def _round_failed(self, exc):
        """An unexpected error in a round: log it once per distinct error,
        retry the whole round (full) with a back-off up to retry_max."""
        self._round_failures += 1
        delay = backoff(self._round_failures, self.conf.retry_max)
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
        ours = {device_names(unit)[0] for runtime in
                list(self.runtimes.values()) for unit in runtime.units}
        if ifname in ours or any(
                ifname in (n.name, device_names(n.quantum_id)[0])
                for n in self.listed):
            log.info('device event for %s', ifname)
            self.changed()

    def _supervise(self):
        for runtime in list(self.runtimes.values()):
            if runtime.supervise():
                runtime.died()
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
            # the source keeps (and logs) its reachability: sources/base
            self.source_error = str(e)
            self._retry_all()
            return
        self.source_error = None
        present = bridges.present({n.name for n in self.listed})
        plans = desired.compute(self.listed, snap, present, self.conf.host,
                                self.plan_memo, self.conf.dnsmasq.shard_size)
        fetch_errors = snap.errors
        del snap     # the parsed document: freed while networks are applied
        with self._lock:
            self.plans = plans
        # shards add dnsmasq (one inotify instance each) as networks grow
        self.host_problem = check_inotify_room(sum(
            len(p.shards) for p in plans.values() if p.served))
        jobs = {}
        now = time.monotonic()
        for qid, plan in plans.items():
            runtime = self.runtimes.get(qid)
            if not plan.served:
                if runtime is not None and qid in fetch_errors:
                    continue   # not fetched this time: dnsmasq keeps serving
                if runtime is not None:
                    self._teardown(qid, plan.reason)
                continue
            if runtime is None:
                with self._lock:
                    runtime = self.runtimes[qid] = NetworkRuntime(
                        self.conf, qid, self._lock)
            elif runtime.retry_at and runtime.retry_at > now and \
                    runtime.plan is not None:
                continue   # backing off; the retry comes when due
            elif not full and runtime.plan == plan and not runtime.error \
                    and runtime.alive():
                continue   # the IPAM changed elsewhere
            jobs[self._pool.submit(runtime.apply, plan,
                                    self.driver)] = runtime
        for future in concurrent.futures.as_completed(jobs):
            runtime = jobs[future]
            try:
                future.result()
            except Exception as e:
                runtime.failed(e)
                self._wake.set()
        self.last_reconcile = time.time()

    def _retry_all(self):
        for runtime in self.runtimes.values():
            runtime.retry_at = time.monotonic() + self.conf.retry_max / 4

    def _teardown(self, qid, reason):
        with self._lock:
            runtime = self.runtimes.pop(qid, None)
        teardown(self.conf, self.driver, qid, runtime, reason)
