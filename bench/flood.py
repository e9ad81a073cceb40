"""A tenant VM floods DHCPDISCOVERs from random client MACs: how long does
another VM's new port take to become ready (the VM-start gate), and to get
a lease, with and without the flood? (issue 10.12)

Not part of `make bench` (no figN_ prefix): run it by hand, small sizes,
inside tests/isolated:
    tests/isolated .venv/bin/python -m bench.flood [--ports 20] \
        [--trials 8] [--flood-seconds 20] [--rate PPS] [--client-rate N] \
        [--broadcast]

One network with `--ports` VM ports and the agent (file source). Phase
"idle": `--trials` times, a port is added to the IPAM file and a control
socket `wait` on its MAC (what the VM hook does) is timed from the IPAM
write to the answer "ready"; then that VM takes a one-shot udhcpc lease
(up to 5 DISCOVERs, 1 s apart). Phase "flood": the same while a VM
namespace on the same bridge sends raw DHCPDISCOVERs (random chaddr, its
own Ethernet source, as a VM behind oVirt's no-mac-spoofing filter can)
as fast as it can, to the DHCP port's MAC (--broadcast: to everyone; then
busybox udhcpc in the other VMs, which has no socket filter, drowns in
it, whatever the server does). Also reported: packets sent, bytes of
dnsmasq log, CPU seconds of the agent and of dnsmasq in each phase.
`--client-rate 0` runs the agent without the per-client limit.

The sender (Flood) is shared with tests/test_faults_flood.py; it is bounded
in packet count and time, and only ever writes onto the test bridge from
inside a VM namespace."""
import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

from bench import _lab
from tests import rig
from vdsm_dhcp import client

# The sender, run with the venv's python inside the VM namespace:
# argv = ifname, max packets, max seconds, packets/s (0: as fast as it
# can), Ethernet destination (ff:ff:ff:ff:ff:ff: broadcast, as clients
# send; or the DHCP port's MAC: only dnsmasq gets the flood), and
# optionally the DHCP server's IP: then every other frame is a DHCPDECLINE
# naming it (dnsmasq logs each, --quiet-dhcp or not). Prints the count
# sent.
SENDER = r'''
import os, signal, socket, struct, sys, time
ifname, count, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
rate = float(sys.argv[4])
dst_mac = bytes.fromhex(sys.argv[5].replace(':', ''))
server = socket.inet_aton(sys.argv[6]) if sys.argv[6:] else None
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
sock.bind((ifname, 0))
own_mac = sock.getsockname()[4]

def checksum(data):
    total = sum(struct.unpack('!%dH' % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xffff) + (total >> 16)
    return ~total & 0xffff

def frame(chaddr, xid, decline=False):
    bootp = struct.pack('!BBBBIHH4s4s4s4s16s64s128s', 1, 1, 6, 0, xid, 0,
                        0x8000, bytes(4), bytes(4), bytes(4), bytes(4),
                        chaddr, bytes(64), bytes(128))
    if decline:     # "I found your address in use": server id, address
        options = (b'\x63\x82\x53\x63' + b'\x35\x01\x04'
                   + b'\x36\x04' + server + b'\x32\x04' + server[:3]
                   + bytes([250]) + b'\xff')
    else:
        options = (b'\x63\x82\x53\x63' + b'\x35\x01\x01'
                   + b'\x37\x04\x01\x03\x06\x0f' + b'\xff')
    payload = bootp + options
    udp = struct.pack('!HHHH', 68, 67, 8 + len(payload), 0) + payload
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), 0, 0, 64, 17,
                     0, bytes(4), b'\xff' * 4)
    ip = ip[:10] + struct.pack('!H', checksum(ip)) + ip[12:]
    return dst_mac + own_mac + b'\x08\x00' + ip + udp

frames = [frame(os.urandom(6) + bytes(10), i, server and i % 2)
          for i in range(4096)]
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
start = time.monotonic()
sent, deadline = 0, start + seconds
while sent < count and not stop and time.monotonic() < deadline:
    if rate and sent > (time.monotonic() - start) * rate:
        time.sleep(256 / rate)
        continue
    for _ in range(min(256, count - sent)):
        try:
            sock.send(frames[sent % 4096])
        except OSError:
            pass
        sent += 1
print(sent, flush=True)
'''


class Flood:
    """A running sender in `vm`'s namespace; stop() ends it (by its PID)
    and returns the number of packets it sent."""

    def __init__(self, vm, count=10 ** 8, seconds=30.0, rate=0,
                 dst_mac='ff:ff:ff:ff:ff:ff', decline_to=None):
        with rig.netns_preexec(vm.ns) as enter:
            self.proc = subprocess.Popen(
                [sys.executable, '-c', SENDER, 'eth0', str(count),
                 str(seconds), str(rate), dst_mac] +
                ([decline_to] if decline_to else []), stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, preexec_fn=enter)
        vm.lab.procs.append(self.proc)
        self.started = time.monotonic()

    def stop(self, timeout=None):
        """Wait for it to finish (timeout=None), or end it now."""
        if timeout is None:
            self.proc.terminate()
        try:
            out, err = self.proc.communicate(timeout=timeout or 10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        self.seconds = time.monotonic() - self.started
        try:
            return int(out.split()[-1])
        except (IndexError, ValueError):
            # terminated before printing: the count is unknown
            return None


def timed_ready(bench, net, sub, prefix, host_no):
    """Add a port; ms from the IPAM write to the gate's "ready"."""
    port = bench.port(net, sub, prefix, host_no, save=False)
    answer = {}

    def gate():
        started.wait()
        try:
            answer['reply'] = client.call(
                bench.conf.run_dir, 'wait',
                {'macs': [port['mac_address']], 'timeout': 30}, timeout=60)
        except client.ControlError as e:
            answer['error'] = str(e)
        answer['at'] = time.monotonic()
    started = threading.Event()
    thread = threading.Thread(target=gate)
    thread.start()
    t0 = time.monotonic()
    bench.save()
    started.set()
    thread.join(90)
    reply = answer.get('reply') or {}
    ready = port['mac_address'] in reply.get('ready', [])
    return port, ((answer['at'] - t0) * 1000 if ready else None)


def phase(bench, agent_pid, net, sub, prefix, name, trials, next_ip,
          flood_vm=None, flood_seconds=20.0, rate=0,
          dst_mac='ff:ff:ff:ff:ff:ff'):
    status = bench.call('status')
    qid = net['id']
    pid = [n for n in status['networks'] if n['quantumId'] == qid][0][
        'dnsmasq_pid']
    log = os.path.join(bench.conf.state_dir, qid, 'dnsmasq.log')

    def logged():
        total = 0
        for path in (log, log + '.1'):
            try:
                total += os.path.getsize(path)
            except OSError:
                pass
        return total
    cpu0 = (_lab.cpu_seconds(agent_pid), _lab.cpu_seconds(pid))
    log0 = os.path.getsize(log)
    flood = (Flood(flood_vm, seconds=flood_seconds, rate=rate,
                   dst_mac=dst_mac) if flood_vm else None)
    if flood:
        time.sleep(1.0)   # let it reach full rate
    t_start = time.monotonic()
    readiness, leases, max_log = [], [], logged()
    for i in range(trials):
        port, ms = timed_ready(bench, net, sub, prefix, next_ip + i)
        readiness.append(ms)
        max_log = max(max_log, logged())
        vm = bench.lab.vm(name, port['mac_address'])
        t0 = time.monotonic()
        lease = vm.dhcp(tries=5, timeout=1)
        leases.append((time.monotonic() - t0) * 1000 if lease else None)
        bench.lab.remove_vm(vm)
    elapsed = time.monotonic() - t_start
    sent = flood.stop() if flood else 0
    cpu1 = (_lab.cpu_seconds(agent_pid), _lab.cpu_seconds(pid))
    got = [r for r in readiness if r is not None]
    return {
        'phase': 'flood' if flood else 'idle',
        'ready_ms_median': round(statistics.median(got), 1) if got else None,
        'ready_ms_max': round(max(got), 1) if got else None,
        'not_ready': len(readiness) - len(got),
        'lease_ms_median': round(statistics.median(
            [x for x in leases if x is not None]), 1)
        if any(leases) else None,
        'lease_ms_max': round(max(x for x in leases if x is not None), 1)
        if any(leases) else None,
        'no_lease': sum(1 for x in leases if x is None),
        'packets_sent': sent,
        'packets_per_s': round(sent / flood.seconds) if flood and sent
        else None,
        'dnsmasq_log_bytes_written': max(0, os.path.getsize(log) - log0)
        if logged() >= log0 else None,
        'log_and_rotated_max_bytes': max_log,
        'agent_cpu_s': round(cpu1[0] - cpu0[0], 2),
        'dnsmasq_cpu_s': round(cpu1[1] - cpu0[1], 2),
        'seconds': round(elapsed, 1),
    }


def run(ports=20, trials=8, flood_seconds=20.0, rate=0, client_rate=None,
        broadcast=False):
    extra = {} if client_rate is None else {
        'dnsmasq__client_rate': client_rate}
    bench = _lab.Bench(**extra)
    results = []
    try:
        (name, net, sub, prefix), = bench.networks(1, ports)
        bench.listed()
        agent = bench.agent()
        rig.wait_for(lambda: _lab.servable(bench.status()), 60, 0.05,
                     'network served')
        flood_vm = bench.lab.vm(name, rig.mac(0xfff001))
        # a VM takes a lease first: the bridge learns where the DHCP
        # port's MAC is (a flood sent to it then reaches dnsmasq only)
        dhcp_port = bench.ipam.ports[-ports - 1]
        assert dhcp_port['device_owner'] == 'network:dhcp'
        first = bench.lab.vm(name, bench.ipam.ports[-1]['mac_address'])
        assert first.dhcp() is not None, 'no lease before the flood'
        dst_mac = ('ff:ff:ff:ff:ff:ff' if broadcast
                   else dhcp_port['mac_address'])
        next_ip = 10 + ports
        results.append(phase(bench, agent.proc.pid, net, sub, prefix, name,
                             trials, next_ip))
        results.append(phase(bench, agent.proc.pid, net, sub, prefix, name,
                             trials, next_ip + trials, flood_vm=flood_vm,
                             flood_seconds=flood_seconds, rate=rate,
                             dst_mac=dst_mac))
        results.append(phase(bench, agent.proc.pid, net, sub, prefix, name,
                             trials, next_ip + 2 * trials))
        results[-1]['phase'] = 'idle after'
    finally:
        left = bench.close()
    return {'ports': ports, 'trials': trials, 'client_rate': client_rate,
            'flood_to': 'broadcast' if broadcast else 'the DHCP port',
            'others': _lab.others(),
            'phases': results, 'survivors': left}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--ports', type=int, default=20)
    parser.add_argument('--trials', type=int, default=8)
    parser.add_argument('--flood-seconds', type=float, default=20.0)
    parser.add_argument('--rate', type=float, default=0,
                        help='flood packets/s (default: as fast as it can)')
    parser.add_argument('--client-rate', type=int, default=None,
                        help='the agent\'s dnsmasq.client_rate (0: no '
                             'per-client limit; default: the agent\'s)')
    parser.add_argument('--broadcast', action='store_true',
                        help='flood to the Ethernet broadcast address (every '
                             'VM on the bridge gets it; busybox udhcpc, '
                             'with no socket filter, then drowns) instead of '
                             'the DHCP port\'s MAC')
    args = parser.parse_args()
    _lab.require_isolation()
    print(json.dumps(run(args.ports, args.trials, args.flood_seconds,
                         args.rate, args.client_rate, args.broadcast),
                     indent=1))


if __name__ == '__main__':
    main()
