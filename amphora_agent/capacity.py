"""The SE's capacity backstop: what does not fit is rejected alone.

The controller should never send more than an SE can hold, but if it does,
the dataplane must not refuse the whole generation: objects are admitted in
snapshot order and the first that would exceed a limit is rejected with a
reason naming it; later, smaller objects may still fit.  The counts are
those of the dataplane (amphora_agent/desired.py): one dataplane listener
per VIP address and Octavia listener of an enabled load balancer, and one
dataplane member per member and dataplane listener.  Members are counted
whatever their health, so that a member coming back never overflows the
maps.  Each dataplane listener's ring takes the slots its pool's size
calls for (maglev.ring_size_for, the size the dataplane will use) out of
`ring_slots`: a listener whose rings do not fit is rejected alone.
"""

import dataclasses

from amphora_agent.dataplane import maglev
from amphora_agent import snapshot as snapshot_mod


@dataclasses.dataclass(frozen=True)
class Limits:
    max_listeners: int
    max_members: int
    ring_size: int
    conn_table_size: int
    # Slots of the rings map, shared by all rings; 0 = max_listeners x
    # ring_size (every ring can be the largest).
    ring_slots: int = 0
    # allowed_cidrs prefixes per IP family (the acl tries); reported for
    # the controller to refuse up front, enforced by the dataplane (0:
    # unknown).
    max_cidrs: int = 0

    @property
    def total_ring_slots(self):
        return self.ring_slots or self.max_listeners * self.ring_size

    @classmethod
    def of_dataplane(cls, limits):
        """From amphora_agent.dataplane.dataplane.Limits (the live maps)."""
        return cls(max_listeners=limits.max_listeners,
                   max_members=limits.max_reals - 1,
                   ring_size=limits.ring_size,
                   conn_table_size=limits.conn_table_size,
                   ring_slots=limits.total_ring_slots,
                   max_cidrs=limits.max_cidrs)

    def to_dict(self):
        return dataclasses.asdict(self)


def _programmed(lb, listener):
    return lb.admin_state_up and listener.admin_state_up


def _members(listener):
    pool = listener.pool
    if pool is None or not pool.admin_state_up:
        return ()
    return tuple(m for m in pool.members if m.admin_state_up)


def over_limits(snap, limits, se_id):
    """{kind: {id: reason}} of the objects that do not fit."""
    rejected = {}
    listeners = members = slots = 0
    for lb in snap.load_balancers:
        vips = len(lb.vips)
        for listener in lb.listeners:
            if not _programmed(lb, listener):
                continue
            if listeners + vips > limits.max_listeners:
                rejected.setdefault('listeners', {})[listener.id] = (
                    f'listener {listener.id}: {listeners + vips} dataplane '
                    f'listeners (VIP addresses x listeners) exceed '
                    f'max_listeners {limits.max_listeners} of SE {se_id}')
                continue
            pool = listener.pool
            # What desired.py sizes the ring by: the pool's members.
            count = len(pool.members) if pool is not None else 0
            ring = maglev.ring_size_for(count, limits.ring_size) \
                if count else 0
            if slots + vips * ring > limits.total_ring_slots:
                rejected.setdefault('listeners', {})[listener.id] = (
                    f'listener {listener.id}: its rings ({vips} x {ring} '
                    f'slots for a pool of {count} members) exceed '
                    f'ring_slots {limits.total_ring_slots} of SE {se_id} '
                    f'({slots} in use)')
                continue
            slots += vips * ring
            listeners += vips
            for i, member in enumerate(_members(listener)):
                if i >= limits.ring_size:
                    reason = (f'member {member.id}: pool '
                              f'{listener.pool.id} has more members than '
                              f'ring_size {limits.ring_size} of SE {se_id} '
                              'has slots')
                elif members + vips > limits.max_members:
                    reason = (f'member {member.id}: {members + vips} '
                              'dataplane members exceed max_members '
                              f'{limits.max_members} of SE {se_id}')
                else:
                    members += vips
                    continue
                rejected.setdefault('members', {})[member.id] = reason
    return rejected


def enforce(snap, limits, se_id):
    """The snapshot without what does not fit (named in its rejected)."""
    return snapshot_mod.without(snap, over_limits(snap, limits, se_id))
