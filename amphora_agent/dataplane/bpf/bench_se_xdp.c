/* Benchmark programs around the SE logic (se.h).  Not loaded by the agent.
 *
 * BPF_PROG_TEST_RUN with repeat re-runs a program on the SAME, already
 * modified buffer: after one run of the SE the frame is encapsulated.  The
 * bench_rst_* wrappers therefore first RESTORE the frame (bench_restore.h),
 * then run either the real se_process() or nothing (XDP_PASS), so the
 * restore cost can be subtracted.  The encapsulation floor the SE is judged
 * against is bench_encap_floor.c.
 *
 * The veth wire-rate bench uses bench_gen (a BPF_F_TEST_XDP_LIVE_FRAMES
 * generator), bench_fwd (MAC rewrite + redirect, the no-encap baseline) and
 * bench_sink (count + XDP_DROP at the far end).
 *
 * The SE maps (maps.h) are meant to be REUSED from a configured Dataplane's
 * pin directory (bpf_map__set_pin_path before load), so the SE logic here
 * sees exactly the state dp.apply() wrote. */
#include "se.h"
#include "bench_restore.h"

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
