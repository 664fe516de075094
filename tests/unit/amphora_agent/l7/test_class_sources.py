"""amphora_agent/l7/class_sources.py: inspect's answers for classes are
the standard ones, with the module parsed once."""

import ast
import importlib
import importlib.util
import inspect
import sys
import textwrap

import pytest

from amphora_agent.l7 import class_sources

TRICKY = textwrap.dedent('''
    import functools

    def deco(cls):
        return cls

    class Plain:
        a = 1

    @deco
    @functools.total_ordering
    class Decorated:
        b = 2

        def __lt__(self, other):
            return False

        class Inner:
            c = 3

    if True:
        class Twice:
            first = True
    else:
        class Twice:
            first = False

    def factory():
        class Local:
            d = 4
        return Local

    async def afactory():
        class ALocal:
            e = 5
        return ALocal

    LOCAL = factory()
    ''')


@pytest.fixture
def tricky(tmp_path, monkeypatch):
    path = tmp_path / 'dsr_class_sources_probe.py'
    path.write_text(TRICKY)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, path.stem, module)
    spec.loader.exec_module(module)
    return module


def _classes(module):
    found = [v for v in vars(module).values()
             if inspect.isclass(v) and v.__module__ == module.__name__]
    for cls in list(found):
        found += [v for v in vars(cls).values() if inspect.isclass(v)]
    return found


def _answers(classes):
    return {cls: (inspect.findsource(cls)[1], inspect.getsourcelines(cls))
            for cls in classes}


def test_tricky_classes_are_found_where_inspect_finds_them(tricky):
    classes = _classes(tricky) + [tricky.LOCAL]
    names = {c.__qualname__ for c in classes}
    assert {'Plain', 'Decorated', 'Decorated.Inner', 'Twice',
            'factory.<locals>.Local'} <= names
    standard = _answers(classes)
    with class_sources.cached():
        cached = _answers(classes)
        cached_again = _answers(classes)     # from what it kept
    assert cached == standard == cached_again
    # Decorators belong to the class's source; the first Twice wins.
    assert standard[tricky.Decorated][1][0][0].strip() == '@deco'
    assert 'first = True' in ''.join(standard[tricky.Twice][1][0])


def test_a_class_without_a_definition_fails_as_without_the_cache(tricky):
    ghost = type('Ghost', (), {'__module__': tricky.__name__})
    with pytest.raises(OSError) as standard:
        inspect.findsource(ghost)
    with class_sources.cached():
        with pytest.raises(OSError) as cached:
            inspect.findsource(ghost)
    assert str(cached.value) == str(standard.value)


def test_a_changed_file_is_parsed_again(tricky, tmp_path):
    with class_sources.cached():
        before = inspect.findsource(tricky.Plain)[1]
        path = tmp_path / 'dsr_class_sources_probe.py'
        path.write_text('\n\n\n' + TRICKY)
        # linecache sees the new file (checkcache compares size/mtime).
        inspect.linecache.checkcache(str(path))
        after = inspect.findsource(tricky.Plain)[1]
    assert after == before + 3


def test_every_octavia_api_type_is_found_as_without_the_cache():
    # The classes whose sources WSME reads while Octavia's API imports.
    with class_sources.cached():
        from octavia.api.v2 import types as types_pkg
        modules = [importlib.import_module(f'{types_pkg.__name__}.{name}')
                   for name in ('amphora', 'health_monitor', 'l7policy',
                                'l7rule', 'listener', 'load_balancer',
                                'member', 'pool', 'quotas')]
    classes = {cls for m in modules for c in _classes(m)
               for cls in inspect.getmro(c) if cls is not object}
    assert len(classes) > 100
    with class_sources.cached():
        cached = _answers(classes)
    assert cached == _answers(classes)


@pytest.mark.skipif(sys.version_info >= (3, 13),
                    reason='3.13 finds classes by __firstlineno__: '
                    'cached() patches nothing')
def test_inspect_is_restored_even_after_an_error():
    standard = inspect.findsource, inspect.getsourcelines
    with pytest.raises(RuntimeError):
        with class_sources.cached():
            assert inspect.findsource is not standard[0]
            raise RuntimeError('boom')
    assert (inspect.findsource, inspect.getsourcelines) == standard


def test_functions_and_modules_go_to_the_standard_functions(tricky):
    with class_sources.cached():
        got = inspect.findsource(tricky.factory), inspect.getsourcelines(
            tricky.deco), inspect.findsource(tricky)
    assert got == (inspect.findsource(tricky.factory),
                   inspect.getsourcelines(tricky.deco),
                   inspect.findsource(tricky))


def test_the_index_names_classes_as_inspect_does():
    tree = ast.parse(TRICKY)
    finder = class_sources._ClassLines()
    finder.visit(tree)
    assert finder.found['afactory.<locals>.ALocal'] > 0
    assert finder.found['Decorated'] == TRICKY.splitlines().index('@deco')
