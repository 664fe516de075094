/* Benchmark wrappers of the member's decapsulation (bench/decap_bench.py);
 * not loaded by dsr-member.
 *
 * BPF_PROG_TEST_RUN with `repeat` re-runs a program on the same skb, which
 * after one decapsulation holds the inner packet.  So each wrapper first
 * restores the template frame -- the outer headers' room back in front of
 * the inner packet, and the template's first DECAP_RST_HDR bytes written
 * over it -- and then does its job:
 *   bench_decap        decap_skb(): the member's program, its lookups
 *                      (decap_addrs, decap_sources), checks and counters;
 *   bench_decap_floor  the job alone: strip a FIXED outer length with the
 *                      same helper and flags, set the EtherType; no parse,
 *                      no lookup, no counter.
 * Both restore the same way, so bench_decap - bench_decap_floor is what the
 * member's checks cost per packet.  Frames the program does not change (not
 * a tunnel packet, a refused source) are timed on dsr_decap itself, against
 * bench_tc_pass (an empty tc program): what the decap costs the member's
 * other traffic.  The maps are the pinned ones of a Decap (reused by pin). */
#include "member_decap.h"

#define DECAP_RST_HDR 64

struct decap_rst {
	__u32 len;                 /* template frame length */
	__u32 outer_len;           /* bytes the floor strips after Ethernet */
	__u32 inner_v6;            /* the inner packet is IPv6 */
	__u8 hdr[DECAP_RST_HDR];   /* the template's first bytes */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct decap_rst);
	__uint(max_entries, 1);
} decap_rst SEC(".maps");

/* The template frame again; NULL when it cannot be made (then SHOT). */
static __always_inline struct decap_rst *restore(struct __sk_buff *skb)
{
	struct decap_rst *c;
	__u32 zero = 0;

	c = bpf_map_lookup_elem(&decap_rst, &zero);
	if (!c)
		return NULL;
	if (skb->len < c->len &&
	    bpf_skb_adjust_room(skb, (__s32)(c->len - skb->len), BPF_ADJ_ROOM_MAC, 0))
		return NULL;
	if (bpf_skb_store_bytes(skb, 0, c->hdr, DECAP_RST_HDR, 0))
		return NULL;
	return c;
}

SEC("tc")
int bench_decap(struct __sk_buff *skb)
{
	if (!restore(skb))
		return TC_ACT_SHOT;
	return decap_skb(skb);
}

SEC("tc")
int bench_decap_floor(struct __sk_buff *skb)
{
	struct decap_rst *c = restore(skb);
	struct ethhdr *eth;

	if (!c)
		return TC_ACT_SHOT;
	if (bpf_skb_adjust_room(skb, -(__s32)c->outer_len, BPF_ADJ_ROOM_MAC,
				c->inner_v6 ? BPF_F_ADJ_ROOM_DECAP_L3_IPV6
					    : BPF_F_ADJ_ROOM_DECAP_L3_IPV4))
		return TC_ACT_SHOT;
	eth = (void *)(long)skb->data;
	if ((void *)(eth + 1) > (void *)(long)skb->data_end)
		return TC_ACT_SHOT;
	eth->h_proto = c->inner_v6 ? bpf_htons(ETH_P_IPV6) : bpf_htons(ETH_P_IP);
	return TC_ACT_OK;
}

SEC("tc")
int bench_tc_pass(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}

char _license[] SEC("license") = "GPL";
