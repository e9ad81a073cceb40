"""The VDSM-facing glue, without VDSM (it is not installable here).

The drop-ins are copied into a stand-in `vdsm` package exactly where VDSM
would install them, and found the way VDSM finds them: supervdsmd keeps the
functions marked `exposed_api`, vdsm-tool the ones carrying `_vdsm_tool`.
The VDSM patch is checked for well-formed hunks and valid additions.
"""
import ast
import importlib
import os
import re
import shutil
import sys
import textwrap
import types

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GLUE_DIR = os.path.join(ROOT, 'vdsm_dhcp', 'vdsm')
PATCH = os.path.join(ROOT, 'vdsm', '0001-Host-setDHCP.patch')

# Same behaviour as vdsm/supervdsm_api/__init__.py, plus a registry to look at.
FAKE_SUPERVDSM_API = '''
REGISTRY = {}


def expose(func):
    func.exposed_api = True
    REGISTRY[func.__name__] = func
    return func
'''

# Same behaviour as vdsm/tool/__init__.py, plus a registry to look at.
FAKE_TOOL = '''
REGISTRY = {}


class expose(object):
    def __init__(self, name):
        self.name = name

    def __call__(self, fun):
        fun._vdsm_tool = {"name": self.name}
        REGISTRY[self.name] = fun
        return fun
'''


def _forget_vdsm_modules():
    for name in list(sys.modules):
        if name == 'vdsm' or name.startswith('vdsm.'):
            del sys.modules[name]


@pytest.fixture
def fake_vdsm(tmp_path, monkeypatch):
    """A site-packages holding a stand-in vdsm with our drop-ins installed."""
    site = tmp_path / 'site-packages'
    for package, init in (('vdsm', ''),
                          ('vdsm/supervdsm_api', FAKE_SUPERVDSM_API),
                          ('vdsm/tool', FAKE_TOOL)):
        (site / package).mkdir(parents=True)
        (site / package / '__init__.py').write_text(init)
    shutil.copy(os.path.join(GLUE_DIR, 'supervdsm_api.py'),
                site / 'vdsm' / 'supervdsm_api' / 'vdsm_dhcp.py')
    shutil.copy(os.path.join(GLUE_DIR, 'vdsm_tool.py'),
                site / 'vdsm' / 'tool' / 'vdsm_dhcp.py')
    _forget_vdsm_modules()
    monkeypatch.syspath_prepend(str(site))
    yield site
    _forget_vdsm_modules()


def real_or_stand_in(monkeypatch, name, function):
    """The real vdsm_dhcp.<name> if it imports, else a module holding only
    a placeholder `function` (the test then monkeypatches it anyway)."""
    try:
        return importlib.import_module('vdsm_dhcp.' + name)
    except ImportError:
        module = types.ModuleType('vdsm_dhcp.' + name)
        setattr(module, function, None)
        monkeypatch.setitem(sys.modules, module.__name__, module)
        monkeypatch.setattr(importlib.import_module('vdsm_dhcp'), name,
                            module, raising=False)
        return module


class Recorder:
    def __init__(self, result):
        self.result = result
        self.calls = []

    def __call__(self, *args):
        self.calls.append(args)
        return self.result


# --- supervdsm drop-in -------------------------------------------------------

def test_supervdsm_exposes_only_setDHCP(fake_vdsm, monkeypatch):
    real_or_stand_in(monkeypatch, 'verb', 'set_dhcp')
    api = importlib.import_module('vdsm.supervdsm_api')
    module = importlib.import_module('vdsm.supervdsm_api.vdsm_dhcp')

    # What supervdsm_server registers on its proxy object, by __name__.
    exposed = [f.__name__ for f in module.__dict__.values()
               if callable(f) and getattr(f, 'exposed_api', False)]
    assert exposed == ['setDHCP']
    assert list(api.REGISTRY) == ['setDHCP']


def test_supervdsm_setDHCP_passes_networks_and_envelope_through(
        fake_vdsm, monkeypatch):
    verb = real_or_stand_in(monkeypatch, 'verb', 'set_dhcp')
    envelope = {'status': {'code': 27, 'message': 'sentinel'}}
    set_dhcp = Recorder(envelope)
    monkeypatch.setattr(verb, 'set_dhcp', set_dhcp)
    importlib.import_module('vdsm.supervdsm_api.vdsm_dhcp')
    networks = [{'name': 'red',
                 'quantumId': '6a4f7b36-8a1d-4b3c-9d2e-0f1e2d3c4b5a'}]

    result = importlib.import_module('vdsm.supervdsm_api').REGISTRY[
        'setDHCP'](networks)

    assert result is envelope
    assert len(set_dhcp.calls) == 1
    assert set_dhcp.calls[0][0] is networks


# --- vdsm-tool drop-in -------------------------------------------------------

def test_tool_commands_registered(fake_vdsm, monkeypatch):
    real_or_stand_in(monkeypatch, 'cli', 'main')
    module = importlib.import_module('vdsm.tool.vdsm_dhcp')
    tool = importlib.import_module('vdsm.tool')

    assert sorted(tool.REGISTRY) == ['dhcp-clear', 'dhcp-set', 'dhcp-status']
    # vdsm-tool scans the module's attributes and prints each docstring as
    # the command's usage.
    found = {getattr(module, a)._vdsm_tool['name'] for a in dir(module)
             if hasattr(getattr(module, a), '_vdsm_tool')}
    assert found == set(tool.REGISTRY)
    for name, command in tool.REGISTRY.items():
        assert command.__doc__.strip().startswith(name)


@pytest.mark.parametrize('tool_args, cli_argv', [
    (['dhcp-set', 'red=6a4f7b36-8a1d-4b3c-9d2e-0f1e2d3c4b5a', 'blue=x'],
     ['set', 'red=6a4f7b36-8a1d-4b3c-9d2e-0f1e2d3c4b5a', 'blue=x']),
    (['dhcp-set', '--json', '/tmp/params.json'],
     ['set', '--json', '/tmp/params.json']),
    (['dhcp-clear'], ['clear']),
    (['dhcp-status'], ['status']),
    (['dhcp-status', '--json'], ['status', '--json']),
])
def test_tool_command_calls_cli(fake_vdsm, monkeypatch, tool_args, cli_argv):
    cli = real_or_stand_in(monkeypatch, 'cli', 'main')
    main = Recorder(7)
    monkeypatch.setattr(cli, 'main', main)
    importlib.import_module('vdsm.tool.vdsm_dhcp')
    command = importlib.import_module('vdsm.tool').REGISTRY[tool_args[0]]

    # vdsm-tool calls the command with its own name first and exits with
    # what it returns.
    assert command(*tool_args) == 7
    assert main.calls == [(cli_argv,)]


# --- the VDSM patch ----------------------------------------------------------

HUNK_HEADER = re.compile(r'^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@')


class Hunk:
    def __init__(self, match):
        self.old_start = int(match.group(1))
        self.old_count = int(match.group(2) or 1)
        self.new_start = int(match.group(3))
        self.new_count = int(match.group(4) or 1)
        self.lines = []

    def added(self):
        return [line[1:] for line in self.lines if line.startswith('+')]


def parse_patch(text):
    """{path: [Hunk]}; raises ValueError when a hunk body does not have the
    line counts its header announces, or hunks of a file disagree."""
    files = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if line.startswith('+++ '):
            path = line[4:].split('/', 1)[1]
            files[path] = []
            continue
        match = HUNK_HEADER.match(line)
        if not match:
            continue
        hunk = Hunk(match)
        old = new = 0
        while old < hunk.old_count or new < hunk.new_count:
            if i == len(lines):
                raise ValueError('%s: patch ends inside %r' % (path, line))
            body = lines[i]
            i += 1
            kind = body[:1]
            if kind in (' ', ''):  # git takes an empty line as blank context
                old += 1
                new += 1
            elif kind == '-':
                old += 1
            elif kind == '+':
                new += 1
            elif kind != '\\':  # "\ No newline at end of file"
                raise ValueError('%s: %r is short of its counts'
                                 % (path, line))
            hunk.lines.append(body)
        if old != hunk.old_count or new != hunk.new_count:
            raise ValueError('%s: %r counts do not match' % (path, line))
        following = lines[i] if i < len(lines) else None
        if following is not None and not (
                following.startswith(('@@ ', 'diff --git ')) or
                following == '-- '):
            raise ValueError('%s: %r has more lines than its counts'
                             % (path, line))
        files[path].append(hunk)
    for path, hunks in files.items():
        check_hunk_order(path, hunks)
    return files


def check_hunk_order(path, hunks):
    shift = 0
    end = 0
    for hunk in hunks:
        if hunk.old_start < end:
            raise ValueError('%s: hunks overlap or are out of order' % path)
        if hunk.new_start != hunk.old_start + shift:
            raise ValueError('%s: hunk at -%d should start at +%d'
                             % (path, hunk.old_start, hunk.old_start + shift))
        shift += hunk.new_count - hunk.old_count
        end = hunk.old_start + hunk.old_count


@pytest.fixture(scope='module')
def patch_text():
    with open(PATCH) as f:
        return f.read()


def test_patch_hunks_are_well_formed(patch_text):
    files = parse_patch(patch_text)
    assert sorted(files) == ['lib/vdsm/API.py', 'lib/vdsm/api/vdsm-api.yml',
                             'lib/vdsm/rpc/Bridge.py']
    assert all(files.values())
    assert patch_text.startswith('From ')
    assert '\nSubject: [PATCH] ' in patch_text


@pytest.mark.parametrize('corrupt', [
    lambda text: text.replace("+    'Host_setDHCP': {'ret': 'status'},\n",
                              ''),
    lambda text: text.replace('+Host.setDHCP:\n', '+Host.setDHCP:\n+\n'),
    lambda text: text.replace('@@ -352,6 +352,7 @@', '@@ -352,6 +352,8 @@'),
])
def test_patch_checker_rejects_corrupt_hunks(patch_text, corrupt):
    broken = corrupt(patch_text)
    assert broken != patch_text
    with pytest.raises(ValueError):
        parse_patch(broken)


def test_patch_schema_addition_is_valid_yaml(patch_text):
    yaml = pytest.importorskip('yaml')
    added = '\n'.join(line for hunk in parse_patch(patch_text)[
        'lib/vdsm/api/vdsm-api.yml'] for line in hunk.added())
    # Anchors the additions use but do not define live elsewhere in the file.
    used = set(re.findall(r'\*(\w+)', added))
    defined = set(re.findall(r'&(\w+)', added))
    stubs = ''.join('    %s: &%s\n        name: %s\n        type: alias\n'
                    % (name, name, name) for name in sorted(used - defined))

    schema = yaml.safe_load('types:\n' + stubs + added + '\n')

    dhcp_network = schema['types']['DhcpNetwork']
    assert dhcp_network['type'] == 'object'
    properties = {p['name']: p['type'] for p in dhcp_network['properties']}
    assert properties == {'name': 'string',
                          'quantumId': schema['types']['UUID']}
    [param] = schema['Host.setDHCP']['params']
    assert param['name'] == 'networks'
    assert param['type'] == [dhcp_network]


def test_patch_python_additions_compile(patch_text):
    files = parse_patch(patch_text)
    method = '\n'.join(line for hunk in files['lib/vdsm/API.py']
                       for line in hunk.added())
    tree = ast.parse(textwrap.dedent(method))
    assert [f.name for f in tree.body] == ['setDHCP']
    assert [a.arg for a in tree.body[0].args.args] == ['self', 'networks']

    [entry] = [line for hunk in files['lib/vdsm/rpc/Bridge.py']
               for line in hunk.added()]
    assert ast.literal_eval('{%s}' % entry) == {
        'Host_setDHCP': {'ret': 'status'}}
