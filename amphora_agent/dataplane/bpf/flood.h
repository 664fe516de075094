/* New-flow flood guard (Katran's "is_under_flood"): at most
 * se_config.flood_rate conn-table inserts per second per CPU.
 *
 * An insert into the LRU conn table is most of a new flow's cost (~600 of
 * ~900 ns, docs/benchmarks.md) and, once the table is full, evicts
 * another flow's entry: a flood of new flows would both burn the CPU and
 * push established flows out.  Over the rate a new flow is steered by its
 * listener's ring without being remembered -- the same member while the
 * ring is unchanged -- and each of its packets is a miss until one comes
 * in a window below the rate.
 *
 * Every kind of packet is treated alike, SYN or not: any insert can evict
 * an established flow, and the SE sees only the client's half, so a
 * spoofed ACK looks exactly like an established flow that lost its entry.
 * Exempting either would leave the flood a way around the guard.  Exempt
 * are the flows whose correctness needs their entry: a flow that
 * connection_limit admission counted (limit.h releases its count through
 * conn.ep; a client FIN without an entry is not counted, so not exempt:
 * else a spoofed FIN flood to a limited listener would evict established
 * flows; a RST without an entry is never remembered at all, se.h) and a
 * flow whose stale entry is being replaced (a
 * known flow re-steered after its member went away or its idle timeout
 * passed: replacing it adds no entry). */
#ifndef DSR_FLOOD_H
#define DSR_FLOOD_H

#include "common.h"
#include "maps.h"

#define FLOOD_WINDOW_NS 1000000000ULL

/* 1 when this CPU may insert one more flow now; counts the insert.  Per
 * CPU: plain stores, no atomics.  exempt: counted, never refused. */
static __always_inline int flood_allows(const struct se_config *cfg, int exempt)
{
	struct flood_window *w;
	__u32 zero = 0;
	__u64 now;

	if (!cfg->flood_rate)
		return 1;
	w = bpf_map_lookup_elem(&flood_window, &zero);
	if (!w)
		return 1;
	/* The coarse clock: a load, not a clock read (jiffy resolution is
	 * plenty for a one-second window). */
	now = bpf_ktime_get_coarse_ns();
	if (now - w->start >= FLOOD_WINDOW_NS) {
		w->start = now;
		w->inserts = 0;
	}
	if (w->inserts >= cfg->flood_rate && !exempt)
		return 0;
	w->inserts++;
	return 1;
}

#endif
