"""What the fault-injection tests injected and what came of it.

A fault test calls record(...) once per kind of fault it injected; the
records of the last run go to tests/results/faults.jsonl, and
`python -m tests.faultlog` turns them into the table in RELIABILITY.md.
"""
import json
import os
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, 'results', 'faults.jsonl')
RUN_ENV = 'VDSM_DHCP_FAULT_RUN'     # set once per pytest session (conftest)


def record(fault, injected, outcome, leases_lost=None, outage_ms=None,
           recovery_ms=None, test=None):
    """fault: what was done ("agent SIGKILL during reconcile under churn");
    injected: how many times; outcome: what happened, in words ("converged,
    no dnsmasq restarted"); leases_lost: VMs that lost their lease;
    outage_ms: longest time DHCP did not answer a VM that it should have;
    recovery_ms: time from the fault's end to normal service."""
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    entry = {'run': os.environ.get(RUN_ENV, ''),
             'fault': fault, 'injected': injected, 'outcome': outcome,
             'leases_lost': leases_lost, 'outage_ms': outage_ms,
             'recovery_ms': recovery_ms,
             'test': test or os.environ.get('PYTEST_CURRENT_TEST', '')
             .split(' ')[0], 'at': time.strftime('%Y-%m-%d %H:%M:%S')}
    with open(RESULTS, 'a') as f:
        f.write(json.dumps(entry, sort_keys=True) + '\n')


def _cell(value):
    return '-' if value is None else str(value)


def _base(test):
    return test.split('[')[0]


def table(path=RESULTS):
    """Per (test, fault), the records of its newest run as a Markdown
    table; the cases of a parametrized test are added up."""
    newest = {}
    with open(path) as f:
        for line in f:
            entry = json.loads(line)
            key = (_base(entry['test']), entry['fault'])
            run = entry.get('run', '')
            if key not in newest or newest[key][0] < run:
                newest[key] = (run, [])
            if newest[key][0] == run:
                newest[key][1].append(entry)
    rows = ['| fault | injected | outcome | leases lost | DHCP outage (ms) '
            '| recovery (ms) | test |', '| --- | --- | --- | --- | --- | --- '
            '| --- |']
    for (test, fault), (_, entries) in sorted(newest.items()):
        last = entries[-1]

        def worst(field):
            values = [e[field] for e in entries if e[field] is not None]
            return max(values) if values else None
        rows.append('| %s | %s | %s | %s | %s | %s | `%s` |' % (
            fault, sum(e['injected'] for e in entries), last['outcome'],
            _cell(worst('leases_lost')), _cell(worst('outage_ms')),
            _cell(worst('recovery_ms')), test))
    return '\n'.join(rows)


def document(path=RESULTS):
    return '\n'.join([
        '# Reliability: the faults the test suite injects', '',
        'Written by `python -m tests.faultlog > RELIABILITY.md` from the '
        'records of the last `make check` (`tests/results/faults.jsonl`). '
        'Each row: what a fault-injection test did to a real agent, real '
        'dnsmasq, real DHCP clients, a real systemd or a real Neutron, how '
        'many times, and what came of it. "Leases lost": VMs that lost an '
        'address they held; "DHCP outage": the longest time a VM that '
        'should have been answered was not; "recovery": from the end of '
        'the fault to normal service (the largest over the cases; "-" where '
        'the test does not measure it). The tests assert the outcomes; '
        'the times are measurements of that run, on a 2-core machine.', '',
        table(path), ''])


if __name__ == '__main__':
    print(document(), end='')
