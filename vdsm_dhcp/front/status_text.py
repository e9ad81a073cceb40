"""`vdsm-dhcp status` for a human: problems first, then one aligned row per
network. Pure: the status document in, lines out (standard library only).

Colour only when asked (the CLI asks on a terminal, and never with
$NO_COLOR set: https://no-color.org).
"""
import os
import sys
import time

RED, GREEN, YELLOW, BOLD, RESET = ('\033[31m', '\033[32m', '\033[33m',
                                   '\033[1m', '\033[0m')
COLUMNS = ('NETWORK', 'QUANTUM ID', 'SERVED', 'BRIDGE', 'DNSMASQ', 'HOSTS',
           'LOADED', 'LAST SYNC', 'DHCP IPS')


def use_color(stream=sys.stdout, environ=os.environ):
    return (stream.isatty() and 'NO_COLOR' not in environ
            and environ.get('TERM') != 'dumb')


def ago(ts, now=None):
    if not ts:
        return '-'
    seconds = max(0, int((now or time.time()) - ts))
    if seconds < 120:
        return '%ds ago' % seconds
    if seconds < 7200:
        return '%dm ago' % (seconds // 60)
    return '%dh ago' % (seconds // 3600)


def _clean(value):
    """Outside data on a terminal: no escape sequence, no line break."""
    return ''.join(c if c.isprintable() else '?' for c in str(value))


def render(result, color=False, now=None):
    """Lines for the `vdsm-dhcp status` document `result` (the shape of
    `vdsm-dhcp status --json`)."""
    def paint(code, text):
        return code + text + RESET if color else text

    lines, problems = [], []
    unit = result['unit']
    if 'error' in unit:
        # e.g. the agent run by hand on a host without systemd on D-Bus
        lines.append('unit %s: unknown (%s)' % (unit['unit'], unit['error']))
    else:
        state = '%s (%s)' % (unit['ActiveState'], unit['SubState'])
        lines.append('unit %s: %s, main pid %s' % (
            unit['unit'], paint(GREEN if unit['ActiveState'] == 'active'
                                else YELLOW, state), unit['MainPID'] or '-'))
    if 'networks_file_error' in result:
        problems.append('networks file: %s' % result['networks_file_error'])
    else:
        lines.append('networks file: %d networks listed'
                     % len(result['networks_file']))
    agent = result.get('agent')
    if agent is None:
        if result.get('networks_file'):
            problems.append('agent: %s' % result['agent_error'])
        else:
            lines.append('agent: %s' % result['agent_error'])
        rows = [(n['name'], n['quantumId'], '?', '', '', '', '', '', '')
                for n in result.get('networks_file', [])]
        return _finish(lines, problems, rows, paint)
    src = agent['source']
    reachable = src.get('reachable')
    lines.append('agent: pid %d, host %s, last reconcile %s' % (
        agent['pid'], _clean(agent['host']), ago(agent['last_reconcile'],
                                                 now)))
    where = src.get('path') or src.get('url') or ''
    if reachable:
        lines.append('source: %s %s: reachable' % (src.get('type'), where))
    else:
        problems.append('source %s %s: UNREACHABLE since %s: %s' % (
            src.get('type'), where, ago(src.get('unreachable_since'), now),
            _clean(src.get('error'))))
    if agent.get('host_problem'):
        problems.append('host: %s' % _clean(agent['host_problem']))
    rows = []
    for n in agent['networks']:
        name = _clean(n['name'])
        if not n['served']:
            problems.append('%s: NOT SERVED: %s' % (name,
                                                    _clean(n['reason'])))
        if n.get('error'):
            problems.append('%s: error: %s' % (name, _clean(n['error'])))
        for problem in n['problems']:
            problems.append('%s: %s' % (name, _clean(problem)))
        rows.append((name, n['quantumId'], 'yes' if n['served'] else 'NO',
                     'present' if n['bridge_present'] else 'ABSENT',
                     str(n['dnsmasq_pid'] or '-'), str(n['hosts']),
                     str(n.get('hosts_loaded', '-')),
                     ago(n['last_sync'], now),
                     ', '.join(n['dhcp_ips']) or '-'))
        # a big network: one row per further shard (its own dnsmasq)
        for shard in n.get('shards', [])[1:]:
            rows.append(('  shard', _clean(shard['unit']), '', '',
                         str(shard['dnsmasq_pid'] or '-'),
                         str(shard['hosts']), str(shard['hosts_loaded']),
                         '', ', '.join(shard['dhcp_ips']) or '-'))
    return _finish(lines, problems, rows, paint)


def _finish(lines, problems, rows, paint):
    out = []
    if problems:
        out.append(paint(RED + BOLD, 'PROBLEMS (%d)' % len(problems)))
        out += ['  ' + paint(RED, p) for p in problems]
        out.append('')
    out += lines
    if rows:
        widths = [max(len(c), *(len(r[i]) for r in rows))
                  for i, c in enumerate(COLUMNS)]
        out.append('')
        out.append(paint(BOLD, '  '.join(c.ljust(w) for c, w in
                                          zip(COLUMNS, widths)).rstrip()))
        for row in rows:
            cells = [v.ljust(w) for v, w in zip(row, widths)]
            if row[2] == 'yes':
                cells[2] = paint(GREEN, cells[2])
            elif row[2] == 'NO':
                cells[2] = paint(RED, cells[2])
            out.append('  '.join(cells).rstrip())
    return out
