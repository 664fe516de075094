"""Enrolled SEs (their public keys) and which SE group owns an object.

Used by dsr-manage (enrol, revoke, list) and by the controller's
AgentGuard, which looks an SE up on every message so that a revocation
takes effect at once.
"""

import functools
import re
import time

from dsr_provider.controller import listener_totals
from dsr_provider.controller import models
from dsr_wire import auth

# se_id and se_group as the agent's options and the DB columns allow.
_NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$')


def _check_name(field, value, length):
    if not isinstance(value, str) or not _NAME.match(value) or \
            len(value) > length:
        raise ValueError(f'{field}: {value!r} is not a name (letters, '
                         f'digits, "_.:@-", at most {length} characters)')


def enrol(database, se_group, se_id, public_key):
    """Enrol (or re-key) se_id in se_group; returns the key id.  An SE is
    in one group only: enrolling it in another one moves it.  A new
    enrolment starts without kept L7 flap penalties (a leader that saw the
    revoked SE of the name leave counted a flap and may have kept it after
    the revoke deleted it)."""
    _check_name('se_group', se_group, 64)
    _check_name('se_id', se_id, 128)
    text = auth.public_to_text(public_key)
    kid = auth.key_id(public_key)
    with database.session() as s:
        row = s.get(models.SEKey, se_id)
        if row is None:
            s.query(models.L7FlapPenalty).filter_by(se_id=se_id).delete()
            row = models.SEKey(se_id=se_id)
            s.add(row)
        row.se_group = se_group
        row.public_key = text
        row.key_id = kid
        row.enrolled_at = time.time()
    return kid


def revoke(database, se_id):
    """True when se_id was enrolled (its messages are refused from now).
    Its last reported state goes too: a revoked SE must not vote in
    operating statuses until it goes silent (agent_ttl); and an L7 SE's
    kept flap penalties (a running leader may keep one again: it counts
    the SE's leaving as a flap; enrol() deletes them too).  Its listener
    counters are carried: its traffic stays in the totals."""
    with database.session() as s:
        row = s.get(models.SEKey, se_id)
        if row is None:
            return False
        s.delete(row)
        s.query(models.L7FlapPenalty).filter_by(se_id=se_id).delete()
        agent = s.get(models.AgentState, se_id, with_for_update=True)
        if agent is not None:
            listener_totals.carry(s, se_id, agent.se_group, agent.stats)
            s.delete(agent)
        return True


def list_ses(database, se_group=None):
    with database.session() as s:
        query = s.query(models.SEKey)
        if se_group:
            query = query.filter_by(se_group=se_group)
        return [{'se_id': r.se_id, 'se_group': r.se_group,
                 'key_id': r.key_id, 'enrolled_at': r.enrolled_at}
                for r in query.order_by(models.SEKey.se_group,
                                        models.SEKey.se_id)]


def keys_of(database, se_group):
    """{se_id: public key} of the SEs enrolled in se_group."""
    with database.session() as s:
        return {se_id: _public_key(text) for se_id, text in s.query(
            models.SEKey.se_id, models.SEKey.public_key).filter_by(
            se_group=se_group)}


def lookup(database, se_id, session=None):
    """(se_group, public key) of an enrolled SE, or None.  session: the
    caller's transaction (None: one of its own)."""
    if session is None:
        with database.session() as s:
            return lookup(database, se_id, s)
    row = session.get(models.SEKey, se_id)
    if row is None:
        return None
    return row.se_group, _public_key(row.public_key)


@functools.lru_cache(maxsize=4096)
def _public_key(text):
    """The key of an enrolment row's text, parsed once per text (every
    agent message is checked against it)."""
    return auth.public_from_text(text)


def groups_of(database, kind, ids, session=None):
    """{object id: the SE groups that run it} for the ids of `kind`
    (Octavia's status keys: loadbalancers, listeners, pools, members,
    healthmonitors, l7policies, l7rules) that exist, read in ``session``
    (None: a transaction of its own).  A tier-1 object's group is its load
    balancer's se_group; a tier-2 load balancer and its listeners run on
    its L4 group and its l7_se_group, its pools, members, monitors, L7
    policies and rules on the l7_se_group alone (docs/tier2.md)."""
    ids = list({str(i) for i in ids})
    if not ids:
        return {}
    if session is None:
        with database.session() as s:
            return groups_of(database, kind, ids, s)
    lb = models.LoadBalancer
    both = kind in ('loadbalancers', 'listeners')
    s = session
    if kind == 'loadbalancers':
        rows = s.query(lb.id, lb.se_group, lb.l7_se_group).filter(
            lb.id.in_(ids))
    elif kind == 'listeners':
        rows = s.query(models.Listener.id, lb.se_group,
                       lb.l7_se_group).join(
            lb, lb.id == models.Listener.loadbalancer_id).filter(
                models.Listener.id.in_(ids))
    elif kind == 'pools':
        rows = s.query(models.Pool.id, lb.se_group, lb.l7_se_group).join(
            lb, lb.id == models.Pool.loadbalancer_id).filter(
                models.Pool.id.in_(ids))
    elif kind in ('members', 'healthmonitors'):
        child = models.Member if kind == 'members' \
            else models.HealthMonitor
        rows = s.query(child.id, lb.se_group, lb.l7_se_group).join(
            models.Pool, models.Pool.id == child.pool_id).join(
                lb, lb.id == models.Pool.loadbalancer_id).filter(
                    child.id.in_(ids))
    elif kind == 'l7policies':
        # Tier 2: L7 policies and their rules run on the L7 SEs alone.
        rows = s.query(models.L7Policy.id, lb.se_group, lb.l7_se_group).join(
            models.Listener,
            models.Listener.id == models.L7Policy.listener_id).join(
                lb, lb.id == models.Listener.loadbalancer_id).filter(
                    models.L7Policy.id.in_(ids))
    elif kind == 'l7rules':
        rows = s.query(models.L7Rule.id, lb.se_group, lb.l7_se_group).join(
            models.L7Policy,
            models.L7Policy.id == models.L7Rule.l7policy_id).join(
                models.Listener,
                models.Listener.id == models.L7Policy.listener_id).join(
                    lb, lb.id == models.Listener.loadbalancer_id).filter(
                        models.L7Rule.id.in_(ids))
    else:
        raise ValueError(f'kind: {kind!r} is not one of loadbalancers, '
                         f'listeners, pools, members, healthmonitors, '
                         f'l7policies, l7rules')
    return {obj_id: (({group} if both else set()) | {l7_group}
                     if l7_group else {group})
            for obj_id, group, l7_group in rows}
