"""dsr-db-manage: the controller's database schema (alembic).

    dsr-db-manage --config-file dsr-controller.conf upgrade [REVISION]
    dsr-db-manage --config-file dsr-controller.conf current
    dsr-db-manage --config-file dsr-controller.conf history

Run ``upgrade`` once per deployment (and after each upgrade of the code)
before starting the controllers: they never migrate, and refuse to start
on a schema that is not at this code's head.  ``upgrade`` is idempotent
and serialised by a database lock, so deployment tools may run it from
every controller host.  The database is [dsr_controller]
database_connection.
"""

import sys

from oslo_config import cfg
from oslo_log import log as oslo_log
from sqlalchemy import exc as sa_exc

from dsr_provider.controller import db as db_mod
from dsr_provider import opts

LOG = oslo_log.getLogger(__name__)


def do_upgrade(conf):
    before, after = db_mod.upgrade(conf.dsr_controller.database_connection,
                                   conf.command.revision)
    if after == before:
        print(f'schema already at {_revs(after)}')
    else:
        print(f'schema upgraded from {_revs(before)} to {_revs(after)}')
    return 0


def do_current(conf):
    have = db_mod.current(conf.dsr_controller.database_connection)
    want = db_mod.head()
    print(f'{_revs(have)}' + (' (head)' if have == (want,) else
                              f' (head is {want}: run "upgrade")'))
    return 0


def do_history(conf):
    for rev, down, doc in db_mod.history():
        first = (doc or '').strip().splitlines()[:1]
        print(f'{down or "<base>"} -> {rev}: {first[0] if first else ""}')
    return 0


def _revs(revisions):
    return ', '.join(revisions) if revisions else '<none>'


def _add_parsers(subparsers):
    p = subparsers.add_parser('upgrade', help='migrate the schema (default '
                              'to the newest revision)')
    p.add_argument('revision', nargs='?', default='head')
    p.set_defaults(func=do_upgrade)
    p = subparsers.add_parser('current', help='the revision the database '
                              'is at')
    p.set_defaults(func=do_current)
    p = subparsers.add_parser('history', help='the known revisions')
    p.set_defaults(func=do_history)


def main(argv=None):
    conf = cfg.ConfigOpts()
    opts.register_controller_opts(conf)
    oslo_log.register_options(conf)
    # alembic's progress to stderr, the answers to stdout.
    conf.set_default('use_stderr', True)
    conf.register_cli_opt(cfg.SubCommandOpt(
        'command', handler=_add_parsers, title='commands'))
    conf(argv if argv is not None else sys.argv[1:], project='octavia-dsr',
         prog='dsr-db-manage', default_config_files=[])
    oslo_log.setup(conf, 'octavia-dsr')
    try:
        return conf.command.func(conf)
    except (sa_exc.SQLAlchemyError, db_mod.SchemaNotCurrent) as exc:
        LOG.error('dsr-db-manage %s failed: %s', conf.command.name, exc)
        print(f'dsr-db-manage: {exc}', file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
