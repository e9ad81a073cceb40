"""make demo: the real agent, real dnsmasq and real DHCP clients on a lab
built from namespaces only (run through tests/isolated, which gives this
process a private "host" network + mount namespace)."""
import os
import shutil
import subprocess
import sys
import tempfile
import time

from tests import leftovers, rig
from tests.rig import mac
from tests.systemd_manager import SystemdManager
from vdsm_dhcp import options

HEADER = """\
vdsm-dhcp demo: one isolated "host" with three bridges.
  red   10.10.0.0/24  listed    router, DNS, a host route, MTU 1450
  blue  10.20.0.0/24  listed    plus fd00:20::/64 DHCPv6-stateful
  green 10.30.0.0/24  NOT listed (in the IPAM, bridge present)
A private systemd manager on a private D-Bus plays the host's systemd:
`vdsm-dhcp set` (the setDHCP verb) starts the agent as a transient unit,
which serves only the listed networks, and only to MACs of IPAM ports.
Each "VM" is a namespace on a bridge running udhcpc once."""
NO_OFFER = {'green': 'no offer: not listed on this host',
            'unknown': 'no offer: MAC not in the IPAM'}


def build_ipam(ipam, host):
    """Three networks; each with this host's DHCP port and a few VM ports.
    Returns {name: (net, v4 subnet, [VM ports])}."""
    nets = {}
    for i, (name, mtu) in enumerate([('red', 1450), ('blue', 1500),
                                     ('green', 1500)]):
        p = '10.%d0.0' % (i + 1)
        net = ipam.network(mtu=mtu)
        net['name'] = name
        routes = [('192.168.77.0/24', p + '.254')] if name == 'red' else ()
        sub = ipam.subnet(net, p + '.0/24', gateway=p + '.1',
                          dns=[p + '.53'], routes=routes)
        extra = []
        if name == 'blue':   # dual stack: every port also gets a v6 address
            v6 = ipam.subnet(net, 'fd00:20::/64', gateway='fd00:20::1',
                             ip_version=6,
                             ipv6_address_mode='dhcpv6-stateful')
            extra = [(v6, 'fd00:20::2')]
        ipam.dhcp_port(net, mac(0xd0000 + i), [(sub, p + '.2')] + extra,
                       host=host)
        ports = []
        for n in range(3 if name == 'red' else 2):
            ips = [(sub, '%s.%d' % (p, 10 + n))]
            if name == 'blue':
                ips.append((v6, 'fd00:20::%d' % (10 + n)))
            ports.append(ipam.port(net, mac(0x10000 * (i + 1) + n), ips))
        nets[name] = (net, sub, ports)
    ipam.save()
    return nets


def expected(port):
    return port['fixed_ips'][0]['ip_address'] if port else None


def timed(fn, *args, **kw):
    start = time.monotonic()
    result = fn(*args, **kw)
    return result, (time.monotonic() - start) * 1000


def dhcp6(vm):
    """dhclient -6 once in the VM: the address bound, or None. dhclient
    gives its script an environment of its own, so the lease file path
    goes through -e (and cwd is ours, should it still be lost)."""
    out = vm.out + '-v6'
    args = ['-sf', rig.DHCP_SCRIPT, '-lf', out + '.leases', '-pf',
            out + '.pid', '-e', 'VDSM_DHCP_LEASE_OUT=' + out, 'eth0']
    try:
        vm.run(['dhclient', '-6', '-1'] + args, cwd=vm.lab.dir,
               capture_output=True, timeout=10)
    except subprocess.TimeoutExpired:   # -1 retries for ever unanswered
        pass
    finally:   # once bound, dhclient stays in the background: end it
        vm.run(['dhclient', '-6', '-x'] + args, cwd=vm.lab.dir,
               capture_output=True, timeout=10)
    return rig.read_env(out).get('new_ip6_address') \
        if os.path.exists(out) else None


def shell(conf_path, *args, show=True, grep=None):
    """Run `vdsm-dhcp ARGS` as an operator would, print it and its
    output (only the lines containing `grep`, when given)."""
    out = subprocess.run([os.path.join(rig.BIN, 'vdsm-dhcp'),
                          '--config-file', conf_path] + list(args),
                         capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, NO_COLOR='1'))
    if show:
        text = out.stdout + out.stderr
        if grep:
            text = ''.join(line for line in text.splitlines(True)
                           if any(g in line for g in grep))
        print('\n$ vdsm-dhcp %s\n%s' % (' '.join(args), text), end='')
    return out


def run(base, failures):
    conf_path = rig.write_conf(os.path.join(base, 'vdsm-dhcp.conf'), base,
                               host='demo-host',
                               agent_unit='vdsm-dhcp-agent.service')
    conf = options.load(conf_path)
    ipam = rig.Ipam(conf.file.path)
    nets = build_ipam(ipam, 'demo-host')
    lab = rig.Lab()
    manager = SystemdManager().start()
    os.environ['DBUS_SYSTEM_BUS_ADDRESS'] = manager.bus
    agent = rig.AgentProcess(conf_path, conf, os.path.join(base, 'agent.log'))
    try:
        for name in nets:
            lab.bridge(name, mtu=nets[name][0]['mtu'])
        # setDHCP, as VDSM calls it: green left out
        start = time.monotonic()
        out = shell(conf_path, 'set', 'red=' + nets['red'][0]['id'],
                    'blue=' + nets['blue'][0]['id'])
        if out.returncode != 0:
            raise RuntimeError('vdsm-dhcp set failed: %s' % out.stderr)
        for n in ('red', 'blue'):
            agent.wait_served(n)
        print('agent unit started, red and blue served %.0f ms after the '
              'call\n' % ((time.monotonic() - start) * 1000))

        # every VM port of every network, then a MAC no port has
        cases = [('%s-vm%d' % (n, k + 1), n, p['mac_address'], p)
                 for n in ('red', 'blue', 'green')
                 for k, p in enumerate(nets[n][2])]
        cases.append(('unknown', 'red', mac(0xeeeee), None))
        vms = {}
        fmt = '%-10s %-6s %-17s %-11s %-11s %-10s %-11s %-5s %6.0f'
        nofmt = '%-10s %-6s %-17s %-11s %-40s %6.0f'
        print((fmt.replace('6.0f', '6s')) % (
            'VM', 'net', 'MAC', 'expected', 'obtained', 'router', 'DNS',
            'MTU', 'ms'))
        for vm_name, net, mac_address, port in cases:
            want = expected(port) if net != 'green' else None
            # no offer is the expected outcome for green and unknown: give
            # them 2 discovers, not 3, to keep the demo short
            vms[vm_name] = lab.vm(net, mac_address)
            lease, ms = timed(vms[vm_name].dhcp,
                              tries=2 if want is None else 3)
            if lease:
                got = (lease.get('ip'), lease.get('router'),
                       lease.get('dns'), lease.get('mtu', '-'))
            else:   # the message spans obtained..MTU
                got = (NO_OFFER['green' if net == 'green' else 'unknown'],)
            print((fmt if lease else nofmt) % (
                (vm_name, net, mac_address, want or '-') + got + (ms,)))
            if (lease or {}).get('ip') != want:
                failures.append('%s: expected %s, got %s'
                                % (vm_name, want, got[0]))

        # DHCPv6: blue-vm1 asks for its stateful v6 address too
        port, vm = nets['blue'][2][0], vms['blue-vm1']
        # dhclient -6 needs a usable link-local address: wait out DAD
        rig.wait_for(lambda: 'tentative' not in vm.run(
            ['ip', '-6', 'addr', 'show', 'eth0'], capture_output=True,
            text=True).stdout, timeout=5, interval=0.05, what='DAD')
        got6, ms = timed(dhcp6, vm)
        want6 = port['fixed_ips'][1]['ip_address']
        print('\nDHCPv6 blue-vm1 %s: expected %s, obtained %s (%.0f ms)'
              % (port['mac_address'], want6, got6, ms))
        if got6 != want6:
            failures.append('DHCPv6: expected %s, got %s' % (want6, got6))

        # a port created in the IPAM while the agent runs: the VM exists
        # first, so the time measured is the agent's, not the plumbing's
        # then the readiness gate the VM hooks run, then one DHCP try
        net, sub, _ = nets['red']
        new = ipam.port(net, mac(0x10077), [(sub, '10.10.0.77')])
        vm = lab.vm('red', new['mac_address'])
        start = time.monotonic()
        ipam.save()
        print('\nport %s (10.10.0.77) added to the IPAM' % new['mac_address'],
              end='')
        gate = shell(conf_path, 'wait', '--timeout', '10', new['mac_address'])
        lease = vm.dhcp(tries=1) or {}
        print('VM got %s %.0f ms after the port was added, on its first '
              'DISCOVER' % (lease.get('ip'),
                            (time.monotonic() - start) * 1000))
        if gate.returncode != 0 or lease.get('ip') != '10.10.0.77':
            failures.append('new port: gate %s, lease %s'
                            % (gate.returncode, lease.get('ip')))

        status = shell(conf_path, 'status')
        if 'active (running)' not in status.stdout:
            failures.append('status does not show the unit active')
        shell(conf_path, 'why', nets['red'][2][0]['mac_address'])
        shell(conf_path, 'why', nets['green'][2][0]['mac_address'])
        shell(conf_path, 'metrics', grep=('vdsm_dhcp_network_served{',
                                          'vdsm_dhcp_network_leases{',
                                          'readiness_latency_seconds_count',
                                          'wait_requests_total{outcome="r'))
        out = shell(conf_path, 'clear')
        if out.returncode != 0:
            failures.append('vdsm-dhcp clear failed: %s' % out.stderr)
        namespaces = [n for n in os.listdir('/run/netns')
                      if n.startswith('qdhcp-')]
        from vdsm_dhcp.setdhcp.systemd import Systemd
        unit = Systemd().unit_state(conf.agent_unit)
        print('after clear: unit %s, %d qdhcp namespaces' % (
            'gone' if not unit else unit['ActiveState'], len(namespaces)))
        if unit:
            failures.append('clear left the unit %s' % unit['ActiveState'])
        if namespaces:
            failures.append('clear left %s' % namespaces)
    finally:
        # whatever happened above: the empty list, the unit stopped (its
        # agent tears everything down), then the manager
        rig.write_networks(base, [])
        try:
            from vdsm_dhcp.setdhcp.systemd import Systemd
            Systemd().stop(conf.agent_unit, timeout=60)
        except Exception as e:
            failures.append('stopping the unit: %s' % e)
        subprocess.run([os.path.join(rig.BIN, 'vdsm-dhcp-agent'),
                        '--config-file', conf_path, '--cleanup'],
                       capture_output=True, timeout=60)
        rig.kill_leftover_dnsmasq(conf.state_dir)
        manager.stop()
        os.environ.pop('DBUS_SYSTEM_BUS_ADDRESS', None)
        lab.close()


def main():
    if os.environ.get('VDSM_DHCP_ISOLATED') != '1':
        print('run me through tests/isolated (make demo): I build bridges')
        return 2
    print(HEADER)
    # what the demo starts and makes is marked as its own; a SIGTERM raises
    # like Ctrl-C, so the teardown below runs either way
    leftovers_run = leftovers.Run().begin()
    leftovers.raise_on_sigterm()
    failures = []
    try:
        # dnsmasq drops privileges to nobody: its state must be reachable
        base = tempfile.mkdtemp(prefix='vdsm-dhcp-demo-')
        try:
            os.chmod(base, 0o755)
            run(base, failures)
        except Exception as e:
            failures.append('%s: %s' % (type(e).__name__, e))
        finally:
            shutil.rmtree(base, ignore_errors=True)
    finally:
        # what teardown left: named namespaces, processes, temp dirs
        left = os.listdir('/run/netns') + leftovers_run.finish()
        print('\nteardown: left behind: %s'
              % ('\n  '.join([''] + left) if left else 'nothing'))
    if left:
        failures.append('teardown left %d things (removed since)'
                        % len(left))
    if failures:
        print('\nFAILED:\n  ' + '\n  '.join(failures))
        return 1
    print('\nOK: listed VMs got exactly their IPs; green and unknown none')
    return 0


if __name__ == '__main__':
    try:
        sys.exit(main())
    except KeyboardInterrupt as e:     # Ctrl-C or SIGTERM, cleaned up
        print('interrupted: %s' % (e or 'Ctrl-C'), file=sys.stderr)
        sys.exit(130)
