"""What the control socket asks of the agent, answered over one snapshot
view (the list, the plans and the runtimes taken at one moment): status,
why (one MAC), hosts and leases (one network). A part of Agent."""
import collections
import logging
import os
import time

from vdsm_dhcp.agent import control
from vdsm_dhcp.dnsmasq import leasefile
from vdsm_dhcp.dnsmasq.conf import Files, host_lines, written_lines
from vdsm_dhcp.host import bridges
from vdsm_dhcp.model import namespace_name
from vdsm_dhcp.sources.validate import normalize_mac

log = logging.getLogger('vdsm_dhcp.agent')

# where the plans put a MAC: the port serving it (skipped None), or the
# reason its port was skipped (port_id None)
Location = collections.namedtuple('Location',
                                  'quantum_id plan port_id skipped')


def locate(mac, plans):
    """The Location of a (normalized) MAC in the plans: on the first
    served network with a port of it, else on one that skipped its port;
    None when no served network knows it. `why` and the readiness gate
    both ask here."""
    for qid, plan in plans.items():
        if plan.served and mac in plan.macs:
            return Location(qid, plan, plan.macs[mac], None)
    for qid, plan in plans.items():
        if plan.served and mac in plan.skipped:
            return Location(qid, plan, None, plan.skipped[mac])
    return None


class Queries:
    """Queries over the agent's state (a mixin of Agent: uses its conf,
    lock, listed, plans, runtimes and source)."""

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
        return runtime.written() if runtime else {}

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
                'namespace': namespace_name(net.quantum_id)
                if runtime else None,
                'served': bool(applied and runtime.alive()),
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
                units = runtime.units
                dm = runtime.dnsmasq
                shards = _shards(units, applied)
                if applied is not None:
                    entry['dhcp_ips'] = list(applied.interface.addresses)
                entry.update(dnsmasq_pid=dm.pid,
                             hosts=sum(s['hosts'] for s in shards),
                             hosts_loaded=sum(s['hosts_loaded']
                                              for s in shards),
                             last_sync=runtime.last_sync,
                             error=runtime.error,
                             reloads=sum(d.reloads for d in units.values()),
                             restarts=sum(d.restarts
                                          for d in units.values()),
                             adopted=dm.adopted,
                             crashes=runtime.crashes,
                             retry_in=_seconds_until(runtime.retry_at))
                if len(shards) > 1:
                    entry['shards'] = shards
                if runtime.error and not entry['reason']:
                    entry['reason'] = runtime.error
                if leases:
                    entry['leases'] = _lease_count(runtime)
            networks.append(entry)
        return {
            'pid': os.getpid(), 'host': self.conf.host,
            'started_at': self.started_at,
            'last_reconcile': self.last_reconcile,
            'networks_file': self.conf.networks_file,
            'networks_file_error': self.networks_error,
            # what the host lacks for every dnsmasq to run (inotify room)
            'host_problem': self.host_problem,
            'source': self._source_status(),
            'networks': networks,
        }

    def _source_status(self):
        status = self.source.status()
        status.setdefault('unreachable_since', None)
        if self.source_error:     # the last snapshot failed
            status.update(reachable=False, error=self.source_error)
        return status

    def why(self, mac):
        try:
            mac = normalize_mac(mac)
        except ValueError as e:
            raise control.ControlError(str(e)) from None
        listed, plans, runtimes = self._snapshot()
        names = {n.quantum_id: n.name for n in listed}
        answer = {'mac': mac, 'network': None, 'listed': False,
                  'port': None, 'in_dnsmasq': False, 'verdict': None}
        where = locate(mac, plans)
        if where is not None and where.port_id is not None:
            qid, plan, port_id = where.quantum_id, where.plan, where.port_id
            runtime = runtimes.get(qid)
            written = self._written(runtime)
            loaded = bool(runtime) and runtime.loaded(port_id, plan)
            unit = plan.unit_of(port_id)
            answer.update(network=names.get(qid, plan.name),
                          quantumId=qid, listed=True,
                          port=port_id, written=port_id in written,
                          in_dnsmasq=loaded,
                          entry='\n'.join(host_lines(
                              plan.hosts[port_id])))
            if plan.sharded:
                answer['shard'] = unit
            answer['verdict'] = (
                'served: loaded by dnsmasq pid %s%s' % (
                    runtime.dnsmasq_of(port_id, plan).pid,
                    ' (shard %s)' % unit if plan.sharded else '')
                if loaded else 'known to the IPAM, not yet loaded by '
                'dnsmasq' + (' (written, waiting for dnsmasq to read it)'
                             if port_id in written else ''))
            return answer
        if where is not None:      # skipped, and why
            answer.update(network=None, quantumId=where.quantum_id,
                          listed=True, verdict='not served: ' + where.skipped)
            return answer
        answer['verdict'] = ('no port with this MAC on any network listed '
                             'for this host (%s)' % (', '.join(
                                 n.name for n in listed) or 'none'))
        return answer

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
                          for port_id, (_, value) in
                          self._written(runtime).items()
                          for line in written_lines(value)),
                         key=lambda e: (e['entry'], e['port']))
        return {'network': net.name, 'quantumId': net.quantum_id,
                'hosts': entries}

    def leases(self, network):
        """dnsmasq's leases of a network (the CLI asks: it never reads the
        agent's files); lines that do not parse are counted, not fatal."""
        net = self._listed(network)
        with self._lock:
            runtime = self.runtimes.get(net.quantum_id)
        paths = [dm.files.leases for dm in runtime.units.values()] \
            if runtime else [Files(self.conf.state_dir,
                                   net.quantum_id).leases]
        try:
            leases, unparsed = _read_leases(paths)
        except OSError as e:
            raise control.ControlError('cannot read the leases of %s: %s'
                                       % (net.name, e.strerror or e))
        return {'network': net.name, 'quantumId': net.quantum_id,
                'leases': leases, 'unparsed_lines': unparsed}


def _read_leases(paths):
    """(leases, lines not parsed) of these lease files (a network's, one
    per shard); a shard's file not made yet holds none. OSError when the
    first (the network's own) cannot be read."""
    leases, unparsed = [], 0
    for n, path in enumerate(paths):
        try:
            some, bad = leasefile.read(path)
        except FileNotFoundError:
            if n:
                continue          # a shard not started yet
            raise
        leases.extend(some)
        unparsed += bad
    return leases, unparsed


def _lease_count(runtime):
    try:
        return len(_read_leases([dm.files.leases for dm in
                                 runtime.units.values()])[0])
    except OSError:
        return None


def _shards(units, plan):
    """Per dnsmasq of a network: its unit, pid, address and counts."""
    interfaces = {s.unit: s.interface for s in plan.shards} if plan else {}
    shards = []
    for unit, dm in sorted(units.items()):
        iface = interfaces.get(unit)
        shards.append({
            'unit': unit, 'namespace': namespace_name(unit),
            'dnsmasq_pid': dm.pid,
            'dhcp_ips': list(iface.addresses) if iface else [],
            'hosts': len(dm.written), 'hosts_loaded': dm.loaded_count(),
            'reloads': dm.reloads, 'restarts': dm.restarts})
    return shards


def _seconds_until(monotonic_time):
    if monotonic_time is None:
        return None
    return round(max(0.0, monotonic_time - time.monotonic()), 1)
