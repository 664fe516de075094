"""Flap damping of the L7 SEs in the L4 pools (tier 2).

An L7 SE in a crash loop -- its agent or HAProxy dies, systemd starts it
again, it joins ready, dies again -- would otherwise enter and leave the
L4 pools on every cycle.  Each entry and exit is a new generation of every
L4 group serving its L7 group (every L4 SE fetches and applies it), and
while it is in, the L4 SEs hash a share of the new connections to it,
which its next death breaks.

The idea is BGP's route flap damping (RFC 2439): an L7 SE that leaves the
pools without draining first (a death, or ready turned false) earns a
penalty of 1, which halves every `half_life` seconds (60).  At
`suppress_at` (2.5) it is kept out of the pools while it rejoins, until
the penalty has decayed below `reuse_below` (1.5): three deaths within
about half a minute keep it out for about a minute after the last one,
and longer the more it flaps (the penalty is capped at MAX_PENALTY: at
most about 2.4 half-lives).  A loop slower than about one death every 45
s never adds up to it.  A planned stop drains first (the L7 agent says
draining before it leaves): never a flap.  One restart costs nothing.
Deaths while it is kept out count as well.

A suppressed SE is still let in when the group would otherwise have no
other L7 SE serving (not draining) everything in its pools -- one that
left a load balancer or listener ERROR serves less: a flapping SE
serves some connections, none serves none.  One that is in the pools
already (let in so) and becomes suppressed again drains there (weight 0)
instead of leaving them: its established connections stay.

The leader keeps each penalty in the database when it changes (table
l7_flap_penalties, StoreKeep; flush() after the pools are stored); a
newly elected leader goes on from them at its first look, decayed by
the time since on the controllers' wall clocks, and an SE kept out that
is in the pools then drains there, as under one leader.  What the
previous leader saw of its last look (who was ready) is not kept: a
death during the change of leader is not counted (docs/tier2.md)."""

import math
import time

from oslo_log import log as logging

LOG = logging.getLogger(__name__)

MAX_PENALTY = 8.0


class _Record:
    __slots__ = ('penalty', 'at', 'suppressed', 'told')

    def __init__(self, at):
        self.penalty, self.at, self.suppressed = 0.0, at, False
        self.told = False       # its return was logged while kept out

    def decayed(self, now, half_life):
        self.penalty *= math.pow(0.5, (now - self.at) / half_life)
        self.at = now
        return self.penalty


class StoreKeep:
    """Where the leaders keep the penalties: the controller's database."""

    def __init__(self, store):
        self.store = store

    def load(self):
        """[(l7 group, se_id, penalty, at (epoch s), suppressed)]."""
        return self.store.flap_penalties()

    def save(self, rows):
        """[(l7 group, se_id, penalty, at, suppressed)], in one
        transaction; penalty None: forget it."""
        self.store.set_flap_penalties(rows)

    def in_pools(self, l7_group):
        """The SE ids the L4 pools have of l7_group now."""
        return set(self.store.l7_members(l7_group))


class FlapDamping:
    def __init__(self, half_life=60.0, suppress_at=2.5, reuse_below=1.5,
                 clock=time.monotonic, wall=time.time, keep=None):
        """half_life 0: no damping (admit() returns what it is given).
        keep: a StoreKeep (None: the penalties live in this process
        only); wall: the clock the kept times are on."""
        if half_life and not 0 < reuse_below < suppress_at <= MAX_PENALTY:
            raise ValueError(
                f'flap damping: the reuse threshold ({reuse_below}) must be '
                f'above 0 and below the suppress threshold ({suppress_at}), '
                f'which is at most {MAX_PENALTY} (the most a penalty gets)')
        self.half_life = half_life
        self.suppress_at, self.reuse_below = suppress_at, reuse_below
        self._clock, self._wall = clock, wall
        self.keep = keep
        self._loaded = False    # this term read the kept penalties
        # (l7 group, se_id) -> the row to keep (flush), or None: forget.
        self._dirty = {}
        self._records = {}      # (l7 group, se_id) -> _Record
        self._last = {}         # l7 group -> {se_id: draining} last look
        self._admitted = {}     # l7 group -> SE ids its pools got
        self._let_in = set()    # groups whose flapping SEs are let in

    def admit(self, l7_group, members):
        """members: tier2.ready_members' {se_id: member} of one look ->
        those the L4 pools get: without the suppressed L7 SEs that are not
        in them yet; those already in (let in while no other served)
        drain instead (weight 0: their established connections stay).
        All are let in while no other L7 SE serves everything."""
        if not self.half_life:
            return members
        now = self._clock()
        # Until the kept penalties and the pools are read, nothing is
        # counted: a failure raises, and the watcher keeps the group's
        # pools as they are (an unreadable look), as for any database
        # error; the next look reads them again.
        if not self._loaded:
            self._load(now)
        if l7_group not in self._admitted and self.keep is not None:
            # First look of the term: who is in the pools already (a
            # kept-out SE there drains instead of leaving).
            self._admitted[l7_group] = self.keep.in_pools(l7_group)
        for se_id, draining in self._last.get(l7_group, {}).items():
            if not draining and se_id not in members:
                self._flap(l7_group, se_id, now)
        self._last[l7_group] = {se_id: m['draining']
                                for se_id, m in members.items()}
        suppressed = {se_id for se_id in members
                      if self._suppressed(l7_group, se_id, now)}
        self._forget(now)
        result = self._without(l7_group, members, suppressed)
        self._admitted[l7_group] = set(result)
        return result

    def _without(self, l7_group, members, suppressed):
        if not suppressed:
            self._let_in.discard(l7_group)
            return members
        serving = [m for se_id, m in members.items()
                   if se_id not in suppressed and not m['draining']]
        # Another L7 SE serving each load balancer and listener: one that
        # reports nothing left out (what each leaves out is per object).
        if not any(not m.get('unserved') for m in serving):
            if l7_group not in self._let_in:
                self._let_in.add(l7_group)
                LOG.warning('L7 group %s: flapping L7 SE(s) %s let into '
                            'the L4 pools: no other L7 SE serves all its '
                            'load balancers', l7_group,
                            ', '.join(sorted(suppressed)))
            return members
        self._let_in.discard(l7_group)
        admitted = self._admitted.get(l7_group, ())
        result = {}
        for se_id, member in members.items():
            if se_id not in suppressed:
                result[se_id] = member
            elif se_id in admitted:
                result[se_id] = dict(member, draining=True)
            else:
                self._tell(l7_group, se_id)
        return result

    def forget_look(self, l7_group):
        """The group could not be read: who left meanwhile, and whether
        they drained first, is unknown -- no flap is counted for it."""
        self._last.pop(l7_group, None)

    def _load(self, now):
        """The penalties kept by the leaders before this term, each
        decayed from when it was kept (a time ahead of this host's clock:
        from now).  Raises when they cannot be read."""
        if self.keep is not None:
            wall = self._wall()
            went_on = []
            for l7_group, se_id, penalty, at, suppressed in self.keep.load():
                if not (math.isfinite(penalty) and penalty > 0
                        and math.isfinite(at)):
                    continue
                rec = _Record(now - max(wall - at, 0.0))
                rec.penalty = min(penalty, MAX_PENALTY)
                rec.suppressed = bool(suppressed)
                self._records[(l7_group, se_id)] = rec
                if rec.suppressed and rec.decayed(
                        now, self.half_life) >= self.reuse_below:
                    went_on.append(f'{se_id} of L7 group {l7_group}')
            if went_on:
                LOG.info('flap damping: L7 SE(s) %s kept out by a '
                         'previous leader: still kept out until their '
                         'penalty decays', ', '.join(sorted(went_on)))
        self._loaded = True

    def _keep(self, key, rec=None):
        """Keep rec (as of its last decay) for the next leader at the
        next flush(); None: forget it."""
        if self.keep is None:
            return
        if rec is None:
            self._dirty[key] = None
        else:
            at = self._wall() - (self._clock() - rec.at)
            self._dirty[key] = (rec.penalty, at, rec.suppressed)

    def flush(self):
        """Write what changed since the last flush, in one transaction
        (the watcher calls it after storing the pools: the writes never
        delay taking a dead SE out of them).  A failure is logged and
        retried at the next flush."""
        if not self._dirty:
            return
        rows = [(group, se_id) + (value or (None, None, None))
                for (group, se_id), value in self._dirty.items()]
        try:
            self.keep.save(rows)
        except Exception as exc:  # noqa: BLE001 -- the next flush
            LOG.warning('flap damping: %d penalty(ies) could not be kept '
                        '(%s); trying again at the next look', len(rows),
                        exc)
            return
        self._dirty.clear()

    def new_term(self):
        """Not leading (any more): what was seen is another term's -- an
        SE that drained and left meanwhile must not count as a flap at
        the next look.  The next term reads the kept penalties again."""
        self._loaded = False
        self._dirty.clear()     # the next leader keeps its own
        self._records.clear()
        self._last.clear()
        self._admitted.clear()
        self._let_in.clear()

    def suppressed(self, l7_group):
        """The SE ids of l7_group kept out now (for the logs and tests)."""
        return sorted(se_id for (group, se_id), rec in self._records.items()
                      if group == l7_group and rec.suppressed)

    def _tell(self, l7_group, se_id):
        rec = self._records[(l7_group, se_id)]
        if not rec.told:
            rec.told = True
            LOG.warning('L7 SE %s of L7 group %s is back: kept out of the '
                        'L4 pools while it flaps (penalty %.1f; in again '
                        'in about %.0f s if it stays up)', se_id, l7_group,
                        rec.penalty, self._reuse_in(rec.penalty))

    def _flap(self, l7_group, se_id, now):
        rec = self._records.setdefault((l7_group, se_id), _Record(now))
        rec.penalty = min(rec.decayed(now, self.half_life) + 1.0,
                          MAX_PENALTY)
        rec.told = False
        if not rec.suppressed and rec.penalty >= self.suppress_at:
            rec.suppressed = True
            LOG.warning('L7 SE %s of L7 group %s left the L4 pools without '
                        'draining again (flap penalty %.1f): kept out of '
                        'them until it has stayed up for a while (about '
                        '%.0f s from now)', se_id, l7_group, rec.penalty,
                        self._reuse_in(rec.penalty))
        self._keep((l7_group, se_id), rec)

    def _suppressed(self, l7_group, se_id, now):
        rec = self._records.get((l7_group, se_id))
        if rec is None or not rec.suppressed:
            return False
        if rec.decayed(now, self.half_life) < self.reuse_below:
            rec.suppressed = False
            LOG.info('L7 SE %s of L7 group %s: no flap for a while; back '
                     'in the L4 pools', se_id, l7_group)
            self._keep((l7_group, se_id), rec)
            return False
        return True

    def _reuse_in(self, penalty):
        return self.half_life * math.log2(penalty / self.reuse_below)

    def _forget(self, now):
        """Records of SEs gone for good decay too: no longer kept out
        below the reuse threshold, dropped near nothing (bounded
        memory)."""
        for key, rec in list(self._records.items()):
            penalty = rec.decayed(now, self.half_life)
            if rec.suppressed and penalty < self.reuse_below:
                rec.suppressed = False
                self._keep(key, rec)
            if not rec.suppressed and penalty < 0.01:
                del self._records[key]
                self._keep(key)
