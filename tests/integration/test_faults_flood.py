"""Faults: a tenant VM floods DHCP; dnsmasq's log rotates under load
(issue 10.12, 10.17).

A flood must not reach what the readiness gate reads, must not grow the
disk or the agent's CPU without bound, and must not keep another VM from
starting (its port gated ready, then a lease). Rotating the log must not
lose a `read` line: a port would never be "ready"."""
import os
import signal
import subprocess
import sys
import threading
import time

from bench.flood import Flood
from tests import faultlog, rig
from tests.rig import mac, wait_for
from vdsm_dhcp import client
from vdsm_dhcp.dnsmasq import readiness

# A stand-in for dnsmasq's logging, as its log.c does it: the file held
# open above fd 2 with O_APPEND, reopened by name on SIGUSR2; `read` lines
# for files f0..fN-1 in order, each after a line of noise.
FAKE_DNSMASQ = r'''
import os, signal, sys, time
path, hosts, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
fd = os.open(path, flags, 0o644)
reopen = []
signal.signal(signal.SIGUSR2, lambda *_: reopen.append(True))
print('ready', flush=True)
for i in range(count):
    if reopen:
        del reopen[:]
        os.close(fd)
        fd = os.open(path, flags, 0o644)
    os.write(fd, b'Dec  2 00:00:00 dnsmasq-dhcp[1]: DHCPDECLINE(vdn0) '
             b'10.0.0.250 fa:16:3e:00:00:01 \n')
    os.write(fd, ('Dec  2 00:00:00 dnsmasq-dhcp[1]: read %s/f%d\n'
                  % (hosts, i)).encode())
    if i % 25 == 0:
        time.sleep(0.001)     # dnsmasq's loop turns; rotations interleave
signal.signal(signal.SIGUSR2, signal.SIG_IGN)   # a late one, at exit
'''


def test_rotation_loses_no_read_line_and_keeps_their_order(tmp_path,
                                                            monkeypatch):
    """Many rotations while the writer writes as fast as it can: every
    `read` line is seen, each once, in the order written."""
    log = str(tmp_path / 'dnsmasq.log')
    hosts = str(tmp_path / 'hosts')
    count = 20000
    open(log, 'w').close()
    monkeypatch.setattr(readiness, 'dnsmasq_idle', lambda pid: True)
    tracker = readiness.LoadTracker(log, hosts)
    tracker.expect({'p%d' % i: 'f%d' % i for i in range(count)})
    writer = subprocess.Popen([sys.executable, '-c', FAKE_DNSMASQ, log,
                               hosts, str(count)], stdout=subprocess.PIPE,
                              text=True)
    rotations = 0
    try:
        assert writer.stdout.readline() == 'ready\n'   # handler installed
        def reopen():
            writer.send_signal(signal.SIGUSR2)
        while writer.poll() is None:
            rotations += tracker.rotate(4096, writer.pid, os.getuid(),
                                        reopen)
            tracker.confirm(writer.pid)
    finally:
        if writer.poll() is None:
            writer.kill()
        writer.wait()
    assert writer.returncode == 0
    tracker.confirm(writer.pid)
    lost = tracker.pending_count()
    faultlog.record('dnsmasq log rotated while dnsmasq writes as fast as '
                    'it can (%d read lines)' % count, rotations,
                    '%d read lines lost' % lost)
    assert rotations >= 10, 'the test did not rotate: %d' % rotations
    assert lost == 0, '%d of %d read lines lost' % (lost, count)
    seen = [tracker._read_at['f%d' % i] for i in range(count)]
    assert seen == sorted(seen) and len(set(seen)) == count
    # two files, no leftovers (one rotation pending at a time)
    assert sorted(os.listdir(tmp_path)) == ['dnsmasq.log', 'dnsmasq.log.1']


def test_rotation_does_not_lose_a_pending_read_on_a_crashed_handover(
        tmp_path, monkeypatch):
    """An agent died after renaming the log, before signalling dnsmasq:
    the next one reads the file dnsmasq still writes, and has it reopen."""
    log = str(tmp_path / 'dnsmasq.log')
    hosts = '/h'
    monkeypatch.setattr(readiness, 'dnsmasq_idle', lambda pid: True)
    writer = subprocess.Popen([sys.executable, '-c', r'''
import os, signal, sys, time
path = sys.argv[1]
fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
reopened = []
signal.signal(signal.SIGUSR2, lambda *_: reopened.append(True))
os.link(path, path + '.1'); os.unlink(path)     # renamed, not signalled
open(path, 'w').close()
print('ready', flush=True)
sys.stdin.readline()
os.write(fd, b'x: read /h/f1\n')      # still into the old file
while not reopened:
    time.sleep(0.01)
os.close(fd)
fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
os.write(fd, b'x: read /h/f2\n')
''', log], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == 'ready\n'
        tracker = readiness.LoadTracker(log, hosts)
        tracker.start_at_end()              # adopted
        signals = []
        assert tracker.check_writer(writer.pid, lambda: signals.append(1))
        tracker.expect({'p1': 'f1', 'p2': 'f2'})
        writer.stdin.write('go\n')
        writer.stdin.flush()
        time.sleep(0.2)
        writer.send_signal(signal.SIGUSR2)
        assert signals == [1]
        writer.wait(30)
        tracker.confirm(writer.pid)
        assert tracker.pending_count() == 0
    finally:
        if writer.poll() is None:
            writer.kill()
        writer.wait()


def one_network(host, lab, ports=1, **conf):
    """A network with a DHCP port and `ports` VM ports; the agent started
    with `conf` (e.g. dnsmasq__log_max_bytes)."""
    if conf:
        rig.write_conf(host.conf_path, host.base, **conf)
        from vdsm_dhcp import options
        host.conf = options.load(host.conf_path)
    ipam = host.ipam
    net = ipam.network()
    sub = ipam.subnet(net, '10.40.0.0/24', gateway='10.40.0.1')
    dhcp = ipam.dhcp_port(net, mac(0xd4000), [(sub, '10.40.0.2')],
                          host='host-a')
    vms = [ipam.port(net, mac(0x40000 + i), [(sub, '10.40.0.%d' % (10 + i))])
           for i in range(ports)]
    ipam.save()
    lab.bridge('flood')
    host.networks(('flood', net['id']))
    agent = host.agent()
    agent.wait_served('flood')
    return net, sub, dhcp, vms, agent


def log_bytes(host, net):
    base = os.path.join(host.conf.state_dir, net['id'], 'dnsmasq.log')
    total = 0
    for path in (base, base + '.1'):
        try:
            total += os.path.getsize(path)
        except OSError:
            pass
    return total


def log_text(host, net):
    base = os.path.join(host.conf.state_dir, net['id'], 'dnsmasq.log')
    text = ''
    for path in (base + '.1', base):
        try:
            with open(path, errors='replace') as f:
                text += f.read()
        except OSError:
            pass
    return text


def gate_then_lease(host, lab, net, sub, n):
    """A new port, gated like the VM hook does, then a one-shot lease.
    Returns (wait reply, lease)."""
    port = host.ipam.port(net, mac(0x48000 + n), [(sub, '10.40.0.%d' % n)])
    host.ipam.save()
    reply = client.call(host.conf.run_dir, 'wait',
                        {'macs': [port['mac_address']], 'timeout': 60},
                        timeout=120)
    vm = lab.vm('flood', port['mac_address'])
    lease = vm.dhcp(tries=5, timeout=1)
    lab.remove_vm(vm)
    return port, reply, lease


def test_flood_from_one_vm_does_not_stop_another_vm_starting(host, lab):
    """One VM floods DISCOVERs from random client MACs (and DECLINEs, which
    dnsmasq logs whatever --quiet says) at the DHCP port as fast as it can;
    meanwhile other VMs' new ports are gated ready and leased."""
    max_bytes = 64 * 1024
    net, sub, dhcp, (first,), agent = one_network(
        host, lab, dnsmasq__log_max_bytes=max_bytes)
    # a lease first: the bridge learns where the DHCP port is, and the
    # flood below goes to dnsmasq only (not into the other VMs' clients:
    # busybox udhcpc reads every frame, having no socket filter)
    assert lab.vm('flood', first['mac_address']).dhcp() is not None
    flooder = lab.vm('flood', mac(0xbad01))
    flood = Flood(flooder, count=20 * 1000 * 1000, seconds=120,
                  dst_mac=dhcp['mac_address'], decline_to='10.40.0.2')
    time.sleep(1.0)        # flooding at full rate
    results, biggest = [], 0
    try:
        for n in range(100, 104):
            assert flood.proc.poll() is None, 'the flood ended early'
            results.append(gate_then_lease(host, lab, net, sub, n))
            biggest = max(biggest, log_bytes(host, net))
            assert agent.answers()
    finally:
        sent = flood.stop()
    leased = sum(1 for port, reply, lease in results
                 if lease and lease['ip'] == port['fixed_ips'][0][
                     'ip_address'])
    ready = sum(1 for port, reply, _ in results
                if reply['ready'] == [port['mac_address']])
    faultlog.record('a VM floods DISCOVERs (random chaddr) and DECLINEs at '
                    'the DHCP port as fast as it can', len(results),
                    '%s packets sent; %d/%d other VMs gated ready, %d/%d '
                    'leased; dnsmasq log + rotated at most %d bytes' % (
                        sent, ready, len(results), leased, len(results),
                        biggest), leases_lost=len(results) - leased)
    assert sent is None or sent > 10000, 'the flood sent little: %s' % sent
    assert ready == len(results), [r for _, r, _ in results]
    assert leased == len(results), agent.log()[-3000:]
    # bounded: two files of about max_bytes (rotation runs every
    # supervise_interval; a few lines may land past the threshold)
    assert biggest <= 3 * max_bytes, biggest
    # no line per DISCOVER: unknown clients are ignored, routine ones quiet
    logged = log_text(host, net)
    assert 'DHCPDECLINE' in logged      # the flood reached dnsmasq
    assert 'DHCPDISCOVER' not in logged and 'no address' not in logged
    assert agent.answers()


def test_every_port_ready_while_the_log_rotates_many_times(host, lab):
    """dnsmasq.log rotates (rename, SIGUSR2: the real dnsmasq reopens it as
    its unprivileged user) many times while ports are added: every port
    becomes ready."""
    max_bytes = 4096
    net, sub, dhcp, (first,), agent = one_network(
        host, lab, dnsmasq__log_max_bytes=max_bytes,
        dnsmasq__client_rate=0)    # the DECLINEs below all get logged
    assert lab.vm('flood', first['mac_address']).dhcp() is not None
    noisy = lab.vm('flood', mac(0xbad02))
    log = os.path.join(host.conf.state_dir, net['id'], 'dnsmasq.log')
    inodes, done = set(), threading.Event()

    def watch_rotations():
        while not done.wait(0.005):
            try:
                inodes.add(os.stat(log).st_ino)
            except FileNotFoundError:
                pass
    watcher = threading.Thread(target=watch_rotations)
    flood = Flood(noisy, count=10 * 1000 * 1000, seconds=120, rate=5000,
                  dst_mac=dhcp['mac_address'], decline_to='10.40.0.2')
    watcher.start()
    not_ready = []
    try:
        for n in range(100, 160):
            port = host.ipam.port(net, mac(0x49000 + n),
                                  [(sub, '10.40.0.%d' % n)])
            host.ipam.save()
            reply = client.call(host.conf.run_dir, 'wait',
                                {'macs': [port['mac_address']],
                                 'timeout': 60}, timeout=120)
            if reply['ready'] != [port['mac_address']]:
                not_ready.append(reply)
        vm = lab.vm('flood', port['mac_address'])
        lease = vm.dhcp(tries=5, timeout=1)
    finally:
        sent = flood.stop()
        done.set()
        watcher.join()
    faultlog.record('dnsmasq log rotated (4 KiB) under a flood of logged '
                    'DECLINEs while 60 ports were added', len(inodes) - 1,
                    '%s packets sent; %d ports never ready' % (
                        sent, len(not_ready)))
    assert len(inodes) > 5, 'the log hardly rotated: %d' % len(inodes)
    assert not not_ready, not_ready
    assert lease and lease['ip'] == '10.40.0.159'
    wait_for(lambda: os.path.getsize(log) <= 3 * max_bytes, 10,
             what='the log back under its bound')
    assert agent.answers()


def in_ns(ns, argv, **kw):
    with rig.netns_preexec(ns) as enter:
        return subprocess.run(argv, preexec_fn=enter, timeout=30, **kw)


def test_without_nft_the_limit_is_missing_not_the_service(tmp_path, lab,
                                                          caplog):
    """No nftables program: a warning, no exception (dnsmasq still
    starts); with it, the ruleset is in the namespace."""
    from pyroute2 import netns
    from vdsm_dhcp import options
    from vdsm_dhcp.dnsmasq import netfilter
    ns = 'vm-%s-nft' % lab.tag
    netns.create(ns)
    lab.namespaces.append(ns)
    in_ns(ns, ['ip', 'link', 'add', 'vdn0', 'type', 'veth', 'peer', 'name',
               'vdn0p'], check=True)
    path = tmp_path / 'c.conf'
    path.write_text('[DEFAULT]\nstate_dir = %s\n[dnsmasq]\nnft = %s\n'
                    % (tmp_path, tmp_path / 'no-such-nft'))
    conf = options.load(str(path))
    assert netfilter.limit_clients(conf, ns, 'vdn0') is False
    assert 'no per-client DHCP rate limit on vdn0' in caplog.text
    path.write_text('[DEFAULT]\nstate_dir = %s\n' % tmp_path)
    conf = options.load(str(path))
    assert netfilter.limit_clients(conf, ns, 'vdn0') is True
    assert netfilter.limit_clients(conf, ns, 'vdn0') is True   # idempotent
    rules = in_ns(ns, ['nft', 'list', 'ruleset'], capture_output=True,
                  text=True).stdout
    assert 'limit rate over 50/second' in rules and '"vdn0"' in rules
    path.write_text('[DEFAULT]\nstate_dir = %s\n[dnsmasq]\nclient_rate = 0\n'
                    % tmp_path)
    assert netfilter.limit_clients(options.load(str(path)), ns, 'vdn0')
    assert 'vdsm_dhcp' not in in_ns(ns, ['nft', 'list', 'ruleset'],
                                    capture_output=True, text=True).stdout


def test_a_dnsmasq_that_lost_its_log_is_made_to_reopen_it(tmp_path,
                                                          monkeypatch):
    """After a failed write (ENOSPC) dnsmasq logs to syslog for good: the
    `read` lines would never come again. The periodic check sees that it
    holds no log and has it reopen."""
    log = str(tmp_path / 'dnsmasq.log')
    monkeypatch.setattr(readiness, 'dnsmasq_idle', lambda pid: True)
    monkeypatch.setattr(readiness.LoadTracker, 'WRITER_CHECK', 0.05)
    writer = subprocess.Popen([sys.executable, '-c', r'''
import os, signal, sys, time
path = sys.argv[1]
reopened = []
signal.signal(signal.SIGUSR2, lambda *_: reopened.append(True))
print('ready', flush=True)                 # its log is gone (closed)
while not reopened:
    time.sleep(0.01)
fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
os.write(fd, b'x: read /h/f1\n')
''', log], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == 'ready\n'
        open(log, 'w').close()
        tracker = readiness.LoadTracker(log, '/h')
        tracker.expect({'p1': 'f1'})
        reopen = lambda: writer.send_signal(signal.SIGUSR2)  # noqa: E731
        assert not tracker.check_writer(writer.pid, reopen)  # not yet due
        wait_for(lambda: tracker.check_writer(writer.pid, reopen), 10,
                 what='the check')
        writer.wait(30)
        tracker.confirm(writer.pid)
        assert tracker.pending_count() == 0
    finally:
        if writer.poll() is None:
            writer.kill()
        writer.wait()
