/* Benchmark programs around the SE logic (se.h).  Not loaded by the agent.
 *
 * BPF_PROG_TEST_RUN with repeat re-runs a program on the SAME, already
 * modified buffer: after one run of the SE the frame is encapsulated.  The
 * bench_rst_* wrappers therefore first RESTORE the frame to the template
 * userspace describes in rst_cfg (strip the encap by moving data back to the
 * template length, rewrite the original Ethernet header, optionally vary the
 * flow), then run either the real se_process() or nothing (XDP_PASS), so the
 * restore cost can be subtracted.
 *
 * The veth wire-rate bench uses bench_gen (a BPF_F_TEST_XDP_LIVE_FRAMES
 * generator), bench_fwd (MAC rewrite + redirect, the no-encap baseline) and
 * bench_sink (count + XDP_DROP at the far end).
 *
 * The SE maps (maps.h) are meant to be REUSED from a configured Dataplane's
 * pin directory (bpf_map__set_pin_path before load), so the SE logic here
 * sees exactly the state dp.apply() wrote. */
#include "se.h"

/* ------------------------------------------------------------ restore */

struct rst_cfg {
	__u32 len;       /* template frame length */
	__u32 vary;      /* 1: vary the flow on every run (see flows) */
	__u32 flows;     /* 0: every run a new flow; N: cycle over N flows */
	__u32 counter;   /* runs so far (vary mode) */
	__u16 sport_off; /* frame offset of the L4 source port */
	__u16 saddr_off; /* frame offset of a 16-bit word of the source address:
			  * set to 0x8000 | (n >> 16), sport to n & 0xffff */
	__u8 eth[ETH_HLEN];
	__u8 pad[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct rst_cfg);
	__uint(max_entries, 1);
} rst_cfg SEC(".maps");

/* Undo what the previous run did; returns 0 or -1 (XDP_ABORTED then). */
static __always_inline int restore(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct rst_cfg *c;
	__u32 zero = 0, len, n;
	__u16 *w;

	c = bpf_map_lookup_elem(&rst_cfg, &zero);
	if (!c)
		return -1;
	len = data_end - data;
	if (len > c->len) {
		/* Encapsulated by the last run: drop the outer headers. */
		if (bpf_xdp_adjust_head(ctx, (int)(len - c->len)))
			return -1;
		data = (void *)(long)ctx->data;
		data_end = (void *)(long)ctx->data_end;
	}
	if (data + ETH_HLEN > data_end)
		return -1;
	__builtin_memcpy(data, c->eth, ETH_HLEN);
	if (c->vary) {
		n = c->counter++;
		if (c->flows)
			n %= c->flows;
		w = data + (c->sport_off & 0xff);
		if ((void *)(w + 1) > data_end)
			return -1;
		*w = bpf_htons(n);
		w = data + (c->saddr_off & 0xff);
		if ((void *)(w + 1) > data_end)
			return -1;
		/* High bit: never the template's own (single, hit) flow. */
		*w = bpf_htons((n >> 16) | 0x8000);
	}
	return 0;
}

/* (a) the floor: the test-run loop plus an empty program. */
SEC("xdp")
int bench_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

/* Restore only: subtracted from bench_rst_se. */
SEC("xdp")
int bench_rst_pass(struct xdp_md *ctx)
{
	if (restore(ctx))
		return XDP_ABORTED;
	return XDP_PASS;
}

/* Restore, then the real SE logic. */
SEC("xdp")
int bench_rst_se(struct xdp_md *ctx)
{
	if (restore(ctx))
		return XDP_ABORTED;
	return se_process(ctx);
}

/* Cost of the head move the restore does (and bench_rst_pass does not):
 * two bpf_xdp_adjust_head calls. */
SEC("xdp")
int bench_adjust_pair(struct xdp_md *ctx)
{
	if (bpf_xdp_adjust_head(ctx, -20))
		return XDP_ABORTED;
	if (bpf_xdp_adjust_head(ctx, 20))
		return XDP_ABORTED;
	return XDP_PASS;
}

/* ------------------------------------------------------- profiling */

/* ---- profiling variants of what se.h does (candidate optimisations) ---- */
#define OPT_NO_VIPADDR 1 /* no vip_addrs lookup before the listener lookup
			  * (a listener miss would look vip_addrs up) */
#define OPT_LAZY_HASH 2  /* flow hash only when needed (miss, v6 outer) */
#define OPT_CONN16 4     /* IPv4 flows in a conn table with a 16-byte key */
#define OPT_NO_INSERT 8  /* measurement only: no conn-table insert on a miss */

static __always_inline int parse_packet_novip(struct xdp_md *ctx, struct pkt *p)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return V_PASS;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = (void *)(eth + 1);
		__u16 frag;

		if ((void *)(iph + 1) > data_end)
			return drop(p, STAT_DROP_MALFORMED);
		p->flow.dst[0] = iph->daddr;
		p->flow.family = DSR_FAMILY_V4;
		p->flow.src[0] = iph->saddr;
		p->flow.proto = iph->protocol;
		p->l3_off = sizeof(struct ethhdr);
		p->tos = iph->tos;
		if (iph->version != 4 || iph->ihl < 5)
			return drop(p, STAT_DROP_MALFORMED);
		if (iph->ihl != 5)
			return drop(p, STAT_DROP_IP_OPTIONS);
		p->l3_len = bpf_ntohs(iph->tot_len);
		if (p->l3_len < sizeof(*iph) || (void *)iph + p->l3_len > data_end)
			return drop(p, STAT_DROP_MALFORMED);
		frag = bpf_ntohs(iph->frag_off);
		if (frag & (IP_MF_ | IP_OFFMASK_))
			return drop(p, STAT_DROP_FRAGMENT);
		p->df = !!(frag & IP_DF_);
		p->l4_off = p->l3_off + sizeof(*iph);
		return parse_ports(data, data_end, p);
	}
	if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6h = (void *)(eth + 1);

		if ((void *)(ip6h + 1) > data_end)
			return drop(p, STAT_DROP_MALFORMED);
		__builtin_memcpy(p->flow.dst, &ip6h->daddr, 16);
		p->flow.family = DSR_FAMILY_V6;
		__builtin_memcpy(p->flow.src, &ip6h->saddr, 16);
		p->flow.proto = ip6h->nexthdr;
		p->l3_off = sizeof(struct ethhdr);
		p->tos = (ip6h->priority << 4) | (ip6h->flow_lbl[0] >> 4);
		p->df = 1;
		if (ip6h->version != 6)
			return drop(p, STAT_DROP_MALFORMED);
		p->l3_len = bpf_ntohs(ip6h->payload_len);
		if (p->l3_len == 0)
			return drop(p, STAT_DROP_IPV6_EXT);
		p->l3_len += sizeof(*ip6h);
		if ((void *)ip6h + p->l3_len > data_end)
			return drop(p, STAT_DROP_MALFORMED);
		p->l4_off = p->l3_off + sizeof(*ip6h);
		return parse_ports(data, data_end, p);
	}
	return V_PASS;
}

struct flow_key4 {
	__u32 src;
	__u32 dst;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct flow_key4);
	__type(value, struct conn);
	__uint(max_entries, DEFAULT_CONN_TABLE);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
} conn4_table SEC(".maps");

static __always_inline __u32 choose_member_opt(struct pkt *p, const struct listener *l,
					       const struct se_config *cfg, struct choice *c,
					       struct listener_stats *ls, const int opts)
{
	struct flow_key4 k4 = {};
	struct conn *conn;
	struct conn fresh;
	__u32 slot, *idx;
	int v4 = (opts & OPT_CONN16) && p->flow.family == DSR_FAMILY_V4;

	if (!(opts & OPT_LAZY_HASH))
		c->hash = flow_hash(p, l);
	if (v4) {
		k4.src = p->flow.src[0];
		k4.dst = p->flow.dst[0];
		k4.sport = p->flow.sport;
		k4.dport = p->flow.dport;
		k4.proto = p->flow.proto;
		conn = bpf_map_lookup_elem(&conn4_table, &k4);
	} else {
		conn = bpf_map_lookup_elem(&conn_table, &p->flow);
	}
	if (conn) {
		c->real = bpf_map_lookup_elem(&reals, &conn->real);
		if (c->real && c->real->gen == conn->gen &&
		    (c->real->flags & REAL_F_IN_USE)) {
			c->real_idx = conn->real;
			c->new_flow = 0;
			/* (the v6 flow label would need the hash: store it in
			 * struct conn to avoid rehashing) */
			if ((opts & OPT_LAZY_HASH) && c->real->family == DSR_FAMILY_V6)
				c->hash = flow_hash(p, l);
			if (ls)
				ls->conn_hits++;
			return 0;
		}
	}
	if (ls)
		ls->conn_misses++;
	if (opts & OPT_LAZY_HASH)
		c->hash = flow_hash(p, l);
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
	if (opts & OPT_NO_INSERT)
		;
	else if (v4)
		bpf_map_update_elem(&conn4_table, &k4, &fresh, BPF_ANY);
	else
		bpf_map_update_elem(&conn_table, &p->flow, &fresh, BPF_ANY);
	c->new_flow = 1;
	return 0;
}



/* PROFILING ONLY: a copy of se_process() (se.h) that stops with XDP_PASS
 * after stage `stage` (a compile-time constant), to split its cost:
 *   1 parse (incl. vip_addrs hash lookup)
 *   2 + listeners hash lookup, listener_stats, se_config
 *   3 + choose_member (flow hash, conn_table LRU lookup, reals)
 *   4 + tunnel source check, next hop (nexthops array, cached path)
 *   5 + encapsulate (adjust_head, outer headers, IPv4 checksum)
 *   6 + listener/real/SE counters, verdict = the whole se_process()
 * Keep in step with se_process() by hand; the reported SE figures never
 * use this copy. */
static __always_inline int se_staged(struct xdp_md *ctx, const int stage, const int opts)
{
	struct pkt p = {};
	struct vip_key vk = {};
	struct listener *l;
	struct listener_stats *ls = NULL;
	struct real_stats *rs;
	struct se_config *cfg;
	struct nexthop nh = {};
	struct choice c = {};
	__u32 zero = 0, err, overhead;
	int verdict;

	if (opts & OPT_NO_VIPADDR)
		verdict = parse_packet_novip(ctx, &p);
	else
		verdict = parse_packet(ctx, &p);
	if (verdict != V_STEER)
		return XDP_ABORTED;
	if (stage == 1)
		return XDP_PASS;
	__builtin_memcpy(vk.addr, p.flow.dst, 16);
	vk.port = p.flow.dport;
	vk.proto = p.flow.proto;
	vk.family = p.flow.family;
	l = bpf_map_lookup_elem(&listeners, &vk);
	if (!l)
		return XDP_ABORTED;
	ls = bpf_map_lookup_elem(&listener_stats, &l->id);
	cfg = bpf_map_lookup_elem(&se_config, &zero);
	if (!cfg)
		return XDP_ABORTED;
	if (stage == 2)
		return XDP_PASS;
	if (opts & (OPT_LAZY_HASH | OPT_CONN16 | OPT_NO_INSERT))
		err = choose_member_opt(&p, l, cfg, &c, ls, opts);
	else
		err = choose_member(&p, l, cfg, &c);
	if (err)
		return XDP_ABORTED;
	if (stage == 3)
		return XDP_PASS;
	if (tunnel_src_missing(cfg, c.real->family))
		return XDP_ABORTED;
	overhead = encap_overhead(c.real->family, l->encap);
	err = resolve_nexthop(ctx, c.real, p.l3_len + overhead, &nh);
	if (err || p.l3_len + overhead > nh.mtu)
		return XDP_ABORTED;
	if (stage == 4)
		return XDP_PASS;
	err = encapsulate(ctx, &p, c.real, &nh, cfg, l->encap, c.hash);
	if (err)
		return XDP_ABORTED;
	if (stage == 5)
		return XDP_PASS;
	if (ls) {
		ls->packets++;
		ls->bytes += p.l3_len;
		ls->new_flows += c.new_flow;
	}
	rs = bpf_map_lookup_elem(&real_stats, &c.real_idx);
	if (rs) {
		rs->packets++;
		rs->bytes += p.l3_len;
		rs->new_flows += c.new_flow;
	}
	count(STAT_STEERED);
	if (nh.ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect(nh.ifindex, 0);
}

#define STAGE_PROG(n)                                   \
	SEC("xdp")                                      \
	int bench_stage##n(struct xdp_md *ctx)          \
	{                                               \
		if (restore(ctx))                       \
			return XDP_ABORTED;             \
		return se_staged(ctx, n, 0);            \
	}
STAGE_PROG(1)
STAGE_PROG(2)
STAGE_PROG(3)
STAGE_PROG(4)
STAGE_PROG(5)
STAGE_PROG(6)

#define OPT_PROG(name, o)                               \
	SEC("xdp")                                      \
	int bench_opt_##name(struct xdp_md *ctx)        \
	{                                               \
		if (restore(ctx))                       \
			return XDP_ABORTED;             \
		return se_staged(ctx, 6, o);            \
	}
OPT_PROG(novip, OPT_NO_VIPADDR)
OPT_PROG(lazyhash, OPT_LAZY_HASH)
OPT_PROG(conn16, OPT_CONN16)
OPT_PROG(all, OPT_NO_VIPADDR | OPT_LAZY_HASH | OPT_CONN16)
OPT_PROG(noinsert, OPT_NO_INSERT)

/* PROFILING ONLY: "conn table first".  A conn-table hit whose member is
 * still valid needs neither the vip_addrs nor the listeners hash lookup if
 * struct real carries what the hit path uses: the listener id (it does,
 * real->listener_id) and the encap (proposed; read from real->pad here,
 * 0 = IPIP, which is what the measured listener uses).  Only a miss looks
 * the listener up (and, if none, vip_addrs to choose drop vs pass).
 * Plus the 16-byte IPv4 conn key and the lazy flow hash. */
static __always_inline int se_connfirst(struct xdp_md *ctx)
{
	struct pkt p = {};
	struct vip_key vk = {};
	struct listener *l;
	struct listener_stats *ls;
	struct real_stats *rs;
	struct se_config *cfg;
	struct nexthop nh = {};
	struct choice c = {};
	struct flow_key4 k4 = {};
	struct conn *conn;
	struct conn fresh;
	__u32 zero = 0, err, overhead, lid, slot, *idx;
	int v4;
	__u8 encap;

	if (parse_packet_novip(ctx, &p) != V_STEER)
		return XDP_ABORTED;
	cfg = bpf_map_lookup_elem(&se_config, &zero);
	if (!cfg)
		return XDP_ABORTED;
	v4 = p.flow.family == DSR_FAMILY_V4;
	if (v4) {
		k4.src = p.flow.src[0];
		k4.dst = p.flow.dst[0];
		k4.sport = p.flow.sport;
		k4.dport = p.flow.dport;
		k4.proto = p.flow.proto;
		conn = bpf_map_lookup_elem(&conn4_table, &k4);
	} else {
		conn = bpf_map_lookup_elem(&conn_table, &p.flow);
	}
	if (conn) {
		c.real = bpf_map_lookup_elem(&reals, &conn->real);
		if (c.real && c.real->gen == conn->gen &&
		    (c.real->flags & REAL_F_IN_USE)) {
			c.real_idx = conn->real;
			lid = c.real->listener_id;
			encap = (__u8)c.real->pad;
			if (c.real->family == DSR_FAMILY_V6)
				c.hash = jhash_5words(p.flow.src,
						      ((__u32)p.flow.sport << 16) | p.flow.proto);
			ls = bpf_map_lookup_elem(&listener_stats, &lid);
			if (ls)
				ls->conn_hits++;
			goto steer;
		}
	}
	__builtin_memcpy(vk.addr, p.flow.dst, 16);
	vk.port = p.flow.dport;
	vk.proto = p.flow.proto;
	vk.family = p.flow.family;
	l = bpf_map_lookup_elem(&listeners, &vk);
	if (!l)
		return XDP_ABORTED; /* (real program: vip_addrs -> drop or pass) */
	lid = l->id;
	encap = l->encap;
	ls = bpf_map_lookup_elem(&listener_stats, &lid);
	if (ls)
		ls->conn_misses++;
	c.hash = flow_hash(&p, l);
	if (!cfg->ring_size)
		return XDP_ABORTED;
	slot = lid * cfg->ring_size + c.hash % cfg->ring_size;
	idx = bpf_map_lookup_elem(&rings, &slot);
	if (!idx || !*idx)
		return XDP_ABORTED;
	c.real_idx = *idx;
	c.real = bpf_map_lookup_elem(&reals, &c.real_idx);
	if (!c.real || !(c.real->flags & REAL_F_IN_USE))
		return XDP_ABORTED;
	fresh.real = c.real_idx;
	fresh.gen = c.real->gen;
	if (v4)
		bpf_map_update_elem(&conn4_table, &k4, &fresh, BPF_ANY);
	else
		bpf_map_update_elem(&conn_table, &p.flow, &fresh, BPF_ANY);
	c.new_flow = 1;
steer:
	if (tunnel_src_missing(cfg, c.real->family))
		return XDP_ABORTED;
	overhead = encap_overhead(c.real->family, encap);
	err = resolve_nexthop(ctx, c.real, p.l3_len + overhead, &nh);
	if (err || p.l3_len + overhead > nh.mtu)
		return XDP_ABORTED;
	err = encapsulate(ctx, &p, c.real, &nh, cfg, encap, c.hash);
	if (err)
		return XDP_ABORTED;
	ls = bpf_map_lookup_elem(&listener_stats, &lid);
	if (ls) {
		ls->packets++;
		ls->bytes += p.l3_len;
		ls->new_flows += c.new_flow;
	}
	rs = bpf_map_lookup_elem(&real_stats, &c.real_idx);
	if (rs) {
		rs->packets++;
		rs->bytes += p.l3_len;
		rs->new_flows += c.new_flow;
	}
	count(STAT_STEERED);
	if (nh.ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect(nh.ifindex, 0);
}

SEC("xdp")
int bench_opt_connfirst(struct xdp_md *ctx)
{
	if (restore(ctx))
		return XDP_ABORTED;
	return se_connfirst(ctx);
}

/* The candidate-optimised copies as attachable programs (no restore), for
 * the wire-rate bench.  PROFILING ONLY: no ICMP / too-big handling. */
SEC("xdp")
int bench_se_opt(struct xdp_md *ctx)
{
	return se_staged(ctx, 6, OPT_NO_VIPADDR | OPT_LAZY_HASH | OPT_CONN16);
}

SEC("xdp")
int bench_se_connfirst(struct xdp_md *ctx)
{
	return se_connfirst(ctx);
}

/* Single operations, after the restore, for the cost table. */
SEC("xdp")
int bench_op_jhash(struct xdp_md *ctx)
{
	struct pkt p = {};
	struct listener l = {};

	if (restore(ctx) || parse_packet(ctx, &p) != V_STEER)
		return XDP_ABORTED;
	return flow_hash(&p, &l) == 0x12345678 ? XDP_DROP : XDP_PASS;
}

/* ------------------------------------------------------- wire rate */

#define GEN_FRAME 64

struct gen_cfg {
	__u8 frame[GEN_FRAME]; /* written over every frame (pages are recycled) */
	__u32 counter;
	__u32 flows;     /* N: source port base_port + (i % N); 0: a new flow
			  * every frame (port i & 0xffff, address word
			  * 0x8000 | i >> 16) */
	__u16 sport_off;
	__u16 base_port;
	__u16 saddr_off;
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct gen_cfg);
	__uint(max_entries, 1);
} gen_cfg SEC(".maps");

/* Live-frames generator: every frame gets the template headers and the
 * next source port, and goes out of the ingress device (XDP_TX). */
SEC("xdp")
int bench_gen(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct gen_cfg *c;
	__u32 zero = 0, n;
	__u16 *w;

	c = bpf_map_lookup_elem(&gen_cfg, &zero);
	if (!c)
		return XDP_ABORTED;
	if (data + GEN_FRAME > data_end)
		return XDP_ABORTED;
	__builtin_memcpy(data, c->frame, GEN_FRAME);
	n = c->counter++;
	w = data + (c->sport_off & 0x3f);
	if ((void *)(w + 1) > data_end)
		return XDP_ABORTED;
	if (c->flows) {
		*w = bpf_htons((__u16)(c->base_port + n % c->flows));
		return XDP_TX;
	}
	*w = bpf_htons((__u16)n);
	w = data + (c->saddr_off & 0x3f);
	if ((void *)(w + 1) > data_end)
		return XDP_ABORTED;
	*w = bpf_htons((n >> 16) | 0x8000);
	return XDP_TX;
}

struct fwd_cfg {
	__u32 ifindex; /* egress device */
	__u8 dmac[ETH_ALEN];
	__u8 smac[ETH_ALEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct fwd_cfg);
	__uint(max_entries, 1);
} fwd_cfg SEC(".maps");

/* Baseline forwarder: rewrite the MACs, send on; no encap, no lookup. */
SEC("xdp")
int bench_fwd(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct fwd_cfg *c;
	__u32 zero = 0;

	c = bpf_map_lookup_elem(&fwd_cfg, &zero);
	if (!c || (void *)(eth + 1) > data_end)
		return XDP_ABORTED;
	__builtin_memcpy(eth->h_dest, c->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, c->smac, ETH_ALEN);
	if (c->ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect(c->ifindex, 0);
}

enum sink_stat {
	SINK_TOTAL = 0,
	SINK_ENCAP,  /* outer IPv4/IPv6 carrying IPIP, IPv6 or GRE */
	SINK_PLAIN,  /* anything else */
	SINK_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, SINK_MAX);
} sink_count SEC(".maps");

static __always_inline void sink_inc(__u32 k)
{
	__u64 *v = bpf_map_lookup_elem(&sink_count, &k);

	if (v)
		*v += 1;
}

static __always_inline int tunnel_proto(__u8 proto)
{
	return proto == IPPROTO_IPIP || proto == IPPROTO_IPV6 || proto == IPPROTO_GRE;
}

/* Far end: count (and classify) every frame, drop it. */
SEC("xdp")
int bench_sink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	int encap = 0;

	sink_inc(SINK_TOTAL);
	if ((void *)(eth + 1) <= data_end) {
		if (eth->h_proto == bpf_htons(ETH_P_IP)) {
			struct iphdr *iph = (void *)(eth + 1);

			if ((void *)(iph + 1) <= data_end)
				encap = tunnel_proto(iph->protocol);
		} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
			struct ipv6hdr *ip6h = (void *)(eth + 1);

			if ((void *)(ip6h + 1) <= data_end)
				encap = tunnel_proto(ip6h->nexthdr);
		}
	}
	sink_inc(encap ? SINK_ENCAP : SINK_PLAIN);
	return XDP_DROP;
}

/* The real entry, for correctness checks on the same maps. */
SEC("xdp")
int bench_se(struct xdp_md *ctx)
{
	return se_process(ctx);
}

char _license[] SEC("license") = "GPL";
