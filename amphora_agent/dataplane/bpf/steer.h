/* Member selection: the connection table first, then the listener's ring.
 *
 * An established flow is resolved by the conn-table lookup alone: the entry
 * names the member slot, and the slot carries its listener id, encap and
 * idle timeout, so the fast path needs no listener lookup.  A member
 * removed since (its gen changed), or an entry idle longer than the
 * listener's timeout_client_data (real.idle), sends the flow back through
 * admission and the ring: the same member while the ring is unchanged. */
#ifndef DSR_STEER_H
#define DSR_STEER_H

#include "common.h"
#include "maps.h"
#include "jhash.h"
#include "parse.h"
#include "flood.h"

struct choice {
	__u32 real_idx;
	__u32 gen;         /* ring_pick: the member's generation (in what
			    * was padding: the struct, zeroed per packet,
			    * does not grow) */
	struct real *real;
	struct conn *conn; /* the flow's entry on a hit */
	__u32 hash;
	__u32 prev_ep;     /* conn.ep of a stale entry (member gone or idle
			    * timeout), else 0 */
	__u8 new_flow; /* a conn-table entry was created */
	__u8 expired;  /* the flow's entry had been idle past real.idle */
	__u8 stale;    /* the flow has an entry, but not a live one */
	__u8 guarded;  /* not remembered: over the flood guard's rate */
};

static __always_inline __u32 flow_hash(const struct pkt *p, __u8 hash_alg)
{
	if (hash_alg == DSR_HASH_SOURCE_IP)
		return jhash_5words(p->flow.src, 0);
	return jhash_5words(p->flow.src,
			    ((__u32)p->flow.sport << 16) | p->flow.proto);
}

/* Now in conn-time units (CONN_TIME_SHIFT); the coarse clock costs a
 * load, not a clock read. */
static __always_inline __u32 conn_time(void)
{
	return (__u32)(bpf_ktime_get_coarse_ns() >> CONN_TIME_SHIFT);
}

/* The flow's conn-table key for IPv4: built in registers and stored as two
 * whole 8-byte words (a key written field by field stalls the lookup's
 * 8-byte loads: parse.h). */
union flow_key4_words {
	struct flow_key4 k;
	__u64 w[2];
};

_Static_assert(sizeof(struct flow_key4) == 16 &&
	       __builtin_offsetof(struct flow_key4, sport) == 8 &&
	       sizeof(struct flow_key) - __builtin_offsetof(struct flow_key, sport) == 8,
	       "flow_key4's second word is flow_key's last");

static __always_inline void flow_key4_of(const struct pkt *p,
					 union flow_key4_words *k4)
{
	union key_word addrs;

	addrs.h[0] = p->flow.src[0];
	addrs.h[1] = p->flow.dst[0];
	k4->w[0] = addrs.w;
	k4->w[1] = *(const __u64 *)&p->flow.sport;
}

/* The flow's entry in its family's table, or NULL. */
static __always_inline struct conn *conn_find(const struct pkt *p)
{
	union flow_key4_words k4;

	if (p->flow.family == DSR_FAMILY_V4) {
		flow_key4_of(p, &k4);
		return bpf_map_lookup_elem(&conn_table_v4, &k4.k);
	}
	return bpf_map_lookup_elem(&conn_table, &p->flow);
}

static __always_inline void conn_insert(const struct pkt *p,
					const struct conn *fresh)
{
	union flow_key4_words k4;

	if (p->flow.family == DSR_FAMILY_V4) {
		flow_key4_of(p, &k4);
		bpf_map_update_elem(&conn_table_v4, &k4.k, fresh, BPF_ANY);
		return;
	}
	bpf_map_update_elem(&conn_table, &p->flow, fresh, BPF_ANY);
}

/* 1 and *c filled when the flow has a live entry.  touch: a packet of the
 * flow itself (not an ICMP error about it) -- it refreshes the entry. */
static __always_inline int conn_lookup(const struct pkt *p, struct choice *c, int touch)
{
	struct conn *conn = conn_find(p);
	struct real *r;
	__u32 now;

	if (!conn)
		return 0;
	r = bpf_map_lookup_elem(&reals, &conn->real);
	if (!r || r->gen != conn->gen || !(r->flags & REAL_F_IN_USE)) {
		c->prev_ep = conn->ep;
		c->stale = 1;
		return 0;
	}
	if (r->idle) {
		now = conn_time();
		if (now - conn->atime > r->idle) {
			c->prev_ep = conn->ep;
			c->expired = 1;
			c->stale = 1;
			return 0;
		}
		/* One store per time unit at most, not one per packet. */
		if (touch && conn->atime != now)
			conn->atime = now;
	}
	c->real_idx = conn->real;
	c->real = r;
	c->conn = conn;
	c->hash = conn->hash;
	c->new_flow = 0;
	return 1;
}

/* A new flow: its member by the listener's ring.  Returns 0 with *c
 * filled, or a STAT_DROP_* reason.  Nothing is remembered yet
 * (flow_remember, once the packet is on its way). */
static __always_inline __u32 ring_pick(const struct pkt *p, const struct listener *l,
				       struct choice *c)
{
	__u32 slot;

	if (!l->ring_size)
		return STAT_DROP_NO_MEMBER;
	c->hash = flow_hash(p, l->hash_alg);
	/* Rings are sized by their pool: each listener has its own extent. */
	slot = l->ring_off + c->hash % l->ring_size;
	c->real_idx = ring_slot(slot);
	if (!c->real_idx)
		return STAT_DROP_NO_MEMBER;
	c->real = bpf_map_lookup_elem(&reals, &c->real_idx);
	if (!c->real || !(c->real->flags & REAL_F_IN_USE))
		return STAT_DROP_NO_MEMBER;
	/* The generation of the member the packet goes to, not of whoever
	 * holds the slot by the time the entry is written. */
	c->gen = c->real->gen;
	return 0;
}

/* Remember a new flow's member (ring_pick), unless the flood guard says
 * no (c->guarded).  Called only once the packet is encapsulated: a packet
 * the SE drops, or answers with a frag-needed, leaves no entry.  exempt:
 * see flood.h. */
static __always_inline void flow_remember(const struct pkt *p, const struct se_config *cfg,
					  struct choice *c, __u32 ep, int exempt)
{
	struct conn fresh = {};

	if (!flood_allows(cfg, exempt)) {
		c->guarded = 1;
		return;
	}
	c->new_flow = 1;
	fresh.real = c->real_idx;
	fresh.gen = c->gen;
	fresh.hash = c->hash;
	fresh.atime = conn_time();
	fresh.ep = ep;
	conn_insert(p, &fresh);
}

#endif
