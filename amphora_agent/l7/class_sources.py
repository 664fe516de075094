"""Importing Octavia's templater without re-parsing its modules per class.

Octavia's templater imports its API types (``octavia.db.models`` imports
``octavia.api.v2.types``).  WSME orders each type's attributes as they
appear in the source: ``inspect.getsourcelines`` of the class and of every
class in its MRO.  Up to CPython 3.12, ``inspect.findsource`` finds a class
by parsing its whole module with ``ast`` and walking the tree, again for
every class asked for: about 4 of the 6 CPU-seconds the import takes on
these hosts, paid by every L7 engine and every lab's octavia-api.

``cached()`` gives, while it is held, a ``findsource`` that parses each
module's source once and finds every class of it in that one walk, with
the same answer as the standard one (the first class of that qualified
name in the same pre-order walk; decorators included), and keeps each
class's ``getsourcelines`` (WSME asks again for every base of every type).
"""

import ast
import contextlib
import inspect
import linecache
import sys
import threading

_lock = threading.RLock()


class _ClassLines(ast.NodeVisitor):
    """{qualified name: first line, 0-based} of every class of a module,
    named as inspect._ClassFinder names them."""

    def __init__(self):
        self.stack = []
        self.found = {}

    def visit_FunctionDef(self, node):
        self.stack += [node.name, '<locals>']
        self.generic_visit(node)
        del self.stack[-2:]

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node):
        self.stack.append(node.name)
        first = node.decorator_list[0] if node.decorator_list else node
        self.found.setdefault('.'.join(self.stack), first.lineno - 1)
        self.generic_visit(node)
        self.stack.pop()


def _finder(standard):
    parsed = {}     # file -> (its lines as linecache holds them, index)

    def findsource(obj):
        if not inspect.isclass(obj):
            return standard(obj)
        # The standard steps up to the parse (which file, which lines,
        # linecache refreshed), then one index per version of the lines.
        file = inspect.getsourcefile(obj)
        if not file:
            return standard(obj)
        linecache.checkcache(file)
        module = inspect.getmodule(obj, file)
        lines = (linecache.getlines(file, module.__dict__) if module
                 else linecache.getlines(file))
        if not lines:
            return standard(obj)
        held = parsed.get(file)
        if held is None or held[0] is not lines:
            finder = _ClassLines()
            finder.visit(ast.parse(''.join(lines)))
            held = parsed[file] = (lines, finder.found)
        line = held[1].get(obj.__qualname__)
        if line is None:
            return standard(obj)    # its own error, as without the cache
        return lines, line

    return findsource


def _memo(standard):
    """getsourcelines, each class's answer kept: WSME asks again for every
    base class of every type (a tokenized block each time)."""
    answers = {}

    def getsourcelines(obj):
        if not inspect.isclass(obj):
            return standard(obj)
        if obj not in answers:
            answers[obj] = standard(obj)
        lines, first = answers[obj]
        return list(lines), first

    return getsourcelines


@contextlib.contextmanager
def cached():
    """inspect.findsource with one parse per module, and each class's
    getsourcelines once, while held (the import of a module's classes:
    its files do not change meanwhile)."""
    if sys.version_info >= (3, 13):     # classes carry __firstlineno__
        yield
        return
    with _lock:
        standard = inspect.findsource, inspect.getsourcelines
        inspect.findsource = _finder(standard[0])
        inspect.getsourcelines = _memo(standard[1])
        try:
            yield
        finally:
            inspect.findsource, inspect.getsourcelines = standard
