"""tools/constraints.py and the committed upper-constraints.txt."""

from pathlib import Path

from packaging.requirements import Requirement
import pytest

from tools import constraints
from tools import pyinstall

ROOT = Path(constraints.__file__).resolve().parent.parent


def requirements(path):
    for line in (ROOT / path).read_text().splitlines():
        line = line.split('#', 1)[0].strip()
        if line and not line.startswith('-'):
            yield Requirement(line)


def committed():
    return constraints.parse_pins(constraints.OUTPUT.read_text())


@pytest.mark.parametrize('path', [f for files in constraints.SETS
                                  for f in files])
def test_every_requirement_is_pinned_within_its_bounds(path):
    """A bound raised in a requirements file without `make constraints`
    would make make deps fail to resolve."""
    pins = committed()
    for req in requirements(path):
        name = constraints.normalise(req.name)
        assert name in pins, f'{req.name} ({path}) is not pinned'
        assert req.specifier.contains(pins[name], prereleases=True), (
            f'{path}: {req} excludes the pinned {pins[name]}')


def test_the_committed_file_is_what_render_writes():
    """Sorted, one pin per distribution, no venv seeds or project."""
    pins = committed()
    assert constraints.render(pins) == constraints.OUTPUT.read_text()
    assert not constraints.NOT_PINNED & set(pins)
    assert 'uv' in pins     # pyinstall bootstraps it under the file


def test_sets_that_disagree_are_refused():
    with pytest.raises(ValueError, match='cryptography: 50.0.2 in one set, '
                                         '51.0.1 in another'):
        constraints.union([{'cryptography': '50.0.2', 'a': '1'},
                           {'a': '1', 'cryptography': '51.0.1'}])
    assert constraints.union([{'a': '1'}, {'a': '1', 'b': '2'}]) == {
        'a': '1', 'b': '2'}


@pytest.mark.parametrize('line', ['foo>=1.0', 'foo==1.0; python_version<"3"',
                                  '-e .'])
def test_a_line_that_is_not_a_pin_is_refused(line):
    with pytest.raises(ValueError, match='not a pin'):
        constraints.parse_pins(line)


def test_names_are_normalised():
    assert constraints.parse_pins('PyOpenSSL==26.4.0  # x\n\noslo.config'
                                  '==10.3.0\n') == {
        'pyopenssl': '26.4.0', 'oslo-config': '10.3.0'}


def test_constraint_options_are_found_for_the_bootstrap():
    assert pyinstall.constraint_args(
        ['-c', 'a.txt', '-r', 'r.txt', '--constraint', 'b.txt',
         '--constraint=c.txt', '-cd.txt', '-e', '.']) == [
        '-c', 'a.txt', '--constraint', 'b.txt', '--constraint=c.txt',
        '-cd.txt']


def test_the_build_system_is_pinned_within_its_bounds():
    """pyproject.toml's [build-system] requires, each pinned in
    build-constraints.txt (what make deps builds the editable install
    with), as render writes it, and as upper-constraints.txt pins it."""
    text = constraints.BUILD_OUTPUT.read_text()
    build = constraints.parse_pins(text)
    assert constraints.render(build, constraints.BUILD_HEADER) == text
    for line in constraints.build_requires():
        req = Requirement(line)
        name = constraints.normalise(req.name)
        assert name in build, f'{req.name} (build system) is not pinned'
        assert req.specifier.contains(build[name], prereleases=True)
    constraints.check_shared(committed(), build)


def test_a_build_pin_that_disagrees_is_refused():
    with pytest.raises(ValueError, match='pbr: 7.1.3 in upper-constraints, '
                       '6.0.0 in the build system'):
        constraints.check_shared({'pbr': '7.1.3', 'six': '1.0'},
                                 {'pbr': '6.0.0', 'setuptools': '80'})
