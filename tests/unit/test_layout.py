"""The shape of the code itself: no import circle, modules of a size one
reads in a sitting, each saying first what it owns. The layers are checked
by lint-imports (.importlinter), which `make check` runs first."""
import ast
import os

import grimp
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
PACKAGE = os.path.join(ROOT, 'vdsm_dhcp')
MAX_LINES = 350


def modules():
    for base, dirs, files in os.walk(PACKAGE):
        dirs[:] = [d for d in dirs if d != '__pycache__']
        for name in sorted(files):
            if name.endswith('.py'):
                yield os.path.relpath(os.path.join(base, name), ROOT)


def test_no_import_circle():
    graph = grimp.build_graph('vdsm_dhcp')
    circles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            back = graph.find_shortest_chain(importer=imported,
                                             imported=module)
            if back:
                circles.append((module,) + tuple(back))
    assert not circles, circles


@pytest.mark.parametrize('path', list(modules()))
def test_module_is_small_and_says_what_it_owns(path):
    with open(os.path.join(ROOT, path)) as f:
        text = f.read()
    assert text.count('\n') <= MAX_LINES, '%s: split it by concept' % path
    if not path.endswith('__main__.py'):
        assert ast.get_docstring(ast.parse(text)), path
