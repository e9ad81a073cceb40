"""`vdsm-dhcp status` for a human (pure rendering of the status document)."""
import io

from vdsm_dhcp.front import status_text

NOW = 1_000_000.0
QID = '3f2a9c1b-7e0d-4c55-9d6e-0123456789ab'


def network(name, served=True, **extra):
    n = {'name': name, 'quantumId': QID, 'served': served,
         'reason': None if served else 'bridge %s is absent' % name,
         'bridge_present': served, 'dnsmasq_pid': 4242 if served else None,
         'hosts': 12, 'hosts_loaded': 12, 'last_sync': NOW - 3,
         'dhcp_ips': ['10.10.0.2/24'] if served else [], 'problems': [],
         'error': None}
    n.update(extra)
    return n


def doc(networks, reachable=True):
    return {'unit': {'unit': 'vdsm-dhcp-agent.service',
                     'ActiveState': 'active', 'SubState': 'running',
                     'MainPID': 77},
            'networks_file': [{'name': n['name'], 'quantumId': QID}
                              for n in networks],
            'agent': {'pid': 77, 'host': 'h1', 'last_reconcile': NOW - 1,
                      'source': {'type': 'file', 'path': '/ipam.json',
                                 'reachable': reachable,
                                 'error': None if reachable else 'boom',
                                 'unreachable_since': NOW - 60},
                      'networks': networks}}


def test_all_well_has_no_problem_section_and_aligned_rows():
    lines = status_text.render(doc([network('red'), network('longname')]),
                               now=NOW)
    assert lines[0].startswith('unit vdsm-dhcp-agent.service: active '
                               '(running)')
    assert not any('PROBLEMS' in line for line in lines)
    header = next(i for i, line in enumerate(lines)
                  if line.startswith('NETWORK'))
    rows = lines[header + 1:]
    assert [r.split()[0] for r in rows] == ['red', 'longname']
    # aligned: every column starts at the same offset in every row
    assert len({r.index(QID) for r in rows}) == 1
    assert all('3s ago' in r for r in rows)


def test_problems_come_first():
    bad = network('blue', served=False,
                  problems=['port p1 skipped: MAC is not a MAC'])
    lines = status_text.render(doc([network('red'), bad], reachable=False),
                               now=NOW)
    assert lines[0] == 'PROBLEMS (3)'
    assert lines[1:4] == [
        '  source file /ipam.json: UNREACHABLE since 60s ago: boom',
        '  blue: NOT SERVED: bridge blue is absent',
        '  blue: port p1 skipped: MAC is not a MAC']
    assert lines[4] == ''


def test_colour_only_when_asked_and_never_from_outside_data():
    evil = network('red', problems=['\033[2J\rfake line'])
    plain = '\n'.join(status_text.render(doc([evil]), now=NOW))
    assert '\033' not in plain
    coloured = '\n'.join(status_text.render(doc([evil]), color=True,
                                            now=NOW))
    assert status_text.RED in coloured and status_text.GREEN in coloured
    assert '\033[2J' not in coloured and '\r' not in coloured


def test_no_color_and_dumb_terminals():
    class Tty(io.StringIO):
        def isatty(self):
            return True
    assert status_text.use_color(Tty(), {})
    assert not status_text.use_color(Tty(), {'NO_COLOR': ''})
    assert not status_text.use_color(Tty(), {'TERM': 'dumb'})
    assert not status_text.use_color(io.StringIO(), {})


def test_agent_down_is_a_problem_when_networks_are_listed():
    result = doc([network('red')])
    del result['agent']
    result['agent_error'] = 'the agent is not running (no socket /x)'
    lines = status_text.render(result, now=NOW)
    assert lines[:2] == ['PROBLEMS (1)',
                         '  agent: the agent is not running (no socket /x)']
