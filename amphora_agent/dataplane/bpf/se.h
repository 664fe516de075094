/* The service-engine packet logic, se_process(), shared by the SE program
 * (se_xdp.c, a thin SEC("xdp") entry) and the benchmark wrappers
 * (bench_se_xdp.c), so that what is benchmarked is exactly what runs.
 * See se_xdp.c for what the program does. */
#ifndef DSR_SE_H
#define DSR_SE_H

#include "common.h"
#include "maps.h"
#include "parse.h"
#include "steer.h"
#include "listener.h"
#include "encap.h"
#include "icmp.h"
#include "acl.h"
#include "limit.h"

static __always_inline int drop_vip(struct pkt *p, struct listener_stats *ls, __u32 stat)
{
	count(stat);
	if (ls)
		ls->drops++;
	return XDP_DROP;
}

static __always_inline int too_big(struct xdp_md *ctx, struct pkt *p, struct listener_stats *ls,
				   __u32 mtu, __u32 overhead)
{
	__u32 err;

	/* (ICMP errors never come here: se_process drops them when too big.) */
	if (!p->df)
		return drop_vip(p, ls, STAT_DROP_TOO_BIG);
	mtu = mtu > overhead ? mtu - overhead : 0;
	if (p->flow.family == DSR_FAMILY_V4)
		err = send_too_big4(ctx, mtu);
	else
		err = send_too_big6(ctx, mtu);
	if (err)
		return drop_vip(p, ls, err);
	count(STAT_ICMP_TOO_BIG_SENT);
	return XDP_TX;
}

/* A drop by allowed_cidrs or connection_limit: also its own counter. */
static __always_inline int drop_policy(struct pkt *p, struct listener_stats *ls, __u32 stat)
{
	if (ls) {
		if (stat == STAT_DROP_NOT_ALLOWED)
			ls->drop_not_allowed++;
		else if (stat == STAT_DROP_CONN_LIMIT)
			ls->drop_conn_limit++;
	}
	return drop_vip(p, ls, stat);
}

/* A packet whose member is chosen (*c): tunnel source, next hop, MTU,
 * encapsulation, counters.  fresh is a constant at each call site (the
 * compiler builds one copy per value, so the conn-table hit path carries
 * none of the new-flow work): 0 for a conn-table hit, 1 for a new flow of
 * listener l admitted as *adm.  A new flow is remembered (conn-table
 * entry, connection_limit count) only once its packet is encapsulated: a
 * packet the SE drops, or answers with a frag-needed, leaves nothing. */
static __always_inline int steer_to(struct xdp_md *ctx, struct pkt *p, struct choice *c,
				    const struct se_config *cfg, int icmp_err, const int fresh,
				    const struct listener *l, const struct admission *adm)
{
	struct listener_stats *ls;
	struct real_stats *rs;
	struct nexthop nh = {};
	__u32 err, overhead, lid;
	long excess;
	__u8 encap;

	lid = c->real->listener_id;
	encap = c->real->encap;
	ls = bpf_map_lookup_elem(&listener_stats, &lid);
	if (ls) {
		if (fresh)
			ls->conn_misses++;
		else
			ls->conn_hits++;
		ls->conn_expired += c->expired;
	}
	/* Only flows of limited listeners are tracked on a hit. */
	if (!fresh && unlikely(c->real->flags & REAL_F_LIMITED) && c->conn && !icmp_err) {
		err = conn_track(p, c->conn, cfg, lid);
		if (err)
			return drop_policy(p, ls, err);
	}
	if (tunnel_src_missing(cfg, c->real->family))
		return drop_vip(p, ls, STAT_DROP_NO_TUNNEL_SRC);

	overhead = encap_overhead(c->real->family, encap);
	err = resolve_nexthop(ctx, c->real, p->l3_len + overhead, &nh);
	if (err)
		return drop_vip(p, ls, err);
	/* Bytes after the IP packet (Ethernet padding, junk) are not the
	 * packet: trimmed as ip_rcv does, so that what is sent is what the
	 * MTU check and the outer length counted.  encapsulate() and
	 * too_big() read ctx->data / data_end afresh. */
	excess = (void *)(long)ctx->data_end - (void *)(long)ctx->data -
		 (long)(p->l3_off + p->l3_len);
	if (unlikely(excess > 0) && bpf_xdp_adjust_tail(ctx, -(int)excess))
		return drop_vip(p, ls, STAT_DROP_INTERNAL);
	if (p->l3_len + overhead > nh.mtu) {
		if (icmp_err)
			return drop_vip(p, ls, STAT_DROP_TOO_BIG);
		return too_big(ctx, p, ls, nh.mtu, overhead);
	}

	err = encapsulate(ctx, p, c->real, &nh, cfg, encap, c->hash);
	if (err)
		return drop_vip(p, ls, err);

	/* An ICMP error about an unknown flow is not a flow: a spoofed one
	 * must not fill the connection table.  Nor is a TCP RST without an
	 * entry: it ends its flow, the client sends nothing after it, so
	 * there is no member to keep -- and a spoofed RST flood (random
	 * sources) then evicts no established flow's entry and costs a miss
	 * without the insert. */
	if (fresh && !icmp_err && !(p->tcp_flags & TCPF_RST)) {
		/* The guard spares only what needs the entry: a flow admission
		 * counted (not a FIN or RST, never counted) or a stale entry
		 * being replaced (flood.h). */
		flow_remember(p, cfg, c, adm->ep,
			      (l->conn_limit && adm->count) || c->stale);
		if (c->new_flow && adm->count)
			slot_add(l->id, adm->ep, 1);
		if (ls)
			ls->flood_guarded += c->guarded;
	}
	if (ls) {
		ls->packets++;
		ls->bytes += p->l3_len;
		if (fresh)	/* a hit made no entry: nothing to add */
			ls->new_flows += c->new_flow;
	}
	rs = bpf_map_lookup_elem(&real_stats, &c->real_idx);
	if (rs) {
		rs->packets++;
		rs->bytes += p->l3_len;
		if (fresh)
			rs->new_flows += c->new_flow;
	}
	count(icmp_err ? STAT_ICMP_ERR_STEERED : STAT_STEERED);
	if (nh.ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect(nh.ifindex, 0);
}

static __always_inline int se_process(struct xdp_md *ctx)
{
	struct pkt p = {};
	struct listener entry, *l = &entry;
	enum listener_found found = LISTENER_NONE;
	struct se_config *cfg;
	struct choice c = {};
	struct admission adm = {};
	__u32 zero = 0, err;
	int verdict, icmp_err = 0;

	cfg = bpf_map_lookup_elem(&se_config, &zero);
	if (!cfg)
		return XDP_PASS; /* not configured yet: nothing is a VIP */

	verdict = parse_packet(ctx, &p);
	if (verdict == V_PASS) {
		count(STAT_PASS);
		return XDP_PASS;
	}
	/* Fast path: an established flow needs one lookup. */
	if (verdict == V_STEER && conn_lookup(&p, &c, 1))
		goto steer;
	if (verdict == V_DROP && !p.dst_known)
		return drop_vip(&p, NULL, p.drop_stat);
	if (verdict == V_STEER) {
		found = find_listener(&p, l);
		if (found == LISTENER_FOUND)
			goto listener_found;
	}
	/* No listener matched: only a VIP address's packets are ours. */
	if (!is_vip_addr(p.flow.dst, p.flow.family)) {
		count(STAT_PASS);
		return XDP_PASS;
	}
	if (verdict == V_DROP)
		return drop_vip(&p, NULL, p.drop_stat);
	if (verdict == V_STEER) {
		/* A miss can be an update's (listener.h): look once more. */
		if (found == LISTENER_NONE)
			found = find_listener(&p, l);
		if (found == LISTENER_FOUND)
			goto listener_found;
		return drop_vip(&p, NULL, listener_miss(found));
	}

	/* Echo replies and errors must not go to (or be about a packet
	 * from) a source no host can have, nor to one of the SE's VIPs. */
	if (unanswerable_source(&p))
		return drop_vip(&p, NULL, STAT_DROP_MALFORMED);
	verdict = p.flow.family == DSR_FAMILY_V4 ? handle_icmp4(ctx, &p)
						 : handle_icmp6(ctx, &p);
	if (verdict == ICMP_ECHO_REPLIED) {
		count(STAT_ICMP_ECHO_REPLY);
		return XDP_TX;
	}
	if (verdict == ICMP_DROP)
		return drop_vip(&p, NULL, p.drop_stat);
	/* An error about a VIP flow: p now holds that flow; follow it. */
	icmp_err = 1;
	if (conn_lookup(&p, &c, 0))
		goto steer;
	found = find_listener(&p, l);
	if (found == LISTENER_NONE)
		found = find_listener(&p, l);
	if (found != LISTENER_FOUND)
		return drop_vip(&p, NULL, listener_miss(found));
	goto new_flow;

listener_found:
	/* Not on the hit path: no entry is ever made for such a source. */
	if (unanswerable_source(&p))
		return drop_vip(&p, bpf_map_lookup_elem(&listener_stats, &l->id),
				STAT_DROP_MALFORMED);
new_flow:
	/* No live conn-table entry: allowed_cidrs and connection_limit
	 * (ICMP errors create no flow: only the source check). */
	if (icmp_err)
		err = acl_allows(&p, l) ? 0 : STAT_DROP_NOT_ALLOWED;
	else
		err = admit(&p, l, cfg, c.prev_ep, &adm);
	if (err)
		return drop_policy(&p, bpf_map_lookup_elem(&listener_stats, &l->id), err);
	err = ring_pick(&p, l, &c);
	if (err)
		return drop_vip(&p, bpf_map_lookup_elem(&listener_stats, &l->id), err);
	return steer_to(ctx, &p, &c, cfg, icmp_err, 1, l, &adm);
steer:
	return steer_to(ctx, &p, &c, cfg, icmp_err, 0, NULL, NULL);
}

#endif
