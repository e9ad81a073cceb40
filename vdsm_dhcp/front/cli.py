"""vdsm-dhcp: the host-level CLI (setDHCP, and what an operator needs at
3 a.m.).

Two kinds of command:
- set, clear, restore run the verb: they load the full oslo configuration
  (secrets included) and talk to systemd;
- the others only read the networks file and ask the agent over its control
  socket (as CNI's front commands ask their daemon), never the agent's
  files. They import the standard library only (settings.py, client.py):
  operators script them, so each call must be quick.

Exit status: 0 on success, the VDSM error code (mod 256) or 1 on failure.
"""
import argparse
import json
import sys
import time

from vdsm_dhcp import client, errors, settings
from vdsm_dhcp.setdhcp import networks_file


# of `status --json`: 1 had no "version" key; 2 adds it, and each
# network's crashes and retry_in (older keys are unchanged)
STATUS_VERSION = 2


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
    return _run_verb(args, lambda verb, conf: verb.set_dhcp(networks,
                                                           conf=conf))


def cmd_clear(conf, args):
    return _run_verb(args, lambda verb, conf: verb.set_dhcp(
        [], conf=conf, wait_stopped=True))


def cmd_restore(conf, args):
    return _run_verb(args, lambda verb, conf: verb.restore(conf=conf))


def _run_verb(args, call):
    """The verb needs the whole configuration (oslo.config, secrets
    included) and systemd: loaded here only, not for the query commands."""
    from oslo_config import cfg

    from vdsm_dhcp import options
    from vdsm_dhcp.setdhcp import verb
    try:
        conf = options.load(getattr(args, 'config_file', None))
    except cfg.Error as e:
        return _fail(str(e), 2)
    return _envelope_exit(call(verb, conf))


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
        from vdsm_dhcp.setdhcp.systemd import Systemd   # dbus: only for status
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
        result['agent'] = client.call(conf.run_dir, 'status')
    except client.ControlError as e:
        result['agent_error'] = str(e)
    if args.json:
        result['version'] = STATUS_VERSION
        _print_json(result)
        return 0
    from vdsm_dhcp.front import status_text
    print('\n'.join(status_text.render(result,
                                        color=status_text.use_color())))
    return 0


def _query(conf, args, cmd, request, show):
    """One request to the agent, its answer as JSON (--json) or shown by
    `show` for a human."""
    try:
        answer = client.call(conf.run_dir, cmd, request)
    except client.ControlError as e:
        return _fail(str(e))
    if args.json:
        _print_json(answer)
    else:
        show(answer)
    return 0


def cmd_hosts(conf, args):
    return _query(conf, args, 'hosts', {'network': args.network}, _show_hosts)


def _show_hosts(answer):
    print('# %s (%s): %d entries' % (answer['network'], answer['quantumId'],
                                     len(answer['hosts'])))
    for host in answer['hosts']:
        print('%-60s %s' % (host['entry'], host['port']))


def cmd_leases(conf, args):
    return _query(conf, args, 'leases', {'network': args.network},
                  _show_leases)


def _show_leases(answer):
    leases = answer['leases']
    print('# %s (%s): %d leases' % (answer['network'], answer['quantumId'],
                                    len(leases)))
    for lease in leases:
        left = lease['expires'] - time.time() if lease['expires'] else 0
        print('%-17s %-39s %-20s %s' % (
            lease['mac'] or '-', lease['ip'], lease['hostname'],
            'expires in %ds' % left if lease['expires'] else 'infinite'))


def cmd_why(conf, args):
    return _query(conf, args, 'why', {'mac': args.mac}, _show_why)


def _show_why(answer):
    print('%s: %s' % (answer['mac'], answer['verdict']))
    if answer.get('network'):
        print('  network %s (%s), port %s' % (answer['network'],
                                              answer['quantumId'],
                                              answer['port']))
        print('  entry: %s' % answer.get('entry'))


def cmd_wait(conf, args):
    try:
        request = {'macs': args.macs, 'timeout': args.timeout}
        if args.gone:
            request['gone'] = True
        reply = client.call(conf.run_dir, 'wait', request,
                            timeout=args.timeout + 10)
    except client.ControlError as e:
        return _fail(str(e))
    if args.json:
        _print_json(reply)
    else:
        done, not_done = ('gone', 'STILL SERVED') if args.gone else \
            ('ready', 'NOT READY')
        for mac in reply['ready']:
            print('%s: %s' % (mac, done))
        for mac, why in sorted(reply['not_ready'].items()):
            print('%s: %s: %s' % (mac, not_done, why))
        print('waited %.3fs' % reply['waited'])
    return 0 if not reply['not_ready'] else 1


def cmd_metrics(conf, args):
    try:
        text = client.call(conf.run_dir, 'metrics')
    except client.ControlError as e:
        return _fail(str(e))
    print(text, end='')
    return 0


def cmd_sync(conf, args):
    try:
        client.call(conf.run_dir, 'sync')
    except client.ControlError as e:
        return _fail(str(e))
    print('resync requested')
    return 0


def parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument('--config-file', default=argparse.SUPPRESS,
                        help='default: $%s or %s' % (
                            settings.CONFIG_ENV, settings.DEFAULT_CONFIG_FILE))
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
    sp.add_argument('--gone', action='store_true',
                    help='wait until dnsmasq no longer answers them (their '
                         'ports were removed)')
    add('sync', cmd_sync, 'ask the agent to resync now')
    add('metrics', cmd_metrics, "the agent's metrics, in Prometheus' text "
        'format')
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    conf = settings.load(getattr(args, 'config_file', None))
    if conf.problem and args.fn not in (cmd_set, cmd_clear, cmd_restore):
        print('vdsm-dhcp: warning: %s' % conf.problem, file=sys.stderr)
    return args.fn(conf, args)


if __name__ == '__main__':
    sys.exit(main())
