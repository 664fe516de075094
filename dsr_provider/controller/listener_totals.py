"""Listener statistics as Octavia shows them: totals that never go down.

Each SE reports, per listener, counters cumulative since its dataplane was
loaded, and each report replaces its last one (agent_states.stats).
Octavia keeps what a provider sends as the listener's absolute totals
(octavia-driver-agent replaces one listener_statistics row per listener;
only its own amphorae send deltas it adds up).  The sum of the SEs' last
reports went down when a dataplane restarted (reboot, dsrctl reset: its
counters start again from 0) or an SE left (revoke-se deletes its row),
and a stopped SE's last active_connections counted forever.

So, as Octavia does for its amphorae (one row per amphora and listener,
the listener's statistics their sum, the active connections of ALLOCATED
amphorae only), what each SE counted for a listener before its current
counters is kept in the database (table carried_stats, per SE, its group
and listener), and a listener's totals are that plus the SEs' current
counters.  carry() adds to it in the transaction that replaces or deletes
an SE's last counters, whichever controller handles the report: the
counters of a listener that went down (its dataplane started again) or
that the new report no longer has (taken off the dataplane: one put back
counts from 0), and all of them when the SE's row is deleted (revoke-se)
or the SE moves to another group.  An SE that goes silent or leaves keeps
its contribution (its traffic happened); only its active connections stop
counting, which come from the SEs heard from only.

The leader reads what was carried (carried_totals()) and the SEs' rows in
one snapshot (one_snapshot()) and adds them up (totals()): nothing but the
database, so every controller that leads computes the same totals, and a
leader change or a controller restart does not move them
(docs/operations.md, "Listener statistics").
"""

from oslo_log import log as logging
import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite

from dsr_provider.controller import db
from dsr_provider.controller import models

LOG = logging.getLogger(__name__)

# The counters Octavia shows as totals (cumulative on the SEs).
CUMULATIVE = ('bytes_in', 'bytes_out', 'request_errors', 'total_connections')


def _count(counters, name):
    try:
        return max(0, int(counters.get(name) or 0))
    except (AttributeError, TypeError, ValueError):
        return 0


def _listeners(stats):
    listeners = stats.get('listeners') if isinstance(stats, dict) else None
    return listeners if isinstance(listeners, dict) else {}


def _goes_on(current, last):
    """Whether current continues last (no counter went down), for counters
    that are not all ints."""
    return current is not None and all(
        _count(current, c) >= _count(last, c) for c in CUMULATIVE)


def _ended(last, current):
    """{listener id: counters} of last that current does not go on from."""
    ended = {}
    # Every report, for every listener: plain lookups inline, no copies.
    for lid, was in last.items():
        now = current.get(lid)
        try:
            if now['bytes_in'] >= was['bytes_in'] and \
                    now['bytes_out'] >= was['bytes_out'] and \
                    now['request_errors'] >= was['request_errors'] and \
                    now['total_connections'] >= was['total_connections']:
                continue
        except (KeyError, TypeError):
            if _goes_on(now, was):
                continue
        ended[lid] = was
    return ended


def carry(session, se_id, se_group, last_stats, stats=None):
    """Keep what last_stats (the SE's stored report, of se_group) counted
    for the listeners stats does not go on from: those it has with a
    counter lower, or has not.  stats None: every listener (the SE's row
    is deleted, or its group changes).  In the transaction that replaces or
    deletes last_stats, the SE's agent_states row locked (FOR UPDATE):
    each report is compared with the one before it exactly once."""
    last = _listeners(last_stats)
    if not last:
        return
    current = _listeners(stats)
    ended = _ended(last, current)
    if not ended:
        return
    if stats is not None:
        restarted = sum(1 for lid in ended if lid in current)
        if restarted:
            LOG.info('SE %s: counters of %d listeners started again (its '
                     'dataplane was loaded again): the earlier ones are '
                     'carried', se_id, restarted)
    session.execute(_add_to_carried(session), [
        dict({c: _count(counters, c) for c in CUMULATIVE}, se_id=se_id,
             se_group=se_group, listener_id=lid)
        for lid, counters in ended.items()])


def _add_to_carried(session):
    """An INSERT of carried_stats rows that adds to a row already there:
    one statement for all the listeners of an SE (thousands when its
    dataplane restarts), not a read and a write of each."""
    table = models.CarriedStats.__table__
    dialect = session.get_bind().dialect.name
    if db.is_mysql(dialect):
        stmt = mysql.insert(table)
        return stmt.on_duplicate_key_update(
            {c: table.c[c] + stmt.inserted[c] for c in CUMULATIVE})
    stmt = (postgresql if dialect == 'postgresql' else sqlite).insert(table)
    return stmt.on_conflict_do_update(
        index_elements=list(table.primary_key.columns),
        set_={c: table.c[c] + stmt.excluded[c] for c in CUMULATIVE})


def one_snapshot(session):
    """Make the reads of session, a transaction that has not read yet, one
    snapshot, as carried_totals() needs."""
    dialect = session.get_bind().dialect.name
    if db.is_mysql(dialect) or dialect == 'postgresql':
        # Whatever the server's default isolation.
        session.connection(execution_options={
            'isolation_level': 'REPEATABLE READ'})
    elif dialect == 'sqlite':
        # pysqlite begins a transaction before a write only: each read
        # alone saw the last commit.
        session.execute(sa.text('BEGIN'))


def carried_totals(session, counted_by):
    """{listener id: {counter: value}} carried for the listeners, by the SE
    group that counts each: counted_by, {listener id: that group}, of
    every listener; what was carried for others (deleted listeners) is
    deleted.  session: one snapshot (one_snapshot) of these and of the
    SEs' current counters: a report moves counters from its row to
    carried_stats in one transaction, and two reads apart could count them
    twice or not at all."""
    rows = models.CarriedStats
    result = {}
    gone = set()
    for lid, se_group, *sums in session.query(
            rows.listener_id, rows.se_group,
            *[sa.func.sum(getattr(rows, c)) for c in CUMULATIVE]).group_by(
                rows.listener_id, rows.se_group):
        if lid not in counted_by:
            gone.add(lid)
        elif counted_by[lid] == se_group:
            result[lid] = {c: int(v or 0) for c, v in zip(CUMULATIVE, sums)}
    if gone:
        session.query(rows).filter(rows.listener_id.in_(
            sorted(gone))).delete(synchronize_session=False)
    return result


def totals(carried, reports):
    """Totals of the listeners: {listener id: {counter: value}} with
    CUMULATIVE and active_connections.  carried: carried_totals().
    reports: [(listener id, counters, heard)] of the SEs of the group
    counting each (their last report), heard: the SE is live and not
    silent (its active connections count)."""
    result = {lid: dict(sums) for lid, sums in carried.items()}
    active = {}
    for lid, counters, heard in reports:
        total = result.setdefault(lid, dict.fromkeys(CUMULATIVE, 0))
        for c in CUMULATIVE:
            total[c] += _count(counters, c)
        if heard:
            active[lid] = active.get(lid, 0) + _count(
                counters, 'active_connections')
    for lid, total in result.items():
        total['active_connections'] = active.get(lid, 0)
    return result
