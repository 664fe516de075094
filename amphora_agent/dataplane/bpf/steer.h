/* Member selection: the connection table first, then the listener's ring.
 *
 * An established flow is resolved by the conn-table lookup alone: the entry
 * names the member slot, and the slot carries its listener id and encap, so
 * the fast path needs no listener lookup.  A member removed since (its gen
 * changed) sends the flow back through the ring. */
#ifndef DSR_STEER_H
#define DSR_STEER_H

#include "common.h"
#include "maps.h"
#include "jhash.h"
#include "parse.h"

struct choice {
	__u32 real_idx;
	struct real *real;
	struct conn *conn; /* the flow's entry on a hit */
	__u32 hash;
	__u32 prev_ep;     /* conn.ep of a stale entry (member gone), else 0 */
	__u8 new_flow; /* a conn-table entry was created */
	__u8 from_conn;
};

static __always_inline struct listener *find_listener(const struct pkt *p)
{
	struct vip_key vk = {};

	__builtin_memcpy(vk.addr, p->flow.dst, 16);
	vk.port = p->flow.dport;
	vk.proto = p->flow.proto;
	vk.family = p->flow.family;
	return bpf_map_lookup_elem(&listeners, &vk);
}

static __always_inline __u32 flow_hash(const struct pkt *p, __u8 hash_alg)
{
	if (hash_alg == DSR_HASH_SOURCE_IP)
		return jhash_5words(p->flow.src, 0);
	return jhash_5words(p->flow.src,
			    ((__u32)p->flow.sport << 16) | p->flow.proto);
}

static __always_inline __u32 coarse_time(void)
{
	return (__u32)(bpf_ktime_get_coarse_ns() >> 30);
}

/* 1 and *c filled when the flow has a live entry. */
static __always_inline int conn_lookup(const struct pkt *p, struct choice *c)
{
	struct conn *conn = bpf_map_lookup_elem(&conn_table, &p->flow);
	struct real *r;

	if (!conn)
		return 0;
	r = bpf_map_lookup_elem(&reals, &conn->real);
	if (!r || r->gen != conn->gen || !(r->flags & REAL_F_IN_USE)) {
		c->prev_ep = conn->ep;
		return 0;
	}
	c->real_idx = conn->real;
	c->real = r;
	c->conn = conn;
	c->hash = conn->hash;
	c->new_flow = 0;
	c->from_conn = 1;
	return 1;
}

/* A new flow: hash into the listener's ring and remember the choice.
 * Returns 0 with *c filled, or a STAT_DROP_* reason. */
static __always_inline __u32 ring_choose(const struct pkt *p, const struct listener *l,
					 const struct se_config *cfg, struct choice *c,
					 int remember, __u32 ep)
{
	struct conn fresh = {};
	__u32 slot;

	if (!cfg->ring_size)
		return STAT_DROP_NO_MEMBER;
	c->hash = flow_hash(p, l->hash_alg);
	slot = l->id * cfg->ring_size + c->hash % cfg->ring_size;
	c->real_idx = ring_slot(slot);
	if (!c->real_idx)
		return STAT_DROP_NO_MEMBER;
	c->real = bpf_map_lookup_elem(&reals, &c->real_idx);
	if (!c->real || !(c->real->flags & REAL_F_IN_USE))
		return STAT_DROP_NO_MEMBER;

	c->new_flow = remember;
	if (!remember)
		return 0;
	fresh.real = c->real_idx;
	fresh.gen = c->real->gen;
	fresh.hash = c->hash;
	fresh.atime = coarse_time();
	fresh.ep = ep;
	bpf_map_update_elem(&conn_table, &p->flow, &fresh, BPF_ANY);
	return 0;
}

#endif
