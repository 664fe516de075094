/* Frame restore for BPF_PROG_TEST_RUN(repeat) benchmarks.
 *
 * With repeat, a program re-runs on the SAME, already modified buffer: after
 * one run of an encapsulating program the frame is encapsulated.  restore()
 * first brings the frame back to the template userspace describes in
 * rst_cfg (strip the encap by moving data back to the template length,
 * rewrite the original Ethernet header, optionally vary the flow), so that
 * every run sees the template.  Shared by bench_se_xdp.c (the SE logic) and
 * bench_encap_floor.c (the encapsulation floor); the bench pins one rst_cfg
 * and reuses it in both objects, so both restore the same frame the same way
 * and one restore-only run (bench_rst_pass) is subtracted from both. */
#ifndef DSR_BENCH_RESTORE_H
#define DSR_BENCH_RESTORE_H

#include "common.h"

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

#endif
