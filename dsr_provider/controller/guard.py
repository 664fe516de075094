"""What the controller accepts from agents (docs/security.md).

Every agent message must be signed by the key enrolled for the se_id it
claims, name the group that SE is enrolled in, be inside the replay window
with a nonce no controller of the deployment has seen (replay.py), and
speak only about objects of that group: a report naming an object another
group owns is refused whole.  Each refusal is logged once, with the claimed
identity and the reason, and counted (the running total is in the log
line).  Without the database (enrolment, nonces) every message is refused.
"""


from oslo_log import log as logging
from sqlalchemy import exc as sa_exc

from dsr_provider.controller import enrolment
from dsr_provider.controller import replay
from dsr_wire import auth

LOG = logging.getLogger(__name__)


class Refused(Exception):
    """An agent message failed authentication or authorisation."""


# What a report may name (Octavia's status keys), as the logs name one.
_KINDS = {'loadbalancers': 'loadbalancer', 'listeners': 'listener',
          'pools': 'pool', 'members': 'member',
          'healthmonitors': 'healthmonitor', 'l7policies': 'l7policy',
          'l7rules': 'l7rule'}


def _report_objects(method, args):
    """{kind: ids} a report speaks about."""
    if method == 'report_member_status':
        statuses = args.get('statuses')
        return {'members': statuses if isinstance(statuses, dict) else {}}
    if method == 'report_stats':
        stats = args.get('stats') if isinstance(args.get('stats'),
                                                dict) else {}
        return {kind: stats.get(kind) or {}
                for kind in ('listeners', 'members')
                if isinstance(stats.get(kind) or {}, dict)}
    if method == 'report_state':
        state = args.get('state') if isinstance(args.get('state'),
                                                dict) else {}
        rejected = state.get('rejected_objects')
        if isinstance(rejected, dict):
            return {kind: ids for kind, ids in rejected.items()
                    if isinstance(ids, dict)}
    return {}


class AgentGuard:
    def __init__(self, database, window=60.0, known_objects=100_000):
        """known_objects: how many objects' groups are remembered (about
        19 MB for 100,000 with UUIDs, bench/report_bench.py; all forgotten
        when full, and then read again as they are reported)."""
        self.database = database
        self.window = window
        self.nonces = replay.SharedNonces(database, window)
        self.refusals = auth.Counter()
        self.known_objects = known_objects
        self._groups = {}       # (kind, id) -> frozenset of SE groups
        self._group_sets = {}

    def _key_for(self, se_id, se_group, session):
        def key_for(_kid):
            enrolled = enrolment.lookup(self.database, se_id, session)
            if enrolled is None:
                raise auth.AuthError(f'SE {se_id} is not enrolled '
                                     f'(or was revoked)')
            group, key = enrolled
            if group != se_group:
                raise auth.AuthError(f'SE {se_id} is enrolled in group '
                                     f'{group}, not {se_group}')
            return key
        return key_for

    def _foreign(self, method, args, se_group, session):
        """What the report names of other groups' objects.

        An object's groups never change while it exists (a load
        balancer's se_group and l7_se_group are set at its creation), so
        an object once seen run by the sender's group is not looked up
        again: a stats report names every listener and member of the SE,
        and their lookup was half of the report's cost (bench/
        report_bench.py).  Only what is not known to be the sender's is
        read: new objects, gone ones, other groups'."""
        foreign = []
        for kind, ids in _report_objects(method, args).items():
            if kind not in _KINDS:
                # Nothing it may speak about: refused, not skipped.
                foreign.append(f'objects of unknown kind '
                               f'{auth.shown(kind)}')
                continue
            unknown = [i for i in ids
                       if se_group not in self._groups.get((kind, str(i)),
                                                           ())]
            if not unknown:
                continue
            owners = enrolment.groups_of(self.database, kind, unknown,
                                         session)
            if len(self._groups) + len(owners) > self.known_objects:
                self._groups.clear()
            self._groups.update(((kind, obj_id), self._interned(groups))
                                for obj_id, groups in owners.items())
            foreign += [f'{_KINDS[kind]} {i} (group'
                        f'{"s" if len(g) > 1 else ""} '
                        f'{", ".join(sorted(g))})'
                        for i, g in sorted(owners.items())
                        if se_group not in g]
        return foreign

    def _interned(self, groups):
        """One frozenset per combination of groups (a deployment has few)."""
        groups = frozenset(groups)
        return self._group_sets.setdefault(groups, groups)

    def check(self, ctxt, method, args):
        """Raises Refused (logged and counted) unless the message is
        authentic and about the sender's group only.

        One transaction a message (every SE sends two every stats
        interval): the enrolment, the objects' owners and the nonce, which
        is committed even when the objects refuse the message (the same
        message again is then a replay)."""
        se_id = str(args.get('se_id'))
        se_group = str(args.get('se_group'))
        try:
            with self.database.session() as session:
                auth.verify_context(ctxt, method, args,
                                    self._key_for(se_id, se_group, session),
                                    self.window, self.nonces.bound(session))
                foreign = self._foreign(method, args, se_group, session)
            if foreign:
                raise auth.AuthError(
                    f'reports on objects of other groups: '
                    f'{", ".join(foreign[:5])}'
                    f'{" ..." if len(foreign) > 5 else ""}')
        except auth.AuthError as exc:
            reason = str(exc)
        except sa_exc.SQLAlchemyError as exc:
            # Fail-closed: neither the enrolment nor a replay can be ruled
            # out.  The SE retries (get_config) or reports again later.
            reason = (f'controller database unavailable, cannot check '
                      f'enrolment and replay ({type(exc).__name__})')
        else:
            return
        # Logged outside the handler: oslo.log would append the exception.
        total = self.refusals.add(method)
        LOG.warning('auth: refused %s from se_id=%s se_group=%s: %s '
                    '[refusals: %d]', method, auth.shown(se_id),
                    auth.shown(se_group), auth.shown(reason, 500), total)
        raise Refused(f'{method} refused: {reason}')
