"""NetworkRuntime: what this agent runs for one network (its dnsmasq, the
plan applied, the last error and the back-off), and what is done to it:
apply(plan) (refresh dnsmasq's files, or restart dnsmasq when its command
line changes), failed() and died() (the back-offs), and teardown().
"""
import logging
import signal
import threading
import time

from vdsm_dhcp import logs
from vdsm_dhcp.dnsmasq import conf as dnsmasq_conf
from vdsm_dhcp.dnsmasq.process import Dnsmasq
from vdsm_dhcp.host.interface import device_names

log = logging.getLogger('vdsm_dhcp.agent')

# A dnsmasq that dies within this many seconds of its start counts as a
# crash loop: its next start waits, doubling each time up to retry_max.
CRASH_WINDOW = 10.0


def backoff(attempt, retry_max):
    """Seconds to wait before retry `attempt` (1, 2, ...): 0.5 s, doubling
    each time, up to retry_max. Every back-off of the agent is this one."""
    return min(retry_max, 0.5 * 2 ** (attempt - 1))


class NetworkRuntime:
    """What this agent runs for one network, and how that went. `lock`
    (the agent's) guards the fields the queries read."""

    def __init__(self, conf, quantum_id, lock=None):
        self.conf = conf
        self.quantum_id = quantum_id
        self.dnsmasq = Dnsmasq(conf, quantum_id)
        self.plan = None
        self.error = None
        self.failures = 0
        self.crashes = 0          # dnsmasq deaths soon after a start, in a row
        self.retry_at = None
        self.last_sync = None
        self._lock = lock or threading.RLock()

    def apply(self, plan, driver):
        """Make this network run `plan`: plug its interface, then give
        dnsmasq its files (a SIGHUP when a changed or removed entry needs
        a re-read), or restart dnsmasq when its command line changes."""
        qid = plan.quantum_id
        if self.plan is None or self.plan.problems != plan.problems:
            for problem in plan.problems:
                log.warning('network %s: %s', plan.name, problem,
                            extra=logs.network(qid, plan.name))
        readdressed = driver.plug(qid, plan.interface)
        dm = self.dnsmasq
        argv = dnsmasq_conf.command_line(self.conf, plan, dm.files,
                                         device_names(qid)[1])
        if dm.alive() and dm.cmdline == argv and not readdressed:
            reload = dm.sync_hosts(plan.hosts)
            reload |= dm.sync_opts(dnsmasq_conf.opts_content(plan))
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
            dm.sync_opts(dnsmasq_conf.opts_content(plan))
            dm.seed_leases(plan.hosts)
            dm.start(argv, plan.interface.namespace)
        with self._lock:
            self.plan = plan
            if self.error:
                log.info('network %s: recovered', plan.name,
                         extra=logs.network(qid, plan.name))
            self.error = None
            self.failures = 0
            self.retry_at = None
            self.last_sync = time.time()

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
        """Rotate dnsmasq's log; True when dnsmasq died (see died())."""
        dm = self.dnsmasq
        dm.rotate_log()
        if dm.cmdline and not dm.alive():
            return True
        if self.crashes and (dm.uptime() or 0) >= CRASH_WINDOW:
            self.crashes = 0     # up for a while: no crash loop
        return False

    def died(self):
        """dnsmasq died: restart at once, unless it keeps dying soon after
        each start: then each next start waits twice as long (up to
        retry_max); the error and the wait show in `status`."""
        dm = self.dnsmasq
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
    """Stop the network's dnsmasq (ours, or one found by its files) and
    remove its files and namespace."""
    log.info('network %s: tearing down (%s)', quantum_id, reason,
             extra=logs.network(quantum_id))
    dm = runtime.dnsmasq if runtime else Dnsmasq(conf, quantum_id)
    dm.stop()
    # the files before the namespace: no state is left once the
    # namespace (what goes last, and is watched) is gone
    dm.remove_files()
    driver.unplug(quantum_id)
