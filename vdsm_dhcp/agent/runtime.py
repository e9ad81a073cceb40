"""NetworkRuntime: what this agent runs for one network (its dnsmasq, the
plan applied, the last error and the back-off), and what is done to it:
apply(plan) (refresh dnsmasq's files, or restart dnsmasq when its command
line changes), failed() and died() (the back-offs), and teardown().
"""
import concurrent.futures
import logging
import signal
import threading
import time

from vdsm_dhcp import logs
from vdsm_dhcp.dnsmasq import conf as dnsmasq_conf
from vdsm_dhcp.dnsmasq import release
from vdsm_dhcp.dnsmasq.process import Dnsmasq
from vdsm_dhcp.host.interface import device_names

log = logging.getLogger('vdsm_dhcp.agent')

# A dnsmasq that dies within this many seconds of its start counts as a
# crash loop: its next start waits, doubling each time up to retry_max.
CRASH_WINDOW = 10.0


_pool = None
_pool_lock = threading.Lock()


def _shard_pool():
    """Threads for the shards of big networks: apart from the agent's
    pool (whose thread waits here for them)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(
                8, thread_name_prefix='shard')
        return _pool


def backoff(attempt, retry_max):
    """Seconds to wait before retry `attempt` (1, 2, ...): 0.5 s, doubling
    each time, up to retry_max. Every back-off of the agent is this one."""
    return min(retry_max, 0.5 * 2 ** (attempt - 1))


class NetworkRuntime:
    """What this agent runs for one network, and how that went. `lock`
    (the agent's) guards the fields the queries read.

    `units`: unit id -> Dnsmasq, one per shard (a small network has one,
    under its quantumId). The dict is replaced, never changed in place: a
    query takes it once and reads that."""

    def __init__(self, conf, quantum_id, lock=None):
        self.conf = conf
        self.quantum_id = quantum_id
        self.units = {quantum_id: Dnsmasq(conf, quantum_id)}
        self.plan = None
        self.error = None
        self.failures = 0
        self.crashes = 0          # dnsmasq deaths soon after a start, in a row
        self.retry_at = None
        self.last_sync = None
        self._lock = lock or threading.RLock()

    @property
    def dnsmasq(self):
        """The first shard's dnsmasq (a small network's only one)."""
        return self.units[self.quantum_id]

    def adopt(self, units):
        """Take over the running dnsmasq of these unit ids (this network's
        and its shards', found by their state dirs). True when one was
        adopted."""
        adopted = dict(self.units)
        found = False
        for unit in units:
            dm = adopted.get(unit) or Dnsmasq(self.conf, unit)
            if dm.adopt():
                adopted[unit] = dm
                found = True
        self.units = adopted
        return found

    # -- what the queries ask --------------------------------------------
    def alive(self):
        return all(dm.alive() for dm in list(self.units.values()))

    def dnsmasq_of(self, port_id, plan=None):
        """The Dnsmasq of the shard that serves this port in `plan` (the
        applied one by default); None while that shard does not run."""
        plan = plan or self.plan
        unit = plan.unit_of(port_id) if plan is not None else \
            self.quantum_id
        return self.units.get(unit)

    def loaded(self, port_id, plan=None):
        """The shard that owns this port has loaded its entry."""
        dm = self.dnsmasq_of(port_id, plan)
        return dm is not None and dm.loaded(port_id)

    def still_serves(self, mac):
        """A shard has not confirmed dropping this MAC yet (a SIGHUP sent
        after its removal, dnsmasq not yet seen re-reading)."""
        return any(dm.tracker.still_serves(mac)
                   for dm in list(self.units.values()))

    def written(self):
        """port id -> (file, entry), every shard's: a new dict."""
        units = list(self.units.values())
        if len(units) == 1:
            return units[0].written
        merged = {}
        for dm in units:
            merged.update(dm.written)
        return merged

    # -- apply -----------------------------------------------------------
    def apply(self, plan, driver):
        """Make this network run `plan`: per shard, plug its interface,
        then give its dnsmasq its files (a SIGHUP when a changed or
        removed entry needs a re-read), or restart that dnsmasq when its
        command line changes. Shards no longer planned are removed last
        (their hosts are served by their new shards by then)."""
        qid = plan.quantum_id
        if self.plan is None or self.plan.problems != plan.problems:
            for problem in plan.problems:
                log.warning('network %s: %s', plan.name, problem,
                            extra=logs.network(qid, plan.name))
        units = dict(self.units)
        # new shards first: a host moving to one is served there before
        # its old shard drops it
        new = [s for s in plan.shards if s.unit not in units]
        old = [s for s in plan.shards if s.unit in units]
        for shard in new:
            units[shard.unit] = Dnsmasq(self.conf, shard.unit)
        self.units = dict(units)
        for wave in (new, old):
            self._apply_shards(plan, wave, units, driver)
        gone = set(units) - {s.unit for s in plan.shards}
        for unit in sorted(gone):
            log.info('network %s: shard %s no longer needed; removing it',
                     plan.name, unit, extra=logs.network(qid, plan.name))
            dm = units.pop(unit)
            dm.stop()
            dm.remove_files()
            driver.unplug(unit)
        self.units = units
        with self._lock:
            self.plan = plan
            if self.error:
                log.info('network %s: recovered', plan.name,
                         extra=logs.network(qid, plan.name))
            self.error = None
            self.failures = 0
            self.retry_at = None
            self.last_sync = time.time()

    def _apply_shards(self, plan, shards, units, driver):
        """The shards of a big network in parallel (each start waits for
        its dnsmasq: 80 of them one by one take seconds); the first error
        is raised once all are done."""
        if len(shards) < 2:
            for shard in shards:
                self._apply_shard(plan, shard, units[shard.unit], driver)
            return
        futures = [_shard_pool().submit(self._apply_shard, plan, shard,
                                        units[shard.unit], driver)
                   for shard in shards]
        errors = [f.exception() for f in futures]
        for error in errors:
            if error is not None:
                raise error

    def _apply_shard(self, plan, shard, dm, driver):
        readdressed = driver.plug(shard.unit, shard.interface)
        argv = dnsmasq_conf.command_line(self.conf, plan, dm.files,
                                         device_names(shard.unit)[1],
                                         sharded=plan.sharded)
        if dm.alive() and dm.cmdline == argv and not readdressed:
            before = dm.written
            reload = dm.sync_hosts(shard.hosts)
            reload |= dm.sync_opts(dnsmasq_conf.opts_content(plan))
            if reload:
                macs, leases = release.removed(before, shard.hosts)
                # answered until dnsmasq says it re-read (gate.gone)
                dm.tracker.expect_gone(macs)
                dm.signal(signal.SIGHUP)
                dm.reloads += 1
                self._release(plan, shard, leases)
        else:
            if dm.alive():
                log.info('network %s: dnsmasq command line changed; '
                         'restarting it', plan.name,
                         extra=logs.network(plan.quantum_id, plan.name))
                dm.stop()
                dm.restarts += 1
            dm.clear_files()
            dm.sync_hosts(shard.hosts)
            dm.sync_opts(dnsmasq_conf.opts_content(plan))
            dm.seed_leases(shard.hosts)
            dm.start(argv, shard.interface.namespace)

    def _release(self, plan, shard, leases):
        """Give back the leases of removed or readdressed hosts, so that
        their addresses can go to the next host at once. A failure costs
        only that: logged, never fatal."""
        if not leases:
            return
        try:
            release.release(shard.interface.namespace,
                            device_names(shard.unit)[1],
                            shard.interface.addresses, leases)
        except OSError as e:
            log.warning('network %s: cannot release %d leases of removed '
                        'hosts: %s (they expire on their own)', plan.name,
                        len(leases), e,
                        extra=logs.network(plan.quantum_id, plan.name))

    def failed(self, exc):
        """apply() raised: retry after a back-off; logged once per error."""
        self.failures += 1
        delay = backoff(self.failures, self.conf.retry_max)
        self.retry_at = time.monotonic() + delay
        if str(exc) != self.error:
            log.error('network %s: %s (retrying in %.1fs)',
                      self.quantum_id, exc, delay,
                      extra=logs.network(self.quantum_id))
        self.error = str(exc)

    def supervise(self):
        """Rotate each dnsmasq's log; True when one died (see died())."""
        dead, uptimes = False, []
        for dm in list(self.units.values()):
            dm.rotate_log()
            alive = dm.alive()
            dead |= bool(dm.cmdline) and not alive
            # a dnsmasq forgotten after its death (not restarted yet)
            # counts as not up: no reset of the crash count
            uptimes.append(dm.uptime() if alive else 0)
        if self.crashes and not dead and all(
                u is None or u >= CRASH_WINDOW for u in uptimes) and any(
                u is not None for u in uptimes):
            self.crashes = 0     # all up for a while: no crash loop
        return dead

    def died(self):
        """dnsmasq died: restart at once, unless it keeps dying soon after
        each start: then each next start waits twice as long (up to
        retry_max); the error and the wait show in `status`."""
        dm = next((d for d in self.units.values()
                   if d.cmdline and not d.alive()), self.dnsmasq)
        pid, lived = dm.pid, dm.uptime()
        tail = dm.log_tail(300)
        dm.forget()
        if lived is not None and lived < CRASH_WINDOW:
            self.crashes += 1
        else:
            self.crashes = 1
        delay = 0 if self.crashes < 2 else backoff(self.crashes - 1,
                                                   self.conf.retry_max)
        if delay:
            with self._lock:
                self.retry_at = time.monotonic() + delay
                self.error = ('dnsmasq exited %d times in a row within '
                              '%ds of its start; next start in %.1fs'
                              % (self.crashes, CRASH_WINDOW, delay))
        log.error('network %s: dnsmasq pid %s died%s; restarting%s: %s',
                  self.quantum_id, pid,
                  '' if lived is None else ' %.1fs after its start' % lived,
                  ' in %.1fs' % delay if delay else '', tail,
                  extra=logs.network(self.quantum_id))


def teardown(conf, driver, quantum_id, runtime=None, reason=''):
    """Stop the network's dnsmasq, every shard's (the runtime's; without
    one, the network's own, found by its files), and remove their files
    and namespaces."""
    log.info('network %s: tearing down (%s)', quantum_id, reason,
             extra=logs.network(quantum_id))
    found = dict(runtime.units) if runtime else {
        quantum_id: Dnsmasq(conf, quantum_id)}
    for unit, dm in sorted(found.items()):
        if not dm.pid:
            dm.adopt()
        dm.stop()
        # the files before the namespace: no state is left once the
        # namespace (what goes last, and is watched) is gone
        dm.remove_files()
        driver.unplug(unit)
