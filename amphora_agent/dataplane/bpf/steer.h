/* Member selection: connection table first, then the listener's Maglev ring. */
#ifndef DSR_STEER_H
#define DSR_STEER_H

#include "common.h"
#include "maps.h"
#include "jhash.h"
#include "parse.h"

struct choice {
	__u32 real_idx;
	struct real *real;
	__u32 hash;
	__u8 new_flow;
};

static __always_inline __u32 flow_hash(const struct pkt *p, const struct listener *l)
{
	if (l->hash_alg == DSR_HASH_SOURCE_IP)
		return jhash_5words(p->flow.src, 0);
	return jhash_5words(p->flow.src,
			    ((__u32)p->flow.sport << 16) | p->flow.proto);
}

/* Returns 0 and fills *c, or a STAT_DROP_* reason. */
static __always_inline __u32 choose_member(struct pkt *p, const struct listener *l,
					   const struct se_config *cfg, struct choice *c)
{
	struct listener_stats *ls;
	struct conn *conn;
	struct conn fresh;
	__u32 slot, *idx;

	c->hash = flow_hash(p, l);
	ls = bpf_map_lookup_elem(&listener_stats, &l->id);

	conn = bpf_map_lookup_elem(&conn_table, &p->flow);
	if (conn) {
		c->real = bpf_map_lookup_elem(&reals, &conn->real);
		/* A removed member bumped its gen: the flow is re-steered. */
		if (c->real && c->real->gen == conn->gen &&
		    (c->real->flags & REAL_F_IN_USE)) {
			c->real_idx = conn->real;
			c->new_flow = 0;
			if (ls)
				ls->conn_hits++;
			return 0;
		}
	}
	if (ls)
		ls->conn_misses++;

	if (!cfg->ring_size)
		return STAT_DROP_NO_MEMBER;
	slot = l->id * cfg->ring_size + c->hash % cfg->ring_size;
	idx = bpf_map_lookup_elem(&rings, &slot);
	if (!idx || !*idx)
		return STAT_DROP_NO_MEMBER;
	c->real_idx = *idx;
	c->real = bpf_map_lookup_elem(&reals, &c->real_idx);
	if (!c->real || !(c->real->flags & REAL_F_IN_USE))
		return STAT_DROP_NO_MEMBER;

	fresh.real = c->real_idx;
	fresh.gen = c->real->gen;
	bpf_map_update_elem(&conn_table, &p->flow, &fresh, BPF_ANY);
	c->new_flow = 1;
	return 0;
}

#endif
