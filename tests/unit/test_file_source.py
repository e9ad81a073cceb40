"""The file source's memory contract (issue 12): one parsed IPAM snapshot
alive at a time, only the listed networks kept; and nothing
Neutron-specific imported by an agent whose source is the file."""
import json
import os
import subprocess
import sys
import textwrap
import types
import weakref

import pytest

from vdsm_dhcp.sources import file as file_source

NETS = ['net-a', 'net-b', 'net-c']


class Doc(dict):
    """A parsed JSON object that a weakref can follow (a dict cannot)."""
    __slots__ = ('__weakref__',)


def document(tag):
    doc = {'networks': [], 'subnets': [], 'ports': []}
    for n, net in enumerate(NETS):
        doc['networks'].append({'id': net, 'admin_state_up': True})
        doc['subnets'].append({'id': 'sub-%s' % net, 'network_id': net,
                               'cidr': '10.0.%d.0/24' % n})
        for k in range(3):
            doc['ports'].append({
                'id': '%s-%s-%d' % (tag, net, k), 'network_id': net,
                'mac_address': 'fa:16:3e:00:%02x:%02x' % (n, k),
                'device_owner': 'compute:nova', 'binding:host_id': '',
                'fixed_ips': [{'subnet_id': 'sub-%s' % net,
                               'ip_address': '10.0.%d.%d' % (n, 10 + k)}]})
    return doc


class Parses:
    """Every object the file source parses, by weak reference, per parse;
    how many of the earlier parses' objects were alive as each began."""

    def __init__(self):
        self.runs, self.alive_before = [], []

    def load(self, f):
        self.alive_before.append(len(self.alive()))
        refs = []
        self.runs.append(refs)

        def hook(obj):
            obj = Doc(obj)
            refs.append(weakref.ref(obj))
            return obj
        return json.load(f, object_hook=hook)

    def alive(self):
        return [r() for refs in self.runs for r in refs if r() is not None]


@pytest.fixture
def parses(monkeypatch):
    parses = Parses()
    monkeypatch.setattr(file_source, 'json',
                        types.SimpleNamespace(load=parses.load))
    return parses


def write(path, tag):
    tmp = str(path) + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(document(tag), f)
    os.replace(tmp, path)    # a new inode: the source sees a change


def test_only_the_listed_networks_are_kept(tmp_path, parses):
    path = tmp_path / 'ipam.json'
    write(path, 'one')
    source = file_source.FileSource(str(path))
    snap = source.snapshot(['net-b'])
    assert set(snap.networks) == set(snap.subnets) == set(snap.ports) == {
        'net-b'}
    assert [p['id'] for p in snap.ports['net-b']] == [
        'one-net-b-0', 'one-net-b-1', 'one-net-b-2']
    kept = parses.alive()
    assert kept, 'the listed network is kept'
    # the document itself and the other networks' objects are gone
    assert not [o for o in kept if 'ports' in o]
    assert not [o for o in kept if o.get('network_id') in ('net-a', 'net-c')
                or o.get('id') in ('net-a', 'net-c')]


def test_one_parse_alive_at_a_time(tmp_path, parses):
    """The kept snapshot is dropped before the changed file is parsed:
    never two documents in memory at once."""
    path = tmp_path / 'ipam.json'
    write(path, 'one')
    source = file_source.FileSource(str(path))
    source.snapshot(NETS)
    assert len(parses.alive()) > 20
    write(path, 'two')
    snap = source.snapshot(NETS)
    assert parses.alive_before == [0, 0]
    assert snap.ports['net-a'][0]['id'] == 'two-net-a-0'
    # unchanged file and list: the kept snapshot, no parse
    source.snapshot(NETS)
    assert len(parses.runs) == 2
    # the list changed: parsed again, for the new list only
    del snap
    assert set(source.snapshot(['net-c']).networks) == {'net-c'}
    assert parses.alive_before == [0, 0, 0]


def test_the_kept_snapshot_goes_when_unused(tmp_path, parses,
                                            monkeypatch):
    """Between rounds the planner needs none of the document: it is kept
    KEEP_FOR s (rounds that close share one parse), then dropped, and the
    freed memory given back once the last round holding it is done."""
    trims = []
    monkeypatch.setattr(file_source, 'release_memory',
                        lambda: trims.append(1))
    path = tmp_path / 'ipam.json'
    write(path, 'one')
    source = file_source.FileSource(str(path))
    snap = source.snapshot(NETS)
    used = source._used_at
    assert source.expire(used + file_source.KEEP_FOR / 2) is False
    assert source.snapshot(NETS) is snap and len(parses.runs) == 1
    # unused long enough: dropped, but a round still holds it
    assert source.expire(source._used_at + file_source.KEEP_FOR) is False
    assert parses.alive() and not trims
    del snap
    assert not parses.alive()
    assert source.expire(used) is True and trims == [1]
    assert source.expire(used) is False and trims == [1]   # once
    # the next round parses the unchanged file again
    assert source.snapshot(NETS).ports['net-a'][0]['id'] == 'one-net-a-0'
    assert len(parses.runs) == 2


NEUTRON_ONLY = ('vdsm_dhcp.sources.neutron', 'keystoneauth1',
                'oslo_messaging')


def modules_of_a_file_agent(tmp_path):
    """The modules an agent process holds once built for the file source
    (its program module, its configuration, the Agent and its source)."""
    base = tmp_path / 'agent'
    base.mkdir()
    conf = tmp_path / 'agent.conf'
    conf.write_text(textwrap.dedent('''\
        [DEFAULT]
        source = file
        networks_file = {0}/networks.json
        state_dir = {0}/state
        run_dir = {0}/run
        host = host-a
        [file]
        path = {0}/ipam.json
        ''').format(base))
    code = textwrap.dedent('''\
        import json, sys
        from vdsm_dhcp.agent import service
        from vdsm_dhcp import options
        conf = options.load(sys.argv[1])
        agent = service.Agent(conf)
        assert type(agent.source).__name__ == 'FileSource'
        print(json.dumps(sorted(sys.modules)))
        ''')
    out = subprocess.run([sys.executable, '-c', code, str(conf)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def neutron_modules(modules, prefixes):
    return [m for m in modules
            if any(m == p or m.startswith(p) for p in prefixes)]


def test_a_file_agent_imports_nothing_of_neutron_source(tmp_path):
    modules = modules_of_a_file_agent(tmp_path)
    assert 'vdsm_dhcp.sources.file' in modules
    assert neutron_modules(modules, ('vdsm_dhcp.sources.neutron',
                                     'oslo_messaging')) == []


def test_a_file_agent_imports_no_keystoneauth1(tmp_path):
    modules = modules_of_a_file_agent(tmp_path)
    assert neutron_modules(modules, NEUTRON_ONLY) == []
