#!/usr/bin/env python3
"""How often an ACTIVE flow loses its conn-table entry: an LRU table vs a
set-associative flow cache of 1, 2 or 4 ways (docs/benchmarks.md, "Tried:
an array flow cache").  A simulation, not a measurement of the SE.

Model.  A table of CAPACITY entries; N = occupancy x CAPACITY flows are
active at any time.  Every step one active flow, picked uniformly, sends a
packet (so each active flow's gaps between packets are geometric with a
mean of N steps); with probability 1 / PACKETS_PER_FLOW that was its last
packet and a new flow takes its place.  Ended flows keep their entries
(the SE deletes nothing: neither the LRU nor the cache hears of a close)
until they are evicted.  A packet of a flow that already had an entry and
finds none is an *active-flow eviction*: the flow goes back through the
ring (the same member while the ring is unchanged, another one after a
ring change) and, for a limited listener, is counted again.

  lru   exact LRU over the whole table (the kernel's per-CPU LRU lists are
        an approximation of it, each over CAPACITY / CPUs entries)
  fcW   CAPACITY / W sets of W ways, the set chosen by a uniform hash of
        the flow, the least recently used way of the set replaced (what
        bpf/flowcache.h does with conn.atime)

Printed per occupancy: the share of flows that lost their entry at least
once while active, and the share of established flows' packets that
missed.  The first WARMUP x CAPACITY new flows are not counted (the table
fills with ended flows first).

Command: .venv/bin/python tools/flowcache_sim.py  (DSR_SIM_CAPACITY,
DSR_SIM_PACKETS_PER_FLOW, DSR_SIM_FLOWS = counted flows per point).
"""

import collections
import json
import os
import random
import sys

CAPACITY = int(os.environ.get('DSR_SIM_CAPACITY', 8192))
PACKETS_PER_FLOW = float(os.environ.get('DSR_SIM_PACKETS_PER_FLOW', 20))
FLOWS = int(os.environ.get('DSR_SIM_FLOWS', 20000))
WARMUP = 3
OCCUPANCIES = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9)
TABLES = ('lru', 'fc1', 'fc2', 'fc4')


class Lru:
    def __init__(self, capacity):
        self.capacity = capacity
        self.entries = collections.OrderedDict()

    def packet(self, flow, now):
        """True on a hit; a miss inserts (evicting the LRU entry)."""
        if flow in self.entries:
            self.entries.move_to_end(flow)
            return True
        if len(self.entries) >= self.capacity:
            self.entries.popitem(last=False)
        self.entries[flow] = None
        return False


class FlowCache:
    def __init__(self, capacity, ways):
        self.ways = ways
        self.sets = [[] for _ in range(capacity // ways)]
        self.index = {}

    def packet(self, flow, now):
        ways = self.sets[self.index[flow]]
        for way in ways:
            if way[0] == flow:
                way[1] = now
                return True
        if len(ways) < self.ways:
            ways.append([flow, now])
        else:
            min(ways, key=lambda w: w[1])[:] = [flow, now]
        return False


def simulate(table_kind, occupancy, rng):
    active = max(1, int(occupancy * CAPACITY))
    table = (Lru(CAPACITY) if table_kind == 'lru' else
             FlowCache(CAPACITY, int(table_kind[2:])))
    sets = CAPACITY // getattr(table, 'ways', 1)
    next_flow = 0
    seen = {}       # flow -> lost its entry while active (counted flows)
    counting = set()

    def start():
        nonlocal next_flow
        flow = next_flow
        next_flow += 1
        if isinstance(table, FlowCache):
            table.index[flow] = rng.randrange(sets)
        if next_flow > WARMUP * CAPACITY:
            counting.add(flow)
        return flow

    flows = [start() for _ in range(active)]
    started = set()
    est_packets = est_misses = 0
    now = 0
    while len(seen) < FLOWS:
        now += 1
        i = rng.randrange(active)
        flow = flows[i]
        hit = table.packet(flow, now)
        if flow in started:
            if flow in counting:
                est_packets += 1
                if not hit:
                    est_misses += 1
                    seen[flow] = True
        else:
            started.add(flow)
        if rng.random() < 1 / PACKETS_PER_FLOW:
            started.discard(flow)
            if flow in counting:
                seen.setdefault(flow, False)
                counting.discard(flow)
            if isinstance(table, FlowCache):
                # Its way stays (nothing is deleted); only its packets end.
                del table.index[flow]
            flows[i] = start()
    lost = sum(seen.values())
    return {'flows_evicted_while_active': lost / len(seen),
            'established_packet_misses': est_misses / max(1, est_packets)}


def main():
    rng = random.Random(15)
    out = {'bench': 'flowcache_sim', 'capacity': CAPACITY,
           'packets_per_flow_mean': PACKETS_PER_FLOW, 'counted_flows': FLOWS,
           'results': {}}
    print('share of flows that lost their entry while active (share of '
          'established packets that missed); capacity %d, %g packets per '
          'flow on average' % (CAPACITY, PACKETS_PER_FLOW), flush=True)
    print('%-10s' % 'occupancy' + ''.join('%20s' % t for t in TABLES))
    for occ in OCCUPANCIES:
        row = {}
        for kind in TABLES:
            row[kind] = simulate(kind, occ, rng)
        out['results'][str(occ)] = row
        print('%-10s' % occ + ''.join(
            '%11.4f (%.4f)' % (row[t]['flows_evicted_while_active'],
                               row[t]['established_packet_misses'])
            for t in TABLES), flush=True)
    print(json.dumps(out))
    return 0


if __name__ == '__main__':
    sys.exit(main())
