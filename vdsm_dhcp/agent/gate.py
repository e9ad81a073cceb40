"""The readiness gate: `wait` (the VM hooks' request) answers once dnsmasq
can answer every MAC asked, or at the timeout, woken by what can change
an answer (a reconcile round ends, dnsmasq loads entries), not by
polling. A part of Agent."""
import logging
import time

from vdsm_dhcp import logs
from vdsm_dhcp.agent import control
from vdsm_dhcp.agent.queries import locate
from vdsm_dhcp.sources.validate import normalize_mac

log = logging.getLogger('vdsm_dhcp.agent')


# `wait`: the most MACs asked at once (a VM has a few vNICs), and the
# longest it sleeps without a wake-up (only a missed one would need it)
MAX_MACS = 1024


WAIT_FALLBACK = 0.5


class Gate:
    """The gate (a mixin of Agent: uses its snapshot view, rounds and
    metrics)."""

    # -- the readiness gate ---------------------------------------------------
    def readiness(self, macs):
        """mac -> None when dnsmasq can answer it now, else why not."""
        _, plans, runtimes = self._snapshot()
        return {mac: self._why_not(mac, plans, runtimes) for mac in macs}

    def _why_not(self, mac, plans, runtimes):
        where = locate(mac, plans)
        if where is not None and where.port_id is not None:
            qid, plan, port_id = where.quantum_id, where.plan, where.port_id
            runtime = runtimes.get(qid)
            if runtime is None or runtime.plan is None:
                return 'network %s is not configured yet' % plan.name
            error = runtime.error
            if error:
                return 'network %s: %s' % (plan.name, error)
            # the shard that owns the port in this plan must hold it
            dm = runtime.dnsmasq_of(port_id, plan)
            entry = dm.written.get(port_id) if dm is not None else None
            if entry is None or entry[1] != plan.hosts[port_id]:
                return 'port %s is not written for dnsmasq yet' % port_id
            if not runtime.loaded(port_id, plan):
                return 'port %s: dnsmasq has not loaded it yet' % port_id
            return None
        if where is not None:
            return 'network %s: %s' % (where.plan.name, where.skipped)
        not_served = ['%s (%s)' % (p.name, p.reason) for p in plans.values()
                      if not p.served]
        source_error = self.source_error
        if source_error:
            return 'IPAM source unreachable: %s' % source_error
        return 'no port with this MAC on a served network' + (
            '; not served: ' + ', '.join(not_served) if not_served else '')

    def gone(self, macs):
        """mac -> None when no dnsmasq answers it any more (its port was
        removed, and the shard that held it confirmed re-reading), else
        why not."""
        _, plans, runtimes = self._snapshot()
        return {mac: self._why_served(mac, plans, runtimes) for mac in macs}

    @staticmethod
    def _why_served(mac, plans, runtimes):
        where = locate(mac, plans)
        if where is not None and where.port_id is not None:
            return 'still port %s of network %s' % (where.port_id,
                                                    where.plan.name)
        for runtime in runtimes.values():
            applied = runtime.plan
            if applied is not None and mac in applied.macs:
                return 'network %s: not removed from dnsmasq yet' \
                    % applied.name
            if runtime.still_serves(mac):
                return 'network %s: dnsmasq has not re-read its hosts yet' \
                    % (applied.name if applied else runtime.quantum_id)
        return None

    def _loads_changed(self):
        """dnsmasq loaded entries (readiness.WATCHER): wake the waiters."""
        with self._reconciled:
            self._load_events += 1
            self._reconciled.notify_all()

    def wait(self, request):
        """Block until dnsmasq can answer every MAC (with "gone": until
        none answers any of them), or the timeout.
        Always syncs with the IPAM first: a port created just before the
        VM starts must not be missed. Woken by what can change an answer
        (a reconcile round ends, dnsmasq loads entries), not by polling;
        WAIT_FALLBACK only bounds a missed wake-up. A timeout above
        wait_max is served as wait_max (the reply says so): refusing it
        made a hook retry in a loop until its own timeout."""
        macs = request.get('macs')
        timeout = request.get('timeout', 30)
        gone = request.get('gone', False)
        if not isinstance(gone, bool):
            raise control.ControlError('"gone" must be true or false')
        state = self.gone if gone else self.readiness
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
            macs = [normalize_mac(m) for m in macs]
        except ValueError as e:
            raise control.ControlError(str(e)) from None
        started = time.monotonic()
        deadline = started + timeout
        answers = state(macs)
        if all(reason is None for reason in answers.values()):
            # dnsmasq has loaded them all: their ports exist, nothing to
            # sync first (a VM start on a warm host costs one round trip)
            return self._wait_result(answers, started, clamped, gone)
        target = self.request_sync(full=False)['round']

        def events():
            return self._done_rounds, self._load_events

        while True:
            with self._reconciled:
                seen = events()
            answers = state(macs) if seen[0] >= target else {
                m: 'the agent has not synced with the IPAM yet' for m in macs}
            left = deadline - time.monotonic()
            if all(reason is None for reason in answers.values()) or \
                    left <= 0 or control.peer_gone():
                break
            with self._reconciled:
                self._reconciled.wait_for(lambda: events() != seen,
                                          min(WAIT_FALLBACK, left))
        return self._wait_result(answers, started, clamped, gone)

    def _wait_result(self, answers, started, clamped, gone=False):
        if not gone:
            self.metrics.wait_answered('ready' if all(
                r is None for r in answers.values()) else 'not_ready')
        for mac, reason in answers.items():
            # a VM starts without its DHCP ready
            if reason is not None and not gone:
                log.warning('readiness gate: %s not ready after %.1fs: %s',
                            mac, time.monotonic() - started, reason,
                            extra=logs.mac(mac))
        result = {'ready': [m for m, r in answers.items() if r is None],
                  'not_ready': {m: r for m, r in answers.items()
                                if r is not None},
                  'waited': round(time.monotonic() - started, 4)}
        if clamped:
            result['timeout_clamped_to'] = self.conf.wait_max
        if gone:
            result['gone'] = True
        return result
