"""How many slots the Maglev ring of a pool takes (ring ABI 3).

One definition for both sides: the SE sizes each listener's ring by it
(amphora_agent.dataplane.maglev re-exports it), and the controller counts
an SE group's ring slots with it before it accepts a change
(dsr_provider.controller.store).  Changing the tiers changes every ring:
that is a new ring ABI.
"""

import functools

# The largest ring (the agents' [dataplane] ring_size default): a prime,
# the tier of pools of up to 128 members.
DEFAULT_RING_SIZE = 128021

# Ring sizes by pool size (ring ABI 4): the smallest prime >= 1000 x 2^k for
# pools of up to 2^k members (k >= 2).  655 slots per member keep max/mean
# within 1 %; 1000 also keep the removal of any one member under 1.15 x M/N
# for every pool of 2 to 128 members (at 655: up to 1.21 at 100 members:
# the 1 % headroom of the fill's caps is 10 slots instead of 6.5, so fewer
# capped members trade slots; docs/benchmarks.md "Maglev").  A power-of-two
# band means a pool resizes only when it crosses a power of two, not on
# every member added.  Every SE must pick the same size for the same pool.
RING_TIERS = (4001, 8009, 16001, 32003, 64007, 128021, 256019, 512009,
              1024021, 2048003, 4096013, 8192003, 16384001, 32768011,
              65536043, 131072003)
RING_TIER_MIN_MEMBERS = 4   # pools of up to 4 members share the first tier


@functools.lru_cache(maxsize=1024)   # called per listener and apply
def ring_size_for(members: int, ceiling: int = DEFAULT_RING_SIZE) -> int:
    """Slots of the ring of a pool of `members` members.

    The tier of the pool's size, never more than `ceiling` (the configured
    ring_size, a prime): pools larger than ceiling / 1000 all get the
    ceiling, as every pool did before ring ABI 3.
    """
    k, cap = 0, RING_TIER_MIN_MEMBERS
    while cap < members and k + 1 < len(RING_TIERS):
        k, cap = k + 1, cap * 2
    return min(RING_TIERS[k], ceiling)
