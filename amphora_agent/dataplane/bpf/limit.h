/* connection_limit: concurrent flows per listener, counted per SE.
 *
 * What counts as a live flow (the SE sees only the client's half):
 * a connection-table entry of the listener that was not closed by a client
 * FIN or RST and that carried a packet in the current or the previous
 * epoch.  An epoch is 2^epoch_shift ns (se_config; 34.4 s by default), so a
 * flow idle for one to two epochs stops counting -- also when its entry
 * is evicted from the LRU table, which notifies nobody: nothing leaks past
 * two epochs and nothing needs the agent.
 *
 * Bookkeeping: conn.ep holds the epoch a flow was last counted in.  Each
 * CPU keeps, per listener, the count of the last two epochs it touched
 * (struct conn_slots, a per-CPU array: no atomics).  A flow is counted
 * (+1 in the current epoch) when it is admitted and its packet sent (se.h:
 * a packet the SE drops takes no place), moved (+1 now, -1 in its
 * old epoch) on its first packet of a new epoch, and released (-1) at the
 * client's FIN or RST.  An admission sums the slots of the current and the
 * previous epoch over all CPUs (bpf_loop) and refuses a new flow once the
 * sum reaches the limit.  Established flows are never refused.  Only
 * listeners with a limit pay for any of it: their members carry
 * REAL_F_LIMITED, and a conn-table hit of another listener costs one flag
 * test. */
#ifndef DSR_LIMIT_H
#define DSR_LIMIT_H

#include "common.h"
#include "maps.h"
#include "parse.h"
#include "acl.h"
#include "steer.h"
#include "listener.h"

#define DEFAULT_EPOCH_SHIFT 35 /* 2^35 ns = 34.4 s */
#define MAX_CPUS 4096          /* bpf_loop bound; the walk stops at the last CPU */

static __always_inline __u32 conn_epoch(const struct se_config *cfg)
{
	__u32 shift = cfg->epoch_shift ? cfg->epoch_shift : DEFAULT_EPOCH_SHIFT;

	/* +1: epoch 0 would read as CONN_EP_NONE. */
	return (__u32)(bpf_ktime_get_coarse_ns() >> (shift & 63)) + 1;
}

/* Add delta to this CPU's count of listener lid in epoch ep. */
static __always_inline void slot_add(__u32 lid, __u32 ep, __s32 delta)
{
	struct conn_slots *s = bpf_map_lookup_elem(&conn_slots, &lid);
	__u32 i = ep & 1;

	if (!s)
		return;
	if (s->tag[i] == ep) {
		s->count[i] += delta;
	} else if ((__s32)(s->tag[i] - ep) < 0) {
		/* The slot still holds an older epoch: start ep afresh. */
		s->tag[i] = ep;
		s->count[i] = delta;
	}
	/* else ep is older than the slot: it no longer counts anyway. */
}

struct count_ctx {
	__u32 lid;
	__u32 epoch;
	__s64 sum;
};

static long count_cpu(__u32 cpu, void *data)
{
	struct count_ctx *c = data;
	struct conn_slots *s = bpf_map_lookup_percpu_elem(&conn_slots, &c->lid, cpu);

	if (!s)
		return 1; /* past the last CPU */
	if (s->tag[0] == c->epoch || s->tag[0] == c->epoch - 1)
		c->sum += s->count[0];
	if (s->tag[1] == c->epoch || s->tag[1] == c->epoch - 1)
		c->sum += s->count[1];
	return 0;
}

/* Live flows of listener lid in epoch e (this one and the previous). */
static __always_inline __u64 flows_counted(__u32 lid, __u32 e)
{
	struct count_ctx c = {.lid = lid, .epoch = e};

	bpf_loop(MAX_CPUS, count_cpu, &c, 0);
	return c.sum > 0 ? c.sum : 0;
}

struct admission {
	__u32 ep;    /* conn.ep of the flow's entry */
	__u8 count;  /* +1 in epoch ep once the entry exists */
};

/* A packet without a live conn-table entry: allowed_cidrs, then the
 * connection limit.  prev_ep: conn.ep of a stale entry of the same flow
 * (its member went away), else CONN_EP_NONE.  Returns 0 with *a filled, or
 * STAT_DROP_NOT_ALLOWED / STAT_DROP_CONN_LIMIT. */
static __always_inline __u32 admit(const struct pkt *p, const struct listener *l,
				   const struct se_config *cfg, __u32 prev_ep,
				   struct admission *a)
{
	__u8 syn_only = (p->tcp_flags & (TCPF_SYN | TCPF_ACK)) == TCPF_SYN;
	__u32 e;

	a->ep = CONN_EP_NONE;
	a->count = 0;
	if (!acl_allows(p, l))
		return STAT_DROP_NOT_ALLOWED;
	if (!l->conn_limit)
		return 0;
	/* The end of a flow is not a flow; a closed one stays closed unless
	 * a new connection (SYN) reuses its addresses and ports. */
	if ((p->tcp_flags & (TCPF_FIN | TCPF_RST)) ||
	    (prev_ep == CONN_EP_CLOSED && !syn_only)) {
		a->ep = CONN_EP_CLOSED;
		return 0;
	}
	e = conn_epoch(cfg);
	if (prev_ep == e || prev_ep == e - 1) {
		/* Re-steered after its member went away: already counted. */
		a->ep = prev_ep;
		return 0;
	}
	if (flows_counted(l->id, e) >= l->conn_limit)
		return STAT_DROP_CONN_LIMIT;
	a->ep = e;
	a->count = 1;
	return 0;
}

/* A conn-table hit of a flow of a limited listener (REAL_F_LIMITED).
 * Returns 0, or a drop reason for a SYN reusing a closed flow's 5-tuple
 * that is not admitted. */
static __always_inline __u32 conn_track(const struct pkt *p, struct conn *conn,
					const struct se_config *cfg, __u32 lid)
{
	struct admission a;
	struct listener l;
	enum listener_found found;
	__u32 ep = conn->ep, e, err;

	if (p->tcp_flags & (TCPF_FIN | TCPF_RST)) {
		if (ep != CONN_EP_CLOSED) {
			conn->ep = CONN_EP_CLOSED;
			if (ep != CONN_EP_NONE)
				slot_add(lid, ep, -1);
		}
		return 0;
	}
	if (ep == CONN_EP_CLOSED) {
		if ((p->tcp_flags & (TCPF_SYN | TCPF_ACK)) != TCPF_SYN)
			return 0;
		found = find_listener(p, &l);
		if (found == LISTENER_CHANGING)
			return STAT_DROP_INTERNAL;
		if (found == LISTENER_NONE)
			return 0;
		err = admit(p, &l, cfg, CONN_EP_CLOSED, &a);
		if (err)
			return err;
		conn->ep = a.ep;
		if (a.count)
			slot_add(lid, a.ep, 1);
		return 0;
	}
	e = conn_epoch(cfg);
	if (ep == e)
		return 0;
	/* First packet in this epoch (or first since the limit was set). */
	conn->ep = e;
	slot_add(lid, e, 1);
	if (ep != CONN_EP_NONE)
		slot_add(lid, ep, -1);
	return 0;
}

#endif
