"""How many slots the Maglev ring of a pool takes (ring ABI 3).

One definition for both sides: the SE sizes each listener's ring by it
(amphora_agent.dataplane.maglev re-exports it), and the controller counts
an SE group's ring slots with it before it accepts a change
(dsr_provider.controller.store).  Changing the tiers changes every ring:
that is a new ring ABI.
"""

import functools

# The largest ring (the agents' [dataplane] ring_size default): a prime.
DEFAULT_RING_SIZE = 65537

# Ring sizes by pool size: the smallest prime >= 655 x 2^k for pools of up
# to 2^k members (k >= 2).  655 slots per member keep max/mean within 1 %;
# a power-of-two band means a pool resizes only when it crosses a power of
# two, not on every member added.  Every SE must pick the same size for
# the same pool.
RING_TIERS = (2621, 5261, 10487, 20963, 41927, 83843, 167683, 335381,
              670727, 1341443, 2682887, 5365769, 10731529, 21463051,
              42926113, 85852181)
RING_TIER_MIN_MEMBERS = 4   # pools of up to 4 members share the first tier


@functools.lru_cache(maxsize=1024)   # called per listener and apply
def ring_size_for(members: int, ceiling: int = DEFAULT_RING_SIZE) -> int:
    """Slots of the ring of a pool of `members` members.

    The tier of the pool's size, never more than `ceiling` (the configured
    ring_size, a prime): pools larger than ceiling / 655 all get the
    ceiling, as every pool did before ring ABI 3.
    """
    k, cap = 0, RING_TIER_MIN_MEMBERS
    while cap < members and k + 1 < len(RING_TIERS):
        k, cap = k + 1, cap * 2
    return min(RING_TIERS[k], ceiling)
