"""dsr-db-manage (upgrade, current, history) and the controller's refusal
of a schema that is not at head, on a SQLite file (MariaDB:
tests/functional/dsr_provider/controller/test_controller_runtime.py)."""

import sqlalchemy as sa

import pytest

from dsr_provider.cmd import db_manage
from dsr_provider.controller import db as db_mod


@pytest.fixture
def conf_file(tmp_path):
    url = f'sqlite:///{tmp_path}/controller.db'
    path = tmp_path / 'dsr-controller.conf'
    path.write_text(f'[dsr_controller]\ndatabase_connection = {url}\n')
    return str(path), url


def run(conf, *args):
    return db_manage.main(['--config-file', conf] + list(args))


def test_upgrade_is_idempotent_and_current_says_head(conf_file, capsys):
    conf, url = conf_file
    head = db_mod.head()
    assert run(conf, 'current') == 0
    assert f'head is {head}: run "upgrade"' in capsys.readouterr().out
    assert run(conf, 'upgrade') == 0
    assert f'upgraded from <none> to {head}' in capsys.readouterr().out
    assert run(conf, 'upgrade', 'head') == 0
    assert f'already at {head}' in capsys.readouterr().out
    assert run(conf, 'current') == 0
    assert capsys.readouterr().out.strip() == f'{head} (head)'
    db_mod.require_head(url)


def test_history_is_one_chain_newest_first(conf_file, capsys):
    conf, _url = conf_file
    assert run(conf, 'history') == 0
    lines = capsys.readouterr().out.strip().splitlines()
    revisions = db_mod.history()
    assert len(lines) == len(revisions) >= 4
    assert revisions[0][0] == db_mod.head()
    assert revisions[-1][1] is None
    for (rev, down, _), (older, _, _) in zip(revisions, revisions[1:]):
        assert down == older, (rev, down, older)
    assert lines[-1].startswith('<base> -> 0001: ')


def test_a_controller_refuses_a_schema_not_at_head(conf_file, capsys):
    conf, url = conf_file
    with pytest.raises(db_mod.SchemaNotCurrent) as fresh:
        db_mod.require_head(url)
    assert 'no octavia-dsr schema yet' in str(fresh.value)
    assert 'dsr-db-manage' in str(fresh.value) and 'upgrade' in str(
        fresh.value)
    assert run(conf, 'upgrade', '0001') == 0
    with pytest.raises(db_mod.SchemaNotCurrent, match='at revision 0001'):
        db_mod.require_head(url)


def test_a_schema_newer_than_the_code_is_named(conf_file):
    conf, url = conf_file
    assert run(conf, 'upgrade') == 0
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text(
            "UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(db_mod.SchemaNotCurrent, match='newer than this code'):
        db_mod.require_head(url)


def test_an_unreachable_database_is_an_error_not_a_traceback(tmp_path,
                                                             capsys):
    path = tmp_path / 'c.conf'
    path.write_text('[dsr_controller]\ndatabase_connection = '
                    f'sqlite:///{tmp_path}/missing/dir/c.db\n')
    assert run(str(path), 'upgrade') == 1
    assert 'dsr-db-manage: ' in capsys.readouterr().err
