"""Schema templates (tools/lab/localstack/schema_template.py): what keys a
template, the completeness rule, and that an interrupted SQLite build is
never used (the MariaDB side: tests/functional/tools/lab/localstack/
test_schema_template.py)."""

import re
import sys

import pytest

from tools.lab.localstack import schema_template as st

KEY = st.TemplateKey('octavia', '19.0.0', 'ab' * 32)


def _scripts(tmp_path):
    root = tmp_path / 'migration'
    (root / 'versions').mkdir(parents=True)
    (root / 'env.py').write_text('# env\n')
    (root / 'versions' / '001_first.py').write_text('up = 1\n')
    return root


def test_digest_follows_every_script_change(tmp_path):
    root = _scripts(tmp_path)
    seen = {st.scripts_digest(root)}
    # byte-code caches are not scripts
    (root / 'versions' / '__pycache__').mkdir()
    (root / 'versions' / '__pycache__' / 'x.pyc').write_bytes(b'\0')
    assert st.scripts_digest(root) in seen

    (root / 'versions' / '001_first.py').write_text('up = 2\n')    # edit
    seen.add(st.scripts_digest(root))
    (root / 'versions' / '002_next.py').write_text('up = 3\n')     # add
    seen.add(st.scripts_digest(root))
    (root / 'versions' / '002_next.py').rename(
        root / 'versions' / '003_next.py')                        # rename
    seen.add(st.scripts_digest(root))
    # moving bytes between files is a change, not the same concatenation
    (root / 'versions' / '003_next.py').write_text('')
    (root / 'versions' / '001_first.py').write_text('up = 2\nup = 3\n')
    seen.add(st.scripts_digest(root))
    assert len(seen) == 5


def test_no_scripts_is_an_error_not_a_key(tmp_path):
    with pytest.raises(FileNotFoundError):
        st.scripts_digest(tmp_path)


def test_name_changes_with_each_part_of_the_key_and_fits_mariadb():
    names = {KEY.name(),
             st.TemplateKey('neutron', '19.0.0', 'ab' * 32).name(),
             st.TemplateKey('octavia', '19.0.1', 'ab' * 32).name(),
             st.TemplateKey('octavia', '19.0.0', 'cd' * 32).name()}
    assert len(names) == 4
    for name in names:
        assert re.fullmatch(r'dsr_tmpl_[a-z]+_[0-9a-f]{24}', name)
        assert len(name) <= 64
    assert KEY.name() == st.TemplateKey('octavia', '19.0.0', 'ab' * 32).name()
    with pytest.raises(ValueError):
        st.TemplateKey('octavia`; DROP', '1', 'x').name()


def test_tool_key_reads_the_interpreter_that_runs_the_tool():
    key = st.tool_key('octavia', sys.executable)
    import importlib.metadata
    assert key.version == importlib.metadata.version('octavia')
    import octavia.db.migration
    from pathlib import Path
    assert key.digest == st.scripts_digest(
        Path(octavia.db.migration.__file__).parent)


def test_complete_only_with_the_marker_naming_this_key():
    tables = ['load_balancer', 'alembic_version']
    assert not st.is_complete(tables, [], KEY)        # interrupted build
    marked = tables + [st.MARKER_TABLE]
    assert st.is_complete(marked, [(KEY.text(),)], KEY)
    assert not st.is_complete(marked, [], KEY)
    other = st.TemplateKey('octavia', '19.0.1', 'ab' * 32)
    assert not st.is_complete(marked, [(other.text(),)], KEY)
    assert not st.is_complete(marked, [(KEY.text(),), (KEY.text(),)], KEY)


def test_switch(monkeypatch):
    assert st.enabled({})
    assert st.enabled({st.ENV_SWITCH: '1'})
    for off in ('0', 'no', 'false', 'OFF'):
        assert not st.enabled({st.ENV_SWITCH: off})


def test_sqlite_interrupted_build_is_never_used(tmp_path, monkeypatch):
    monkeypatch.setattr(st, 'TEMPLATE_DIR', tmp_path / 'tmpl')
    calls = []

    def interrupted(path):
        calls.append(path)
        path.write_text('half a schema')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        st.sqlite_template(KEY, interrupted)
    assert not (tmp_path / 'tmpl' / f'{KEY.name()}.sqlite').exists()
    assert [p.name for p in (tmp_path / 'tmpl').iterdir()] == [
        f'{KEY.name()}.lock']

    def migrate(path):
        calls.append(path)
        path.write_text('whole schema')
    path = st.sqlite_template(KEY, migrate)
    assert path.read_text() == 'whole schema'
    assert path.name == f'{KEY.name()}.sqlite'
    assert calls[0] != path and calls[1] != path    # built aside, renamed
    # Built once: the next lab copies it.
    assert st.sqlite_template(KEY, interrupted) == path
    assert len(calls) == 2
