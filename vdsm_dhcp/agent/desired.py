"""Desired state: what each listed network should look like on this host.

Pure: (networks file, IPAM snapshot, bridges present, host) -> plans
(model.NetworkPlan, or model.NotServed with the reason). No I/O, so every
rule here is tested without root.

IPAM data is untrusted: each resource first crosses sources/validate.py
(a typed value, or InvalidData with the reason). The planner after that
point handles typed values only: a port, subnet or network that fails is
skipped with a problem naming it, the rest is served. compute() also
turns anything unforeseen in one network into NotServed for that network
only: no IPAM document ever ends a reconcile round.
"""
import bisect
import logging

from vdsm_dhcp import logs
from vdsm_dhcp.dnsmasq.conf import RenderError, host_lines
from vdsm_dhcp import shards as sharding
from vdsm_dhcp.agent.port_memo import fingerprint as _fingerprint
from vdsm_dhcp.agent.port_memo import (forget_unlisted, ip_key as _ip_key,
                                       ip_text as _ip_text, kept, same_plan)
from vdsm_dhcp.model import (DHCP_OWNER, HostEntry, InterfacePlan,
                             InvalidData, NetworkPlan, NotServed, ShardPlan,
                             namespace_name)
from vdsm_dhcp.sources.validate import (owned, shown_id, validate_network,
                                        validate_port, validate_subnet)
from vdsm_dhcp.untrusted import show

log = logging.getLogger('vdsm_dhcp.desired')


def default_hostname(ip):
    return 'host-' + str(ip).replace('.', '-').replace(':', '-')


# -- planning, on typed values only ----------------------------------------

def _port_entry(port, subnets):
    """(HostEntry or None, (IP key, ...)) of a valid port on these served
    subnets, or InvalidData naming the problem (also when dnsmasq's host
    line could not be rendered from it: it would never be written)."""
    addresses, ips, first_ip = [], [], None
    for sid, ip in port.fixed_ips:
        subnet = subnets.get(sid)
        if subnet is None:
            continue  # a subnet without DHCP (or unknown): nothing to serve
        net = subnet.network
        if ip.version != net.version or ip not in net:
            raise InvalidData('IP %s is outside its subnet %s (%s)'
                              % (ip, sid, net), port.mac)
        if ip.version == 4 and net.prefixlen < 31 and ip in (
                net.network_address, net.broadcast_address):
            raise InvalidData('IP %s is the network or broadcast address of '
                              '%s' % (ip, net), port.mac)
        if subnet.ip_version == 6 and not subnet.stateful:
            continue  # stateless/SLAAC: the client picks its address
        first_ip = first_ip or ip
        addresses.append(ip)
        ips.append(_ip_key(ip))
    if not addresses:
        return None, ()
    entry = HostEntry(port.id, port.mac, tuple(addresses),
                      port.dns_name or default_hostname(first_ip))
    try:
        host_lines(entry)
    except RenderError as e:
        raise InvalidData(str(e), port.mac) from None
    return entry, tuple(ips)


def _order(raw):
    """Oldest first (the first created wins a conflict); only strings are
    compared, a hostile value never reaches str()."""
    created, pid = raw.get('created_at'), raw.get('id')
    return (created if isinstance(created, str) else '',
            pid if isinstance(pid, str) else '')


def _verdict(raw, subnets, key):
    """What the planner keeps of a raw port (the memo's value, no Port):
    (key,) for a valid port with no address on a served subnet, (key,
    InvalidData), or (key, HostEntry, IP key, ...); key: its fingerprint
    (None without a memo), as port_memo.kept keeps it."""
    try:
        entry, ips = _port_entry(validate_port(raw), subnets)
    except InvalidData as e:
        return (key, e)
    if entry is None:
        return (key,)
    key, entry = kept(key, entry)
    return (key, entry) + ips


def _dhcp_port_addresses(dhcp_port, subnets):
    """(interface addresses, subnets served) of our DHCP port."""
    addresses, served = [], []
    for sid, ip in dhcp_port.fixed_ips:
        subnet = subnets.get(sid)
        if subnet is None or subnet in served:
            continue
        net = subnet.network
        if ip.version == net.version and ip in net:
            addresses.append('%s/%d' % (ip, net.prefixlen))
            served.append(subnet)
    return addresses, served


def _overlapping(blocks, plan):
    """The accepted subnet plan's block overlaps, or None. blocks: per IP
    version, a sorted list of disjoint (first, last, subnet): only the
    neighbours of plan's first address can overlap it (log n, not n: a
    document may list thousands of subnets)."""
    net = plan.network
    first, last = int(net.network_address), int(net.broadcast_address)
    ranges = blocks.setdefault(net.version, [])
    at = bisect.bisect_left(ranges, (first,))
    if at < len(ranges) and ranges[at][0] <= last:
        return ranges[at][2]
    if at and ranges[at - 1][1] >= first:
        return ranges[at - 1][2]
    ranges.insert(at, (first, last, plan))
    return None


def _valid_subnets(raws, problems):
    subnets, blocks = {}, {}
    for raw in raws:
        try:
            plan = validate_subnet(raw)
        except InvalidData as e:
            problems.append(str(e))
            continue
        if plan is None:
            continue
        if plan.id in subnets:
            problems.append('subnet %s is listed twice: the first one is used'
                            % plan.id)
            continue
        overlap = _overlapping(blocks, plan)
        if overlap is not None:
            problems.append('subnet %s: %s overlaps subnet %s (%s); not '
                            'served' % (plan.id, plan.cidr, overlap.id,
                                        overlap.cidr))
            continue
        subnets[plan.id] = plan
    return subnets


def _admit(raw_ports, served_ids, reserved, entries, fresh, memo,
           conflicts=False):
    """(hosts, macs, skipped, problems) of the VM ports, in this order.
    With conflicts=False, None as soon as two ports conflict (the caller
    then sorts them: the oldest must win)."""
    hosts, macs, ips, skipped, problems = {}, {}, {}, {}, []

    def skip(raw, why, mac):
        problem = 'port %s skipped: %s' % (shown_id(raw.get('id')), why)
        problems.append(problem)
        if mac is not None:
            skipped.setdefault(mac, problem)

    for raw in raw_ports:
        key = _fingerprint(raw) if memo is not None else None
        # a change to one port of 10,000 re-validates one port
        hit = entries.get(key) if key is not None else None
        if hit is None:
            hit = _verdict(raw, served_ids, key)
        if key is not None:
            fresh[hit[0]] = hit    # the key as first seen (see _verdict)
        if len(hit) == 1:
            continue               # nothing served
        content = hit[1]
        if type(content) is not HostEntry:
            skip(raw, content, content.mac)
            continue
        pid, mac, port_ips = content.port_id, content.mac, hit[2:]
        if pid in hosts:
            if not conflicts:
                return None
            skip(raw, 'port id %s is listed twice' % pid, mac)
            continue
        clash = mac if mac in reserved else None
        for ip in port_ips:
            if clash is None and ip in reserved:
                clash = ip
        if clash is not None:
            owner = reserved[clash]
            what = ('MAC %s' % mac if clash == mac
                    else 'IP %s' % _ip_text(clash))
            skip(raw, '%s belongs to DHCP port %s (host %s)'
                 % (what, owner.id, shown_id(owner.host)), mac)
            continue
        if mac in macs:
            if not conflicts:
                return None
            skip(raw, 'MAC %s is also port %s' % (mac, macs[mac]), mac)
            continue
        taken = [ip for ip in port_ips if ip in ips]
        if taken:
            if not conflicts:
                return None
            skip(raw, 'IP %s is also port %s' % (_ip_text(taken[0]),
                                                  ips[taken[0]]), mac)
            continue
        hosts[pid] = content
        macs[mac] = pid
        for ip in port_ips:
            ips[ip] = pid
    return hosts, macs, skipped, problems


def plan_network(listed, snapshot, bridges, host, memo=None,
                 shard_size=None):
    qid, name = listed.quantum_id, listed.name
    raw_net = snapshot.networks.get(qid)
    if raw_net is None:
        return NotServed(qid, name, snapshot.errors.get(qid) or
                         'network %s is unknown to the IPAM' % qid)
    problems = list(snapshot.notes.get(qid, ()))
    try:
        net = validate_network(raw_net)
    except InvalidData as e:
        return NotServed(qid, name, str(e), problems)
    problems.extend(net.problems)
    if not net.admin_state_up:
        return NotServed(qid, name, 'network is administratively down',
                         problems)
    subnets = _valid_subnets(snapshot.subnets.get(qid, ()), problems)
    if not subnets:
        return NotServed(qid, name, 'no DHCP-enabled subnet', problems)
    if name not in bridges:
        return NotServed(qid, name, 'bridge %s does not exist on this host'
                         % name, problems)
    raw_ports = snapshot.ports.get(qid, ())
    # DHCP ports (every host's): ours is the interface; the addresses of
    # all of them belong to DHCP servers, never to a VM
    dhcp_port, dhcp_error, reserved, mine = None, None, {}, []
    for raw in sorted((r for r in raw_ports
                       if r.get('device_owner') == DHCP_OWNER), key=_order):
        try:
            port = validate_port(raw)
        except InvalidData as e:
            problem = 'DHCP port %s: %s' % (shown_id(raw.get('id')), e)
            problems.append(problem)
            if raw.get('binding:host_id') == host and dhcp_error is None:
                dhcp_error = problem
            continue
        if port.host == host:
            dhcp_port = dhcp_port or port
            mine.append(port)
        reserved.setdefault(port.mac, port)
        for _, ip in port.fixed_ips:
            reserved.setdefault(_ip_key(ip), port)
    if dhcp_port is None:
        return NotServed(qid, name, dhcp_error or 'no DHCP port (device_owner '
                         '%s) bound to host %s' % (DHCP_OWNER, host),
                         problems)
    addresses, served = _dhcp_port_addresses(dhcp_port, subnets)
    for sid in sorted(set(subnets) - {s.id for s in served}):
        problems.append('subnet %s: the DHCP port has no address in it; not '
                        'served' % sid)
    if not served:
        return NotServed(qid, name, 'the DHCP port %s has no address on a '
                         'DHCP-enabled subnet' % dhcp_port.id, problems)
    served_ids = {s.id: s for s in served}
    # the memo holds entries computed against these subnets only
    subnets_key = tuple(sorted(served_ids.items()))
    entries, fresh = {}, {}
    if memo is not None:
        old_key, old_entries = memo.get(qid, (None, {}))
        if old_key == subnets_key:
            entries = old_entries
            # the objects made in an earlier round, not equal new ones:
            # what outlives a round is best made before the document
            # that is alive now (see file source, _listed)
            subnets_key = old_key
            served_ids = dict(old_key)
            served = [served_ids[s.id] for s in served]
    vm_ports = [r for r in raw_ports if r.get('device_owner') != DHCP_OWNER]
    # The first created wins a conflict (a MAC, an IP or an id twice), so
    # the order matters only when there is one: the IPAM's order first
    # (sorting 10,000 ports costs more than planning them), and sorted
    # oldest first only then.
    admitted = _admit(vm_ports, served_ids, reserved, entries, fresh, memo)
    if admitted is None:
        fresh.clear()
        admitted = _admit(sorted(vm_ports, key=_order), served_ids,
                          reserved, entries, fresh, memo, conflicts=True)
    hosts, macs, skipped, admit_problems = admitted
    problems.extend(admit_problems)
    if memo is not None:
        if fresh.keys() == entries.keys():
            fresh = entries     # every port as it was
        memo[qid] = (subnets_key, fresh)    # forget ports that are gone
    interface = InterfacePlan(namespace_name(qid), name,
                              owned(dhcp_port.mac), tuple(addresses))
    plan = NetworkPlan(
        quantum_id=qid, name=name, mtu=net.mtu, interface=interface,
        subnets=tuple(sorted(served, key=lambda s: s.id)),
        hosts=hosts, macs=macs, problems=problems,
        skipped={m: p for m, p in skipped.items() if m not in macs},
        shards=(ShardPlan(qid, interface, hosts),))
    if shard_size and (len(hosts) > shard_size or len(mine) > 1):
        usable = [(mine[0], None)]
        for port in mine[1:]:
            addresses, on = _dhcp_port_addresses(port, subnets)
            if set(served) <= set(on):
                usable.append((port, addresses))
            else:
                plan.problems.append(
                    'DHCP port %s has no address on every served subnet: '
                    'not used as a shard' % port.id)
        state = memo.setdefault(('shards', qid), {}) if memo is not None \
            else {}
        sharding.split(plan, usable, shard_size, state)
    return plan


_last_failure = {}      # quantum id -> the unexpected error last logged


def compute(listed_networks, snapshot, bridges, host, memo=None,
            shard_size=None):
    """quantumId -> NetworkPlan or NotServed, for every listed network.
    memo (a dict the caller keeps between calls) only saves work: the
    result is the same with or without it. Never raises on IPAM data."""
    plans = {}
    for listed in listed_networks:
        qid = listed.quantum_id
        try:
            plan = plan_network(listed, snapshot, bridges, host, memo,
                                shard_size)
            plans[qid] = same_plan(memo, qid, plan)
            _last_failure.pop(qid, None)
        except Exception as e:     # a rule this module lacks: one network
            reason = 'the IPAM data of this network cannot be planned ' \
                     '(%s: %s)' % (type(e).__name__, show(str(e)))
            if _last_failure.get(qid) != reason:
                _last_failure[qid] = reason
                log.exception('network %s: %s', listed.name, reason,
                              extra=logs.network(qid, listed.name))
            if memo is not None:
                memo.pop(qid, None)
                memo.pop(('shards', qid), None)
                memo.pop(('plan', qid), None)
            plans[qid] = NotServed(qid, listed.name, reason)
    forget_unlisted(memo, plans)
    return plans
