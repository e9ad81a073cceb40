"""Figure 1: a port added to (or removed from) a network of N hosts, each
with a live lease -> dnsmasq can serve again with the change.

OURS: the real vdsm-dhcp-agent (file source) in the tests/isolated host:
one network, its DHCP port and N VM ports; the agent seeds a lease per
host when it starts dnsmasq, so every host holds a live lease. One port
is added to the IPAM file (atomic rename = t0). Measured from t0:
  - dnsmasq logged reading the port's hostsdir file, and was next seen
    back in poll() ("servable": before that it answers nothing);
  - the agent's own truthful criterion: a control-socket `wait` on the
    MAC, sent at t0, returns it ready (what the VM-start gate uses).
A removal: a port deleted from the IPAM file -> the agent deletes its file
and SIGHUPs dnsmasq -> dnsmasq re-read its hosts and is back in poll().

NEUTRON: Neutron 29's own code, run with .venv-neutron's interpreter
(bench/_neutron_driver.py): NetworkCache.put_port / remove_port, a new
dhcp.Dnsmasq, the real reload_allocations() (hosts/addn_hosts/opts
rewritten with replace_file, `ip netns exec .. kill -HUP`,
device_manager.update()), its dnsmasq spawned by spawn_process() with its
init lease file (a live lease per port) and its own command line, in its
qdhcp-<id> namespace, same dnsmasq binary, same ports. Measured the same
way from its call (NetworkCache.put_port) to dnsmasq back in poll() after
reading its hosts file.

Both sides are sampled from this process (the log tailed and
/proc/PID/syscall read every ~0.3 ms); dnsmasq's CPU time per change comes
from /proc/PID/schedstat."""
import json
import os
import shutil
import statistics
import tempfile
import threading
import time

from bench import _neutron_side as side
from tests import rig
from tests.rig import Host
from vdsm_dhcp.agent import control

TITLE = ('Port change -> servable, one network of N hosts each with a live '
         'lease (ours vs Neutron dhcp.Dnsmasq.reload_allocations)')
BRIDGE = 'bench1'


def med(values):
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 2) if values else None


def r2(values):
    return [round(v, 2) if isinstance(v, float) else v for v in values]


# -- ours ----------------------------------------------------------------
def ipam_doc(network, host_name):
    net = {k: v for k, v in network.items() if k not in ('subnets', 'ports')}
    ports = [dict(p) for p in network['ports']]
    ports[0]['binding:host_id'] = host_name      # our DHCP port
    return {'networks': [net], 'subnets': network['subnets'], 'ports': ports}


def write_doc(path, doc):
    """Write next to path; the caller renames (that rename is t0)."""
    tmp = path + '.bench-tmp'
    with open(tmp, 'w') as f:
        json.dump(doc, f)
    return tmp


def measure_ours(n, runs):
    base = tempfile.mkdtemp(prefix='vdsm-dhcp-bench1-')
    lab = host = None
    result = {'add': [], 'remove': [], 'startup': None, 'errors': []}
    try:
        os.chmod(base, 0o755)
        lab = rig.Lab()
        host = Host(os.path.join(base, 'host-a'))
        network = side.network_dicts(n)
        qid, sub_id = network['id'], network['subnets'][0]['id']
        doc = ipam_doc(network, 'host-a')
        path = host.conf.file.path
        os.rename(write_doc(path, doc), path)
        lab.bridge(BRIDGE)
        host.networks((BRIDGE, qid))
        started = time.monotonic()
        agent = host.agent()
        # the DHCP port is no host entry: n entries
        rig.wait_for(lambda: agent.network(BRIDGE).get('hosts_loaded') ==
                     n, 300, 0.05, 'all %d hosts loaded' % n)
        status = agent.network(BRIDGE)
        pid = status['dnsmasq_pid']
        side.wait_idle(pid)
        result['startup'] = time.monotonic() - started
        hostsdir = os.path.join(host.conf.state_dir, qid, 'hosts')
        log = os.path.join(host.conf.state_dir, qid, 'dnsmasq.log')
        opts = os.path.join(host.conf.state_dir, qid, 'opts')
        added = []
        for r in range(runs):
            port = side.vm_port(qid, sub_id, n + r)
            doc['ports'].append(port)
            added.append(port)
            tmp = write_doc(path, doc)
            tail, cpu0 = side.Tail(log), side.cpu_ns(pid)
            go, waited = threading.Event(), {}

            def gate(mac=port['mac_address']):
                go.wait()
                try:
                    answer = control.call(host.conf, 'wait', {
                        'macs': [mac], 'timeout': 60}, timeout=90)
                    waited['ready'] = mac in answer['ready']
                except control.ControlError as e:
                    waited['error'] = str(e)
                waited['at'] = time.monotonic()
            thread = threading.Thread(target=gate)
            thread.start()
            t0 = time.monotonic()
            os.rename(tmp, path)
            go.set()
            got = side.servable(pid, tail, 'read %s/%s' % (hostsdir,
                                                            port['id']),
                                t0, cpu0)
            thread.join(120)
            got['wait'] = ((waited['at'] - t0) * 1000
                           if waited.get('ready') else None)
            if not waited.get('ready'):
                result['errors'].append('wait: %s' % waited)
            result['add'].append(got)
            rig.wait_for(lambda: agent.network(BRIDGE).get('hosts_loaded')
                         == n + 1 + r, 60, 0.01, 'added host loaded')
            side.wait_idle(pid)
        reloads0 = agent.network(BRIDGE)['reloads']
        for r, port in enumerate(added):
            doc['ports'].remove(port)
            tmp = write_doc(path, doc)
            tail, cpu0 = side.Tail(log), side.cpu_ns(pid)
            t0 = time.monotonic()
            os.rename(tmp, path)
            # The file's deletion alone wakes dnsmasq (inotify: it logs
            # "removed", a "read" of that file and "cannot read", and goes
            # back to poll() still serving the host). Only the SIGHUP that
            # follows drops it: it re-reads opts, then every hostsdir file.
            got = side.servable(pid, tail, 'read %s' % opts, t0, cpu0)
            result['remove'].append(got)
            rig.wait_for(lambda: agent.network(BRIDGE)['hosts'] ==
                         n + len(added) - r - 1, 60, 0.01, 'host removed')
            side.wait_idle(pid)
        status = agent.network(BRIDGE)
        result['reloads'] = status['reloads'] - reloads0
        result['restarts'] = status['restarts']
        if status['dnsmasq_pid'] != pid:
            result['errors'].append('dnsmasq was restarted')
    finally:
        try:
            if host is not None:
                host.cleanup()
        finally:
            if host is not None:
                rig.kill_leftover_dnsmasq(host.conf.state_dir)
            if lab is not None:
                lab.close()
            shutil.rmtree(base, ignore_errors=True)
    return result


# -- Neutron ---------------------------------------------------------------
def measure_neutron(n, runs):
    base = tempfile.mkdtemp(prefix='vdsm-dhcp-bench1n-')
    os.chmod(base, 0o755)
    network = side.network_dicts(n)
    qid, sub_id = network['id'], network['subnets'][0]['id']
    driver = side.NeutronDriver(network, base)
    result = {'add': [], 'remove': [], 'startup': None, 'errors': []}
    try:
        started = time.monotonic()
        try:
            info = driver.start()
        except AssertionError as e:
            # seen once: `ip netns exec` could not open the namespace;
            # start again from scratch, and say so
            result['errors'].append('Neutron start retried: %s'
                                    % str(e)[-300:])
            driver.close()
            driver = side.NeutronDriver(network, base)
            info = driver.start()
        side.wait_idle(driver.pid, 600)
        result['startup'] = time.monotonic() - started
        result['cmdline'] = info['cmdline']
        match = 'read ' + info['hosts']

        def one(request):
            tail, cpu0 = side.Tail(driver.log), side.cpu_ns(driver.pid)
            driver.send(request)
            got = side.servable(driver.pid, tail, match, 0.0, cpu0)
            times = driver.reply()
            t0 = times['t0'] * 1000
            got['read'] -= t0
            got['servable'] -= t0
            got['call'] = times['end'] * 1000 - t0
            got['hup'] = times.get('hup', times['end']) * 1000 - t0
            side.wait_idle(driver.pid)
            return got
        added = []
        for r in range(runs):
            port = side.vm_port(qid, sub_id, n + r)
            added.append(port)
            result['add'].append(one({'cmd': 'add', 'port': port}))
        for port in added:
            result['remove'].append(one({'cmd': 'remove',
                                         'port_id': port['id']}))
    finally:
        driver.close()
        shutil.rmtree(base, ignore_errors=True)
    return result


# -- rows ------------------------------------------------------------------
def rows_for(n, ours, theirs):
    big = n >= 10000
    o_add = [g['servable'] for g in ours['add']]
    n_add = [g['servable'] for g in theirs['add']]
    o_wait = [g['wait'] for g in ours['add']]
    o_rm = [g['servable'] for g in ours['remove']]
    n_rm = [g['servable'] for g in theirs['remove']]
    o_med, n_med = med(o_add), med(n_add)
    speedup = n_med / o_med if o_med and n_med else None
    rows = []
    target = '<=20 ms and >=10x faster than Neutron' if big else None
    met = (o_med <= 20 and speedup >= 10) if big and speedup else None
    notes = ('from the IPAM write (ours) / NetworkCache.put_port (Neutron) '
             'to dnsmasq back in poll() after logging the read; Neutron '
             '%.1fx slower than ours. Ours: dnsmasq read the new hostsdir '
             'file after %.1f ms (median) but then spent %.0f ms CPU '
             'reconciling its %d leases against its %d hosts; Neutron: '
             'SIGHUP sent after %.0f ms, dnsmasq CPU %.0f ms per reload.'
             % (speedup or 0, med([g['read'] for g in ours['add']]),
                med([g['cpu'] for g in ours['add']]), n + 1, n + 1,
                med([g['hup'] for g in theirs['add']]),
                med([g['cpu'] for g in theirs['add']])))
    if met is False:
        notes = 'MISSED: ' + notes
    if theirs['errors'] or ours['errors']:
        notes += ' Errors: %s' % (ours['errors'] + theirs['errors'])
    rows.append({'name': 'add -> servable (dnsmasq in poll), %d hosts' % n,
                 'ours': o_med, 'neutron': n_med, 'unit': 'ms',
                 'target': target, 'met': met, 'runs': r2(o_add),
                 'neutron_runs': r2(n_add), 'speedup': speedup and
                 round(speedup, 2), 'notes': notes})
    w_med = med(o_wait)
    rows.append({
        'name': 'add -> loaded per our gate (control wait), %d hosts' % n,
        'ours': w_med, 'neutron': None,
        'unit': 'ms', 'target': '<=20 ms' if big else None,
        'met': (w_med is not None and w_med <= 20) if big else None,
        'runs': r2(o_wait),
        'neutron_runs': r2([g['call'] for g in theirs['add']]),
        'notes': ('%sours: a `wait` on the new MAC sent at the IPAM write '
                  'returns ready (the VM-start gate). Neutron has no such '
                  'criterion: it reports the port ready when its '
                  'reload_allocations() returns, after %.0f ms (median; '
                  'neutron_runs), whether or not dnsmasq has re-read%s'
                  % ('MISSED: ' if big and not (w_med and w_med <= 20)
                     else '', med([g['call'] for g in theirs['add']]),
                     '; errors: %s' % ours['errors']
                     if ours['errors'] else ''))})
    rows.append({
        'name': 'dnsmasq CPU per add, %d hosts' % n,
        'ours': med([g['cpu'] for g in ours['add']]),
        'neutron': med([g['cpu'] for g in theirs['add']]), 'unit': 'ms',
        'target': None, 'met': None,
        'runs': r2([g['cpu'] for g in ours['add']]),
        'neutron_runs': r2([g['cpu'] for g in theirs['add']]),
        'notes': 'dnsmasq CPU (schedstat) from the change to servable'})
    rm_med = med(o_rm)
    rm_met = rm_med is not None and rm_med <= 200
    rows.append({
        'name': 'removal -> no longer served, %d hosts' % n,
        'ours': rm_med, 'neutron': med(n_rm), 'unit': 'ms',
        'target': '<=200 ms', 'met': rm_met, 'runs': r2(o_rm),
        'neutron_runs': r2(n_rm),
        'notes': ('%sthe ports added above deleted one at a time; ours: file '
                  'deleted + SIGHUP (%d SIGHUPs for %d removals), dnsmasq '
                  're-reads every hostsdir file and reconciles all leases '
                  '(CPU %.0f ms); Neutron: its whole reload_allocations '
                  '(CPU %.0f ms)' % (
                      '' if rm_met else 'MISSED: ', ours.get('reloads', 0),
                      len(o_rm), med([g['cpu'] for g in ours['remove']]),
                      med([g['cpu'] for g in theirs['remove']])))})
    rows.append({
        'name': 'dnsmasq start with all hosts + leases, %d hosts' % n,
        'ours': round(ours['startup'] * 1000), 'neutron':
        round(theirs['startup'] * 1000), 'unit': 'ms', 'target': None,
        'met': None, 'runs': [round(ours['startup'] * 1000)],
        'notes': 'set-up, one run: ours = agent start to all hosts loaded '
                 '(status hosts_loaded); Neutron = child start, imports and '
                 'spawn_process() to dnsmasq idle'})
    return rows


def run(quick):
    sizes = [1000] if quick else [1000, 10000]
    runs = 3 if quick else 5
    rows = []
    # a SIGTERM raises in bench.run (tests/leftovers.raise_on_sigterm): the
    # clean-ups in measure_*() run
    for n in sizes:
        ours = measure_ours(n, runs)
        theirs = measure_neutron(n, runs)
        rows += rows_for(n, ours, theirs)
    return rows
