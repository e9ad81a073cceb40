"""vdsm-dhcp: the host-level CLI (setDHCP, and what an operator needs at 3 a.m.).

Exit status: 0 on success, the VDSM error code (mod 256) or 1 on failure.
"""
import argparse
import json
import sys
import time

from oslo_config import cfg

from vdsm_dhcp import config, control, dnsmasq, errors, networks_file, verb


def _fail(message, code=1):
    print('vdsm-dhcp: %s' % message, file=sys.stderr)
    return code


def _envelope_exit(envelope):
    status = envelope['status']
    if status['code'] == 0:
        print(status['message'])
        return 0
    return _fail('error %d: %s' % (status['code'], status['message']),
                 status['code'] % 256 or 1)


def _print_json(obj):
    print(json.dumps(obj, indent=2, sort_keys=True))


def _when(ts):
    if not ts:
        return '-'
    return time.strftime('%H:%M:%S', time.localtime(ts)) + \
        ' (%ds ago)' % max(0, time.time() - ts)


def cmd_set(conf, args):
    if args.json is not None:
        if args.pairs:
            return _fail('give NAME=UUID pairs or --json, not both', 2)
        try:
            text = sys.stdin.read() if args.json == '-' else \
                open(args.json).read()
            doc = json.loads(text)
        except OSError as e:
            return _fail('cannot read %s: %s' % (args.json, e.strerror), 2)
        except ValueError as e:
            return _fail('%s is not valid JSON: %s' % (args.json, e), 2)
        networks = doc.get('networks') if isinstance(doc, dict) else doc
        if isinstance(doc, dict) and 'networks' not in doc:
            return _fail('%s: expected {"networks": [...]} (the VDSM params '
                         'file) or a list' % args.json, 2)
    else:
        if not args.pairs:
            return _fail('give NAME=UUID pairs (use "clear" for the empty '
                         'list)', 2)
        networks = []
        for pair in args.pairs:
            name, sep, qid = pair.partition('=')
            if not sep:
                return _fail('%r is not NAME=UUID' % pair, 2)
            networks.append({'name': name, 'quantumId': qid})
    return _envelope_exit(verb.set_dhcp(networks, conf=conf))


def cmd_clear(conf, args):
    return _envelope_exit(verb.set_dhcp([], conf=conf))


def cmd_restore(conf, args):
    return _envelope_exit(verb.restore(conf=conf))


def cmd_list(conf, args):
    try:
        listed = networks_file.read(conf.networks_file)
    except errors.VdsmDhcpError as e:
        return _fail(str(e))
    if args.json:
        _print_json([n.to_json() for n in listed])
    elif not listed:
        print('no networks (DHCP is not served on this host)')
    for n in ([] if args.json else listed):
        print('%-15s %s' % (n.name, n.quantum_id))
    return 0


def _unit_state(conf):
    try:
        from vdsm_dhcp.systemd import Systemd
        return Systemd().unit_state(conf.agent_unit) or {
            'unit': conf.agent_unit, 'ActiveState': 'inactive',
            'SubState': 'dead', 'MainPID': 0}
    except errors.VdsmDhcpError as e:
        return {'unit': conf.agent_unit, 'error': str(e)}
    except Exception as e:   # no D-Bus at all: still show the rest
        return {'unit': conf.agent_unit, 'error': 'systemd: %s' % e}


def cmd_status(conf, args):
    result = {'unit': _unit_state(conf)}
    try:
        result['networks_file'] = [n.to_json() for n in
                                   networks_file.read(conf.networks_file)]
    except errors.VdsmDhcpError as e:
        result['networks_file_error'] = str(e)
    try:
        result['agent'] = control.call(conf, 'status')
    except control.ControlError as e:
        result['agent_error'] = str(e)
    if args.json:
        _print_json(result)
        return 0
    unit = result['unit']
    if 'error' in unit:
        # e.g. the agent run by hand on a host without systemd on D-Bus
        print('unit %s: unknown (%s)' % (unit['unit'], unit['error']))
    else:
        print('unit %s: %s (%s), main pid %s'
              % (unit['unit'], unit['ActiveState'], unit['SubState'],
                 unit['MainPID'] or '-'))
    if 'networks_file_error' in result:
        print('networks file: %s' % result['networks_file_error'])
    else:
        print('networks file %s: %d networks' % (
            conf.networks_file, len(result['networks_file'])))
    agent = result.get('agent')
    if agent is None:
        print('agent: %s' % result['agent_error'])
        for n in result.get('networks_file', []):
            print('  %-15s %s' % (n['name'], n['quantumId']))
        return 0
    src = agent['source']
    print('agent: pid %d, host %s, last reconcile %s' % (
        agent['pid'], agent['host'], _when(agent['last_reconcile'])))
    print('source: %s %s: %s' % (
        src.get('type'), src.get('path') or src.get('url', ''),
        'reachable' if src.get('reachable') else 'UNREACHABLE since %s: %s'
        % (_when(src.get('unreachable_since')), src.get('error'))))
    for n in agent['networks']:
        print()
        print('%s (%s): %s' % (n['name'], n['quantumId'],
                               'served' if n['served'] else
                               'NOT SERVED: %s' % n['reason']))
        print('  bridge %s, namespace %s' % (
            'present' if n['bridge_present'] else 'ABSENT',
            n['namespace'] or '-'))
        print('  DHCP port IPs %s, dnsmasq pid %s, %d hosts, last sync %s'
              % (', '.join(n['dhcp_ips']) or '-', n['dnsmasq_pid'] or '-',
                 n['hosts'], _when(n['last_sync'])))
        if n.get('error'):
            print('  error: %s' % n['error'])
        for problem in n['problems']:
            print('  problem: %s' % problem)
    return 0


def _find_network(conf, network):
    listed = networks_file.read(conf.networks_file)
    for n in listed:
        if network in (n.name, n.quantum_id):
            return n
    raise errors.VdsmDhcpError('network %r is not in the networks file %s'
                               % (network, conf.networks_file))


def cmd_hosts(conf, args):
    try:
        net = _find_network(conf, args.network)
    except errors.VdsmDhcpError as e:
        return _fail(str(e))
    files = dnsmasq.Files(conf.state_dir, net.quantum_id)
    written = dnsmasq.read_hostsdir(files.hosts)
    hosts = [{'port': port_id, 'file': name, 'entry': line}
             for port_id, (name, text) in sorted(written.items())
             for line in text.splitlines() if line]
    if args.json:
        _print_json({'network': net.name, 'quantumId': net.quantum_id,
                     'hostsdir': files.hosts, 'hosts': hosts})
        return 0
    print('# %s (%s): %d entries in %s' % (net.name, net.quantum_id,
                                           len(hosts), files.hosts))
    for h in hosts:
        print('%-40s %s' % (h['entry'], h['port']))
    return 0


def cmd_leases(conf, args):
    try:
        net = _find_network(conf, args.network)
    except errors.VdsmDhcpError as e:
        return _fail(str(e))
    path = dnsmasq.Files(conf.state_dir, net.quantum_id).leases
    leases = []
    try:
        with open(path) as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 4 and fields[0] != 'duid':
                    leases.append({'expires': int(fields[0]),
                                   'mac': fields[1], 'ip': fields[2],
                                   'hostname': fields[3]})
    except FileNotFoundError:
        pass
    except OSError as e:
        return _fail('cannot read %s: %s' % (path, e.strerror))
    if args.json:
        _print_json({'network': net.name, 'quantumId': net.quantum_id,
                     'leases': leases})
        return 0
    print('# %s (%s): %d leases in %s' % (net.name, net.quantum_id,
                                          len(leases), path))
    for lease in leases:
        left = lease['expires'] - time.time() if lease['expires'] else 0
        print('%-17s %-39s %-20s %s' % (
            lease['mac'], lease['ip'], lease['hostname'],
            'expires in %ds' % left if lease['expires'] else 'infinite'))
    return 0


def cmd_why(conf, args):
    try:
        answer = control.call(conf, 'why', {'mac': args.mac})
    except control.ControlError as e:
        return _fail(str(e))
    if args.json:
        _print_json(answer)
        return 0
    print('%s: %s' % (answer['mac'], answer['verdict']))
    if answer.get('network'):
        print('  network %s (%s), port %s' % (answer['network'],
                                              answer['quantumId'],
                                              answer['port']))
        print('  entry: %s' % answer.get('entry'))
    return 0


def cmd_wait(conf, args):
    try:
        reply = control.call(conf, 'wait', {'macs': args.macs,
                                            'timeout': args.timeout},
                             timeout=args.timeout + 10)
    except control.ControlError as e:
        return _fail(str(e))
    if args.json:
        _print_json(reply)
    else:
        for mac in reply['ready']:
            print('%s: ready' % mac)
        for mac, why in sorted(reply['not_ready'].items()):
            print('%s: NOT READY: %s' % (mac, why))
        print('waited %.3fs' % reply['waited'])
    return 0 if not reply['not_ready'] else 1


def cmd_sync(conf, args):
    try:
        control.call(conf, 'sync')
    except control.ControlError as e:
        return _fail(str(e))
    print('resync requested')
    return 0


def parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument('--config-file', default=argparse.SUPPRESS,
                        help='default: $%s or %s' % (
                            config.CONFIG_ENV, config.DEFAULT_CONFIG_FILE))
    p = argparse.ArgumentParser(
        prog='vdsm-dhcp', parents=[common],
        description='Host DHCP for VDSM networks, addresses from '
                    'Quantum/Neutron.')
    sub = p.add_subparsers(dest='command', required=True, metavar='COMMAND')

    def add(name, fn, help_, json_flag=False):
        sp = sub.add_parser(name, parents=[common], help=help_,
                            description=help_)
        sp.set_defaults(fn=fn)
        if json_flag:
            sp.add_argument('--json', action='store_true',
                            help='machine-readable output')
        return sp

    sp = add('set', cmd_set, 'serve DHCP for exactly these networks '
             '(setDHCP)')
    sp.add_argument('pairs', nargs='*', metavar='NAME=UUID',
                    help='VDSM network name = Quantum network id')
    sp.add_argument('--json', metavar='FILE',
                    help='the VDSM params file {"networks": [...]}, or - '
                         'for stdin')
    add('clear', cmd_clear, 'stop serving DHCP on this host (setDHCP([]))')
    add('list', cmd_list, 'the networks in the networks file', True)
    add('status', cmd_status, 'the agent unit, the list, and per network '
        'what is served and why not', True)
    add('restore', cmd_restore, 'at boot: start the agent if the list is '
        'not empty')
    sp = add('hosts', cmd_hosts, "a network's DHCP host entries", True)
    sp.add_argument('network', help='name or quantumId')
    sp = add('leases', cmd_leases, "a network's leases", True)
    sp.add_argument('network', help='name or quantumId')
    sp = add('why', cmd_why, 'why a MAC is, or is not, served', True)
    sp.add_argument('mac')
    sp = add('wait', cmd_wait, 'wait until dnsmasq can answer these MACs '
             '(the readiness gate of the VM hooks)', True)
    sp.add_argument('macs', nargs='+', metavar='MAC')
    sp.add_argument('--timeout', type=float, default=30.0,
                    help='seconds (default 30)')
    add('sync', cmd_sync, 'ask the agent to resync now')
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        conf = config.load(getattr(args, 'config_file', None))
    except cfg.Error as e:
        return _fail(str(e), 2)
    return args.fn(conf, args)


if __name__ == '__main__':
    sys.exit(main())
