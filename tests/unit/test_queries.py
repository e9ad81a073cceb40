"""agent/queries.locate: the one search of a MAC in the plans, which `why`
and the readiness gate share."""
from types import SimpleNamespace

from vdsm_dhcp.agent.queries import locate

MAC = 'fa:16:3e:00:00:10'


def plan(served=True, macs=None, skipped=None, name='n'):
    return SimpleNamespace(served=served, macs=macs or {},
                           skipped=skipped or {}, name=name)


def test_a_served_port_wins_over_a_skip_elsewhere():
    plans = {'a': plan(skipped={MAC: 'MAC is also port p0'}),
             'b': plan(macs={MAC: 'p1'})}
    where = locate(MAC, plans)
    assert (where.quantum_id, where.port_id, where.skipped) == ('b', 'p1',
                                                                None)


def test_a_skipped_port_says_why():
    where = locate(MAC, {'a': plan(skipped={MAC: 'IP outside'})})
    assert (where.quantum_id, where.port_id, where.skipped) == (
        'a', None, 'IP outside')


def test_networks_not_served_know_no_mac():
    plans = {'a': plan(served=False, macs={MAC: 'p1'}),
             'b': plan(macs={'fa:16:3e:00:00:11': 'p2'})}
    assert locate(MAC, plans) is None
