"""The VM-start race, measured: a port appears in the IPAM, then a DHCP
client runs once (one DISCOVER, 1 s to answer), with and without the
before_vm_start gate. Also the gate's cost when the entry is already loaded.

    tests/isolated .venv/bin/python -m bench.race [ROUNDS]
"""
import os
import shutil
import statistics
import sys
import tempfile
import time

from tests import leftovers, rig
from tests.rig import Host, mac
from tests.integration.test_agent_e2e import one_network
from tests.integration.test_hooks import DOMXML, NIC, run_hook


def rounds(host, lab, net, sub, n, gate, offset):
    """offset: where this phase's MACs and IPs start (a reused IP would be
    a duplicate the agent rightly refuses to serve)."""
    got, gate_ms = 0, []
    for i in range(offset, offset + n):
        port = host.ipam.port(net, mac(0x100000 + i),
                              [(sub, '10.10.%d.%d' % (1 + i // 200,
                                                      10 + i % 200))])
        host.ipam.save()
        if gate:
            r = run_hook(host, 'before_vm_start',
                         xml=DOMXML % (NIC % (port['mac_address'], 'red')))
            gate_ms.append(r.elapsed * 1000)
        vm = lab.vm('red', port['mac_address'])
        lease = vm.dhcp(tries=1, timeout=1)
        got += bool(lease and lease['ip'] == port['fixed_ips'][0][
            'ip_address'])
        lab.remove_vm(vm)
    return got, gate_ms


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    leftovers.raise_on_sigterm()    # a SIGTERM still runs the clean-up
    base = tempfile.mkdtemp(prefix='vdsm-dhcp-bench-')
    lab = host = None
    try:
        os.chmod(base, 0o755)
        lab = rig.Lab()
        host = Host(os.path.join(base, 'host-a'))
        rig.write_conf(host.conf_path, host.base, control_group='nogroup',
                       hooks__wait_timeout=5)
        net, sub, _ = one_network(host, lab, cidr='10.10.0.0/16',
                                  prefix='10.10.0', vms=0)
        host.networks(('red', net['id']))
        agent = host.agent()
        agent.wait_served('red')
        ok, _ = rounds(host, lab, net, sub, n, gate=False, offset=0)
        print('gate skipped: %d/%d clients got their lease on the first '
              'try (the race bit %d times, %.0f%%)'
              % (ok, n, n - ok, 100.0 * (n - ok) / n))
        ok, ms = rounds(host, lab, net, sub, n, gate=True, offset=n)
        print('gate on:      %d/%d; hook from port added to return: median '
              '%.0f ms, p95 %.0f ms' % (ok, n, statistics.median(ms),
                                         sorted(ms)[int(len(ms) * .95)]))
        port = host.ipam.ports[-1]
        xml = DOMXML % (NIC % (port['mac_address'], 'red'))
        hook = sorted(run_hook(host, 'before_vm_start', xml=xml).elapsed
                      * 1000 for _ in range(20))
        empty = sorted(run_hook(host, 'before_vm_start',
                                xml=DOMXML % (NIC % (mac(1), 'other'))).elapsed
                       * 1000 for _ in range(20))
        from vdsm_dhcp.agent import control
        t = []
        for _ in range(50):
            start = time.monotonic()
            control.call(host.conf, 'wait', {'macs': [port['mac_address']],
                                              'timeout': 5})
            t.append((time.monotonic() - start) * 1000)
        print('entry already loaded: hook %.0f ms (median; a hook with '
              'nothing to wait for: %.0f ms), the wait request itself %.1f '
              'ms' % (statistics.median(hook), statistics.median(empty),
                      statistics.median(t)))
    finally:
        try:
            if host is not None:
                host.cleanup()
        finally:
            if lab is not None:
                lab.close()
            shutil.rmtree(base, ignore_errors=True)


if __name__ == '__main__':
    main()
