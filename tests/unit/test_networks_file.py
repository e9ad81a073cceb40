"""The networks file and setDHCP's validation: no root needed."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings, HealthCheck
from hypothesis import strategies as st

from vdsm_dhcp import options
from vdsm_dhcp import errors
from vdsm_dhcp.setdhcp import networks_file
from vdsm_dhcp.setdhcp import verb
from vdsm_dhcp.setdhcp.networks_file import Network, parse_networks

RED = '3f2a9c1b-7e0d-4c55-9d6e-0123456789ab'
BLUE = '9b1e4c2a-1111-4a2b-8c3d-abcdefabcdef'


@pytest.fixture
def conf(tmp_path):
    path = tmp_path / 'vdsm-dhcp.conf'
    path.write_text('[DEFAULT]\nnetworks_file = %s\nrun_dir = %s\n'
                    'set_lock_timeout = 1\n'
                    % (tmp_path / 'networks.json', tmp_path / 'run'))
    return options.load(str(path))


class NoSystemd:
    """Bad input must be refused before systemd is ever asked anything."""
    def __getattr__(self, name):
        raise AssertionError('systemd touched for bad input: %s' % name)


def test_valid_list_is_canonical():
    assert parse_networks([{'name': 'red', 'quantumId': RED.upper()}]) == [
        Network('red', RED)]
    assert parse_networks([]) == []


@pytest.mark.parametrize('networks, code, words', [
    ({'name': 'red'}, 21, 'must be a list'),
    (['red'], 21, 'network #0 must be an object'),
    ([{'name': 'red'}], 21, 'network #0 (\'red\'): missing "quantumId"'),
    ([{'name': 'red', 'quantumId': RED, 'vlan': 3}], 21, "unknown key(s) 'vlan'"),
    ([{'name': 5, 'quantumId': RED}], 21, '"name" must be a string'),
    ([{'name': '', 'quantumId': RED}], 27, 'is empty'),
    ([{'name': 'a' * 16, 'quantumId': RED}], 27, 'longer than 15'),
    ([{'name': '-red', 'quantumId': RED}], 27, 'starts with "-"'),
    ([{'name': 'r:d', 'quantumId': RED}], 27, "contains ':'"),
    ([{'name': 'r/d', 'quantumId': RED}], 27, "contains '/'"),
    ([{'name': 'r d', 'quantumId': RED}], 27, 'white space'),
    ([{'name': 'r\nd', 'quantumId': RED}], 27, 'control character'),
    ([{'name': 'red', 'quantumId': 'x'}], 21, "quantumId 'x' is not a UUID"),
    ([{'name': 'red', 'quantumId': '{%s}' % RED}], 21, 'canonical'),
    ([{'name': 'red', 'quantumId': RED.replace('-', '')}], 21, 'canonical'),
    ([{'name': 'red', 'quantumId': RED}, {'name': 'red', 'quantumId': BLUE}],
     21, "network #1 ('red'): name 'red' is also network #0"),
    ([{'name': 'red', 'quantumId': RED}, {'name': 'blue', 'quantumId': RED}],
     21, 'is also network #0'),
])
def test_bad_input_names_the_problem(networks, code, words):
    with pytest.raises(errors.VdsmDhcpError) as e:
        parse_networks(networks)
    assert e.value.code == code
    assert words in str(e.value)


# -- property: thousands of malformed lists, nothing changes ----------------
good_entry = st.fixed_dictionaries({
    'name': st.from_regex(r'[a-z][a-z0-9_]{0,14}', fullmatch=True),
    'quantumId': st.uuids().map(str)})
junk = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                 st.text(max_size=20), st.lists(st.integers(), max_size=2),
                 st.dictionaries(st.text(max_size=3), st.integers(),
                                 max_size=2))


def bad_name():
    return st.one_of(
        junk.filter(lambda v: not isinstance(v, str)),
        st.just(''), st.text(min_size=16, max_size=30),
        st.from_regex(r'-[a-z]{0,5}', fullmatch=True),
        st.tuples(st.text(max_size=5), st.sampled_from(list(':./ \t\n\x00\x7f')),
                  st.text(max_size=5)).map(''.join))


def bad_uuid():
    return st.one_of(
        junk.filter(lambda v: not isinstance(v, str)),
        st.text(max_size=40).filter(lambda s: len(s) != 36),
        st.uuids().map(lambda u: '{%s}' % u),
        st.uuids().map(lambda u: u.hex))


@st.composite
def malformed(draw):
    entries = draw(st.lists(good_entry, max_size=4, unique_by=(
        lambda e: e['name'], lambda e: e['quantumId'])))
    kind = draw(st.sampled_from(['not-list', 'not-dict', 'missing', 'extra',
                                 'name', 'uuid', 'dup-name', 'dup-id']))
    if kind == 'not-list':
        return draw(junk.filter(lambda v: not isinstance(v, list)))
    entry = dict(draw(good_entry))
    if kind == 'not-dict':
        entry = draw(junk.filter(lambda v: not isinstance(v, dict)))
    elif kind == 'missing':
        del entry[draw(st.sampled_from(['name', 'quantumId']))]
    elif kind == 'extra':
        entry[draw(st.text(max_size=8).filter(
            lambda k: k not in ('name', 'quantumId')))] = draw(junk)
    elif kind == 'name':
        entry['name'] = draw(bad_name())
    elif kind == 'uuid':
        entry['quantumId'] = draw(bad_uuid())
    elif kind in ('dup-name', 'dup-id'):
        if not entries:
            entries.append(dict(draw(good_entry)))
        key = 'name' if kind == 'dup-name' else 'quantumId'
        entry[key] = entries[0][key]
    entries.insert(draw(st.integers(0, len(entries))), entry)
    return entries


@settings(max_examples=3000, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(networks=malformed())
def test_malformed_lists_are_refused_and_change_nothing(conf, networks):
    if not os.path.exists(conf.networks_file):
        networks_file.write(conf.networks_file, [Network('red', RED)])
    with open(conf.networks_file, 'rb') as f:
        before = f.read()
    envelope = verb.set_dhcp(networks, conf=conf, systemd=NoSystemd())
    status = envelope['status']
    assert status['code'] in (21, 27), status
    assert status['message']
    with open(conf.networks_file, 'rb') as f:
        assert f.read() == before


# -- the file on disk --------------------------------------------------------
def test_missing_file_is_empty_corrupt_file_is_named(tmp_path):
    path = str(tmp_path / 'networks.json')
    assert networks_file.read(path) == []
    with open(path, 'w') as f:
        f.write('{"version": 1, "networks": [')
    with pytest.raises(errors.NetworksFileError, match=path):
        networks_file.read(path)
    with open(path, 'w') as f:
        json.dump({'version': 2, 'networks': []}, f)
    with pytest.raises(errors.NetworksFileError, match='"version": 1'):
        networks_file.read(path)
    with open(path, 'w') as f:
        json.dump({'version': 1, 'networks': [{'name': 'a.b',
                                               'quantumId': RED}]}, f)
    with pytest.raises(errors.NetworksFileError, match="'a.b'"):
        networks_file.read(path)


def test_written_file_format_and_mode(tmp_path):
    path = str(tmp_path / 'sub' / 'networks.json')
    networks_file.write(path, [Network('red', RED)])
    assert oct(os.stat(path).st_mode & 0o777) == '0o644'
    with open(path) as f:
        assert json.load(f) == {'version': 1, 'networks': [
            {'name': 'red', 'quantumId': RED}]}
    assert os.listdir(str(tmp_path / 'sub')) == ['networks.json']


WRITER = '''
import sys
from vdsm_dhcp.setdhcp import networks_file
from vdsm_dhcp.setdhcp.networks_file import Network
lists = [[Network('n%d' % i, '00000000-0000-4000-8000-%012d' % i)
          for i in range(k)] for k in (3, 40)]
networks_file.write(sys.argv[1], lists[0])
print('ready', flush=True)   # a file exists: a kill from now on tests it
i = 1
while True:
    networks_file.write(sys.argv[1], lists[i % 2])
    i += 1
'''


def test_sigkill_during_rewrites_never_tears_the_file(tmp_path):
    path = str(tmp_path / 'networks.json')
    valid = {3, 40}
    rng = random.Random(42)
    reads = 0
    for _ in range(60):
        proc = subprocess.Popen([sys.executable, '-c', WRITER, path],
                                stdout=subprocess.PIPE)
        assert proc.stdout.readline() == b'ready\n'
        deadline = time.monotonic() + rng.uniform(0.001, 0.03)
        while True:     # at least one read per round, however slow the CPU
            if os.path.exists(path):
                assert len(networks_file.read(path)) in valid
                reads += 1
            if time.monotonic() >= deadline:
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        assert len(networks_file.read(path)) in valid
    assert reads >= 59    # the first round may start before any file


def test_concurrent_set_waits_for_the_lock_then_fails_with_40(conf):
    """A second setDHCP waits while another holds the lock; past
    set_lock_timeout it answers code 40 and writes nothing."""
    import threading
    networks_file.write(conf.networks_file, [Network('red', RED)])
    held, release = threading.Event(), threading.Event()

    def holder():
        with networks_file.locked(conf.networks_file, 5):
            held.set()
            release.wait(10)
    t = threading.Thread(target=holder)
    t.start()
    held.wait(5)
    started = time.monotonic()
    envelope = verb.set_dhcp([{'name': 'blue', 'quantumId': BLUE}],
                             conf=conf, systemd=NoSystemd())
    assert envelope['status']['code'] == 40
    assert time.monotonic() - started >= 0.9   # it waited set_lock_timeout
    assert networks_file.read(conf.networks_file) == [Network('red', RED)]
    # released while waiting: the call goes through after the holder
    timer = threading.Timer(0.3, release.set)
    timer.start()

    class Running:
        def settle(self, unit, timeout):
            return {'ActiveState': 'active'}

        def reload(self, unit):
            self.reloaded = unit
    systemd = Running()
    envelope = verb.set_dhcp([{'name': 'blue', 'quantumId': BLUE}],
                             conf=conf, systemd=systemd)
    t.join()
    assert envelope['status']['code'] == 0
    assert systemd.reloaded == conf.agent_unit
    assert networks_file.read(conf.networks_file) == [Network('blue', BLUE)]
