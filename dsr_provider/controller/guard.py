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
    def __init__(self, database, window=60.0):
        self.database = database
        self.window = window
        self.nonces = replay.SharedNonces(database, window)
        self.refusals = auth.Counter()

    def _key_for(self, se_id, se_group):
        def key_for(_kid):
            enrolled = enrolment.lookup(self.database, se_id)
            if enrolled is None:
                raise auth.AuthError(f'SE {se_id} is not enrolled '
                                     f'(or was revoked)')
            group, key = enrolled
            if group != se_group:
                raise auth.AuthError(f'SE {se_id} is enrolled in group '
                                     f'{group}, not {se_group}')
            return key
        return key_for

    def check(self, ctxt, method, args):
        """Raises Refused (logged and counted) unless the message is
        authentic and about the sender's group only."""
        se_id = str(args.get('se_id'))
        se_group = str(args.get('se_group'))
        try:
            auth.verify_context(ctxt, method, args,
                                self._key_for(se_id, se_group),
                                self.window, self.nonces)
            kinds = _report_objects(method, args)
            foreign = []
            for kind, ids in kinds.items():
                if kind not in ('loadbalancers', 'listeners', 'pools',
                                'members', 'healthmonitors'):
                    continue
                owners = enrolment.groups_of(self.database, kind, ids)
                foreign += [f'{kind[:-1]} {i} (group'
                            f'{"s" if len(g) > 1 else ""} '
                            f'{", ".join(sorted(g))})'
                            for i, g in sorted(owners.items())
                            if se_group not in g]
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
                    '[refusals: %d]', method, se_id, se_group, reason, total)
        raise Refused(f'{method} refused: {reason}')
