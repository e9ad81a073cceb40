"""The VDSM-facing glue, without VDSM (it is not installable here).

The drop-ins are copied into a stand-in `vdsm` package exactly where VDSM
would install them, and found the way VDSM finds them: supervdsmd keeps the
functions marked `exposed_api`, vdsm-tool the ones carrying `_vdsm_tool`.
The VDSM patch is checked for well-formed hunks and valid additions, its
verb is run against stand-ins, and, given a VDSM source tree in $VDSM_SRC
(a checkout of github.com/oVirt/vdsm), it is applied and its schema loaded
by VDSM's own code.
"""
import ast
import importlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import types

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
GLUE_DIR = os.path.join(ROOT, 'vdsm_dhcp', 'vdsm')
PATCH = os.path.join(ROOT, 'vdsm', '0001-Host-setDHCP.patch')
# The next VDSM release after the snapshot the patch was made on (v4.50.7):
# the schema numbers VDSM 4.50.N as 4.5.N.
SCHEMA_ADDED = '4.5.8'

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
        parent, _, leaf = module.__name__.rpartition('.')
        monkeypatch.setattr(importlib.import_module(parent), leaf,
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
    real_or_stand_in(monkeypatch, 'setdhcp.verb', 'set_dhcp')
    api = importlib.import_module('vdsm.supervdsm_api')
    module = importlib.import_module('vdsm.supervdsm_api.vdsm_dhcp')

    # What supervdsm_server registers on its proxy object, by __name__.
    exposed = [f.__name__ for f in module.__dict__.values()
               if callable(f) and getattr(f, 'exposed_api', False)]
    assert exposed == ['setDHCP']
    assert list(api.REGISTRY) == ['setDHCP']


def test_supervdsm_setDHCP_passes_networks_and_envelope_through(
        fake_vdsm, monkeypatch):
    verb = real_or_stand_in(monkeypatch, 'setdhcp.verb', 'set_dhcp')
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
    real_or_stand_in(monkeypatch, 'front.cli', 'main')
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
    cli = real_or_stand_in(monkeypatch, 'front.cli', 'main')
    main = Recorder(7)
    monkeypatch.setattr(cli, 'main', main)
    importlib.import_module('vdsm.tool.vdsm_dhcp')
    command = importlib.import_module('vdsm.tool').REGISTRY[tool_args[0]]

    # vdsm-tool calls the command with its own name first and exits with
    # what it returns.
    assert command(*tool_args) == 7
    assert main.calls == [(cli_argv,)]


# --- the drop-ins cannot take supervdsmd or vdsm-tool down --------------------

WITHOUT_VDSM_DHCP = r'''
import json, sys
sys.path.insert(0, SITE)
try:
    import vdsm_dhcp
    sys.exit('vdsm_dhcp is importable here: this test would prove nothing')
except ImportError:
    pass
import vdsm.supervdsm_api.vdsm_dhcp as dropin
import vdsm.tool.vdsm_dhcp as tool
loaded = sorted(m for m in sys.modules if m.split('.')[0] not in
                sys.stdlib_module_names and m.split('.')[0] != 'vdsm'
                and m != '__main__')
envelope = dropin.setDHCP([{'name': 'red', 'quantumId':
                            '6a4f7b36-8a1d-4b3c-9d2e-0f1e2d3c4b5a'}])
status = tool.dhcp_status('dhcp-status')
print(json.dumps({'loaded': loaded, 'envelope': envelope,
                  'tool_exit': status}))
'''


def test_dropins_import_and_answer_without_vdsm_dhcp(fake_vdsm):
    """supervdsmd imports every drop-in with no `try`: ours must import
    with only the standard library and vdsm, and answer setDHCP with a
    code-100 envelope (vdsm-tool: exit 1) that says what is missing."""
    import subprocess
    # -S: no site-packages, so neither the venv's vdsm_dhcp nor its
    # dependencies; -I: no PYTHONPATH, no current directory
    result = subprocess.run(
        [sys.executable, '-I', '-S', '-c',
         'SITE = %r\n' % str(fake_vdsm) + WITHOUT_VDSM_DHCP],
        capture_output=True, text=True, timeout=60, cwd='/')
    assert result.returncode == 0, result.stderr
    answer = __import__('json').loads(result.stdout)
    assert answer['loaded'] == []
    status = answer['envelope']['status']
    assert status['code'] == 100
    assert 'cannot import vdsm_dhcp' in status['message']
    assert answer['tool_exit'] == 1
    assert 'cannot import vdsm_dhcp' in result.stderr


def test_supervdsm_setDHCP_turns_an_exception_into_an_envelope(
        fake_vdsm, monkeypatch):
    verb = real_or_stand_in(monkeypatch, 'setdhcp.verb', 'set_dhcp')

    def broken(networks):
        raise RuntimeError('boom')
    monkeypatch.setattr(verb, 'set_dhcp', broken)
    importlib.import_module('vdsm.supervdsm_api.vdsm_dhcp')
    result = importlib.import_module('vdsm.supervdsm_api').REGISTRY[
        'setDHCP']([])
    assert result['status']['code'] == 100
    assert 'boom' in result['status']['message']


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
        if _continues_hunk(lines, i):
            raise ValueError('%s: %r has more lines than its counts'
                             % (path, line))
        files[path].append(hunk)
    for path, hunks in files.items():
        check_hunk_order(path, hunks)
    return files


def _continues_hunk(lines, i):
    """Whether lines[i] reads as one more line of the hunk before it. After
    the last hunk come the format-patch signature ("-- ") or trailers
    (base-commit:), possibly after a blank line."""
    if i < len(lines) and lines[i] == '':
        i += 1  # a blank line counts only if a hunk line follows it
    if i == len(lines) or lines[i] == '-- ':
        return False
    return lines[i][:1] in (' ', '+', '-', '\\')


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
    header = patch_text.split('\n---\n', 1)[0]
    assert re.search(r'^Signed-off-by: .+ <[^@\s]+@[^>\s]+>$', header,
                     re.MULTILINE)


def _one_more_line_in_bridge_hunk(text):
    bridge = text.index('+++ b/lib/vdsm/rpc/Bridge.py\n')
    header = HUNK_HEADER.match(text[bridge:].split('\n')[1])
    new_count = int(header.group(4))
    old = header.group(0)
    return text[:bridge] + text[bridge:].replace(
        old, old.replace(',%d @@' % new_count, ',%d @@' % (new_count + 1)),
        1)


@pytest.mark.parametrize('corrupt', [
    lambda text: text.replace("+    'Host_setDHCP': {'ret': 'status'},\n",
                              ''),
    lambda text: text.replace('+Host.setDHCP:\n', '+Host.setDHCP:\n+\n'),
    _one_more_line_in_bridge_hunk,
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
    assert dhcp_network['added'] == SCHEMA_ADDED
    assert schema['Host.setDHCP']['added'] == SCHEMA_ADDED
    # VDSM's schemavalidation_test: no line over 80 columns, no tab.
    assert all(len(line) <= 80 and '\t' not in line
               for line in added.splitlines())


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


# --- Global.setDHCP from the patch, run against stand-ins ---------------------

class StandInResponse:
    """vdsm.common.response, the parts setDHCP uses."""

    @staticmethod
    def error_raw(code, message):
        return {'status': {'code': code, 'message': message}}

    @staticmethod
    def is_valid(res):
        return (isinstance(res, dict) and isinstance(res.get('status'), dict)
                and {'code', 'message'} <= set(res['status']))

    @staticmethod
    def is_error(res):
        return res['status']['code'] != 0


class StandInException:
    class GeneralException(Exception):
        code = 100


class StandInApi:
    @staticmethod
    def logged(on=''):
        return lambda func: func


class StandInProxy:
    """supervdsm.getProxy(): records whether the network semaphore was held
    during the call, answers or raises as told."""

    def __init__(self, semaphore, answer):
        self.semaphore = semaphore
        self.answer = answer
        self.calls = []

    def setDHCP(self, networks):
        held = not self.semaphore.acquire(blocking=False)
        if not held:
            self.semaphore.release()
        self.calls.append((networks, held))
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer


class ProxyWithoutSetDHCP:
    """What vdsmd's proxy does when supervdsmd has no such function."""

    def __getattr__(self, name):
        raise AttributeError("'AutoProxy[instance]' object has no attribute "
                             "'%s'" % name)


def patched_setDHCP(patch_text, modules):
    """The patch's Global.setDHCP as a function, its module globals taken
    from `modules` (VDSM's names: api, errCode, exception, response,
    supervdsm)."""
    method = textwrap.dedent('\n'.join(
        line for hunk in parse_patch(patch_text)['lib/vdsm/API.py']
        for line in hunk.added()))
    namespace = dict(modules)
    exec(compile(method, 'API.py (patched)', 'exec'), namespace)
    return namespace['setDHCP']


def stand_in_modules():
    return {'api': StandInApi, 'exception': StandInException,
            'response': StandInResponse,
            'errCode': {'unavail': {'status': {
                'code': 40, 'message': 'Resource unavailable'}}}}


def fake_global(semaphore):
    return types.SimpleNamespace(
        log=logging.getLogger('test.API'),
        _cif=types.SimpleNamespace(_networkSemaphore=semaphore))


NETWORKS = [{'name': 'red', 'quantumId': '6a4f7b36-8a1d-4b3c-9d2e-0f1e2d3c4b5a'}]


def check_setDHCP(patch_text, modules):
    """Run the patched verb through each outcome of the supervdsm call."""
    semaphore = threading.Semaphore()
    this = fake_global(semaphore)

    def call(proxy):
        set_dhcp = patched_setDHCP(patch_text, dict(
            modules, supervdsm=types.SimpleNamespace(getProxy=lambda: proxy)))
        return set_dhcp(this, NETWORKS)

    # The drop-in's envelope passes through, error codes included; the
    # semaphore is held during the call and released after it.
    for envelope in ({'status': {'code': 0, 'message': 'Done'}},
                     {'status': {'code': 27, 'message': 'bad name'}}):
        proxy = StandInProxy(semaphore, envelope)
        assert call(proxy) == envelope
        assert proxy.calls == [(NETWORKS, True)]
        assert semaphore.acquire(blocking=False)
        semaphore.release()

    # Exceptions from the proxy or the drop-in become a status, with a
    # message, and the semaphore is released.
    for error in (RuntimeError('Broken communication with supervdsm. '
                               'Failed call to setDHCP'),
                  OSError('drop-in exploded')):
        result = call(StandInProxy(semaphore, error))
        assert result['status']['code'] == 100
        assert str(error) in result['status']['message']
        assert semaphore.acquire(blocking=False)
        semaphore.release()

    result = call(ProxyWithoutSetDHCP())
    assert result['status']['code'] == 100
    assert 'restart supervdsmd' in result['status']['message']

    for malformed in (None, {'code': 0}, {'status': {'code': 0}}):
        result = call(StandInProxy(semaphore, malformed))
        assert result['status']['code'] == 100
        assert 'malformed' in result['status']['message']
        assert semaphore.acquire(blocking=False)
        semaphore.release()

    # Another network verb running: code 40 at once, supervdsm not called.
    semaphore.acquire()
    proxy = StandInProxy(semaphore, {'status': {'code': 0, 'message': 'Done'}})
    assert call(proxy)['status']['code'] == 40
    assert proxy.calls == []
    semaphore.release()


def test_patch_setDHCP_answers_a_status_whatever_supervdsm_does(patch_text):
    check_setDHCP(patch_text, stand_in_modules())


# --- the patch on a real VDSM tree ($VDSM_SRC), when there is one ------------

PATCHED_FILES = ('lib/vdsm/API.py', 'lib/vdsm/api/vdsm-api.yml',
                 'lib/vdsm/rpc/Bridge.py')


@pytest.fixture(scope='module')
def vdsm_tree():
    tree = os.environ.get('VDSM_SRC')
    if not tree or not os.path.isfile(os.path.join(tree, 'lib/vdsm/API.py')):
        pytest.skip('no VDSM source tree: set VDSM_SRC to a vdsm checkout')
    return tree


@pytest.fixture
def patched_copy(vdsm_tree, tmp_path):
    """The files the patch touches, copied from the tree and patched."""
    for path in PATCHED_FILES:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(os.path.join(vdsm_tree, path), tmp_path / path)
    subprocess.run(['git', 'apply', PATCH], cwd=tmp_path, check=True,
                   capture_output=True)
    return tmp_path


def test_patch_applies_to_vdsm_tree(vdsm_tree):
    # --check only reads the tree; a tree that has the patch already fails.
    subprocess.run(['git', 'apply', '--check', PATCH], cwd=vdsm_tree,
                   check=True, capture_output=True)


def test_patch_added_is_the_release_after_the_tree(vdsm_tree):
    with open(os.path.join(vdsm_tree, 'vdsm.spec.in')) as f:
        version = re.search(r'^Version:\s*4\.50\.(\d+)', f.read(),
                            re.MULTILINE)
    assert SCHEMA_ADDED == '4.5.%d' % (int(version.group(1)) + 1)


def test_patched_api_compiles(patched_copy):
    with open(patched_copy / 'lib/vdsm/API.py') as f:
        tree = ast.parse(f.read())
    [global_class] = [node for node in tree.body
                      if isinstance(node, ast.ClassDef)
                      and node.name == 'Global']
    assert 'setDHCP' in [node.name for node in global_class.body
                         if isinstance(node, ast.FunctionDef)]


# Builds the pickle as VDSM's build does and loads it with VDSM's Schema,
# in a child process so that this process imports nothing from VDSM.
LOAD_SCHEMA = '''
import json, sys
sys.path.insert(0, sys.argv[1] + '/lib')
from vdsm.api import schema_to_pickle, vdsmapi
schema_to_pickle._dump_pickled_schema(sys.argv[2], sys.argv[3])

class Pickled:
    def path(self):
        return sys.argv[3]

schema = vdsmapi.Schema([Pickled()], strict_mode=True)
rep = vdsmapi.MethodRep('Host', 'setDHCP')
schema.verify_args(rep, {'networks': json.loads(sys.argv[4])})
schema.verify_args(rep, {'networks': []})
try:
    schema.verify_args(rep, {'networks': [{'name': 7, 'quantumId': 'x'}]})
    sys.exit('a bad argument passed the schema')
except Exception:
    pass
print(json.dumps({'method': schema.get_method(rep)['added'],
                  'type': schema.get_type('DhcpNetwork')['added'],
                  'args': schema.get_arg_names(rep)}))
'''


def test_patched_schema_loads_with_vdsm(vdsm_tree, patched_copy):
    pytest.importorskip('yaml')
    out = subprocess.run(
        [sys.executable, '-c', LOAD_SCHEMA, vdsm_tree,
         str(patched_copy / 'lib/vdsm/api/vdsm-api.yml'),
         str(patched_copy / 'vdsm-api.pickle'), json.dumps(NETWORKS)],
        check=True, capture_output=True, text=True).stdout
    assert json.loads(out) == {'method': SCHEMA_ADDED, 'type': SCHEMA_ADDED,
                               'args': ['networks']}


def test_patch_setDHCP_with_vdsm_modules(vdsm_tree, patch_text, monkeypatch):
    """The same checks, with VDSM's own response, exception and errCode."""
    _forget_vdsm_modules()
    monkeypatch.syspath_prepend(os.path.join(vdsm_tree, 'lib'))
    try:
        from vdsm.common import define, exception, response
        modules = {'api': StandInApi, 'exception': exception,
                   'response': response, 'errCode': define.errCode}
        check_setDHCP(patch_text, modules)
    finally:
        _forget_vdsm_modules()
