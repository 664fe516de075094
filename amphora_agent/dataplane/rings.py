"""Where each listener's Maglev ring lives in the flat rings map.

Rings are sized by their pool (maglev.ring_size_for), so the map is carved
into extents: a listener entry holds its ring's first slot and size.  The
allocator is built from the live listener entries whenever the dataplane
reads its maps (a restarted agent needs nothing remembered) and kept
between applies with them (written.Written).
Best fit (the smallest gap that holds the ring, the lowest such gap on a
tie) keeps large gaps for large rings; freed extents merge with their
neighbours because the gaps are recomputed from what is in use.

When no gap holds a ring although enough slots are free (rings removed and
resized over time leave runs too short), make_room moves a few rings of
listeners the change leaves alone out of one window (the window whose
rings are the fewest slots to move) into gaps outside it.  A moved ring is
the same ring at another offset, copied before its listener entry switches
to it, so no flow notices; its old extent is reused only once no packet
can still be reading it (dataplane.py waits for that).
"""

import bisect
import itertools


class RingSpaceError(Exception):
    """No gap of the rings map holds a ring of the requested size."""


class RingSpace:
    """Free runs of a map of `total` slots, given the extents in use.

    The gaps are kept twice, by offset (to merge a released extent with
    its neighbours) and by (size, offset) (best fit is one bisect), so an
    apply of 10,000 rings does not walk 10,000 gaps per ring.
    """

    def __init__(self, total, used=()):
        self.total = total
        self._by_off = []       # sorted (offset, size) of the gaps
        self._by_size = []      # sorted (size, offset) of the same gaps
        at = 0
        for offset, size in sorted((o, s) for o, s in used if s > 0):
            if offset < at or offset + size > total:
                raise RingSpaceError(
                    f'ring extent {offset}+{size} overlaps another ring or '
                    f'lies outside the rings map ({total} slots)')
            self._add_gap(at, offset - at)
            at = offset + size
        self._add_gap(at, total - at)

    def _add_gap(self, offset, size):
        if size > 0:
            bisect.insort(self._by_off, (offset, size))
            bisect.insort(self._by_size, (size, offset))

    def _drop_gap(self, offset, size):
        del self._by_off[bisect.bisect_left(self._by_off, (offset, size))]
        del self._by_size[bisect.bisect_left(self._by_size, (size, offset))]

    def gaps(self):
        """(offset, size) of every free run of slots, in order."""
        return list(self._by_off)

    def free_slots(self):
        return sum(size for _, size in self._by_off)

    def allocate(self, size):
        """Offset of a new extent of `size` slots: the smallest gap that
        holds it, the lowest of those."""
        i = bisect.bisect_left(self._by_size, (size, -1))
        if i == len(self._by_size):
            largest = self._by_size[-1][0] if self._by_size else 0
            raise RingSpaceError(
                f'no room for a ring of {size} slots: {self.free_slots()} of '
                f'{self.total} ring slots are free, the largest free run '
                f'has {largest}')
        gap, offset = self._by_size[i]
        self._drop_gap(offset, gap)
        self._add_gap(offset + size, gap - size)
        return offset

    def release(self, offset, size):
        """Free an extent in use; it merges with free neighbours."""
        if size <= 0:
            return
        i = bisect.bisect_left(self._by_off, (offset, 0))
        after = self._by_off[i] if i < len(self._by_off) else None
        before = self._by_off[i - 1] if i else None
        if offset < 0 or offset + size > self.total or (
                after and after[0] < offset + size) or (
                before and sum(before) > offset):
            raise RingSpaceError(f'ring extent {offset}+{size} is not in use')
        if after and after[0] == offset + size:
            self._drop_gap(*after)
            size += after[1]
        if before and sum(before) == offset:
            self._drop_gap(*before)
            offset, size = before[0], before[1] + size
        self._add_gap(offset, size)

    def copy(self):
        other = RingSpace.__new__(RingSpace)
        other.total = self.total
        other._by_off = list(self._by_off)
        other._by_size = list(self._by_size)
        return other

    def take(self, offset, size):
        """Mark a given free run of slots in use."""
        i = bisect.bisect_right(self._by_off, (offset, self.total + 1)) - 1
        if i < 0 or size <= 0 or \
                sum(self._by_off[i]) < offset + size:
            raise RingSpaceError(f'ring extent {offset}+{size} is not free')
        gap_off, gap = self._by_off[i]
        self._drop_gap(gap_off, gap)
        self._add_gap(gap_off, offset - gap_off)
        self._add_gap(offset + size, gap_off + gap - offset - size)

    def _windows(self, size, movable):
        """(slots to move, offset, keys) of the runs of `size` slots made
        only of gaps and movable extents that start where a segment (a gap
        or a movable extent) starts or end where one ends: every window
        that moves a given set of extents contains one of these."""
        segments = sorted([(off, n, None) for off, n in self._by_off] + [
            (off, n, key) for key, (off, n) in movable.items() if n > 0])
        found, first = [], 0
        while first < len(segments):
            # One run of touching segments: [first, last).
            last = first + 1
            while last < len(segments) and segments[last][0] == sum(
                    segments[last - 1][:2]):
                last += 1
            run = segments[first:last]
            run_start, run_end = run[0][0], sum(run[-1][:2])
            offsets = [off for off, _, _ in run]
            starts = {off for off in offsets} | {
                off + n - size for off, n, _ in run}
            for start in sorted(starts):
                if start < run_start or start + size > run_end:
                    continue
                cost, keys = 0, []
                j = bisect.bisect_right(offsets, start) - 1
                while j < len(run) and run[j][0] < start + size:
                    if run[j][2] is not None:
                        cost += run[j][1]
                        keys.append(run[j][2])
                    j += 1
                found.append((cost, start, keys))
            first = last
        return sorted(found, key=lambda w: w[:2])

    def make_room(self, size, movable, tries=16):
        """Free a run of `size` slots by moving extents of `movable`
        ({key: (offset, size)}, extents in use whose content may move):
        the window with the fewest slots to move whose extents all fit in
        the gaps outside it, each best fit, the largest first.  Returns
        [(key, old offset, new offset)]; the moved extents and the window
        are free afterwards (the caller copies each ring and switches its
        listener before anything is written there).  RingSpaceError, with
        nothing changed, when no window works."""
        free, tried = self.free_slots(), 0
        for cost, start, keys in self._windows(size, movable):
            end = start + size
            i = max(bisect.bisect_right(self._by_off, (start, 0)) - 1, 0)
            inside = []
            for off, n in itertools.islice(self._by_off, i, None):
                if off >= end:
                    break
                if off + n > start:
                    inside.append((max(off, start),
                                   min(off + n, end) - max(off, start)))
            # The rings to move need as many free slots outside it.
            if cost > free - sum(n for _, n in inside):
                continue
            tried += 1
            if tried > tries:
                break
            trial = self.copy()
            for off, n in inside:
                trial.take(off, n)
            moves = []
            try:
                for key in sorted(keys, key=lambda k: (-movable[k][1],
                                                       movable[k][0])):
                    old, n = movable[key]
                    moves.append((key, old, trial.allocate(n)))
            except RingSpaceError:
                continue
            for key, old, _ in moves:
                trial.release(old, movable[key][1])
            for off, n in inside:
                trial.release(off, n)
            self._by_off, self._by_size = trial._by_off, trial._by_size
            return moves
        largest = self._by_size[-1][0] if self._by_size else 0
        raise RingSpaceError(
            f'no room for a ring of {size} slots: {self.free_slots()} of '
            f'{self.total} ring slots are free, the largest free run has '
            f'{largest}, and moving the rings of unchanged listeners does '
            'not make one')
