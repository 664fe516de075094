/* Tunnel header parsing and removal for the member-side program. */
#ifndef DSR_DECAP_H
#define DSR_DECAP_H

#include "common.h"
#include "csum.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct decap_key);
	__type(value, __u32);
	__uint(max_entries, 64);
} decap_addrs SEC(".maps");

/* The SEs' tunnel sources, for addresses with DECAP_F_SOURCES: a tunnel
 * packet is a packet from anyone until its outer source is checked. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct decap_key);
	__type(value, __u32);
	__uint(max_entries, 256);
} decap_sources SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, DECAP_STAT_MAX);
} decap_stats SEC(".maps");

static __always_inline void decap_count(__u32 stat)
{
	__u64 *v = bpf_map_lookup_elem(&decap_stats, &stat);

	if (v)
		*v += 1;
}

struct tunnel {
	__u32 outer_len;   /* bytes to strip after the Ethernet header */
	__u8 inner_family; /* DSR_FAMILY_V4 / V6 */
};

/* After the outer IP header: IPIP/IPv6-in-IP carry the inner packet
 * directly, GRE a 4-byte header first (we send no key, checksum or seq).
 * Returns a DECAP_STAT_* for drops, or 0 with *t filled. */
static __always_inline __u32 parse_tunnel_payload(void *payload, void *data_end, __u8 proto,
						  struct tunnel *t)
{
	__u16 *gre = payload;

	switch (proto) {
	case IPPROTO_IPIP:
		t->inner_family = DSR_FAMILY_V4;
		return 0;
	case IPPROTO_IPV6:
		t->inner_family = DSR_FAMILY_V6;
		return 0;
	case IPPROTO_GRE:
		if ((void *)(gre + 2) > data_end)
			return DECAP_STAT_DROP_MALFORMED;
		if (gre[0] != 0)
			return DECAP_STAT_DROP_GRE_UNSUPPORTED;
		if (gre[1] == bpf_htons(ETH_P_IP))
			t->inner_family = DSR_FAMILY_V4;
		else if (gre[1] == bpf_htons(ETH_P_IPV6))
			t->inner_family = DSR_FAMILY_V6;
		else
			return DECAP_STAT_DROP_GRE_UNSUPPORTED;
		t->outer_len += 4;
		return 0;
	}
	return DECAP_STAT_DROP_MALFORMED;
}

#define ECN_MASK 3
#define ECN_NOT_ECT 0
#define ECN_CE 3

/* RFC 6040 4.2 (what the kernel's ipip/ip6_tunnel/gre do): a CE mark a
 * router put on the outer header is not lost with it.  Outer CE and inner
 * ECT(0)/ECT(1): the inner packet becomes CE; outer CE and inner Not-ECT:
 * the inner transport cannot take the mark, so the packet is dropped
 * (returns a DECAP_STAT_* reason).  The SE copies the inner ECN field to
 * the outer header, so any other combination carries nothing new.
 * inner: the inner IP header. */
static __always_inline __u32 ecn_decapsulate(__u8 outer_ecn, void *inner, void *data_end,
					     __u8 inner_family)
{
	__u16 old;
	__u8 *b = inner;

	if (outer_ecn != ECN_CE)
		return 0;
	if (inner_family == DSR_FAMILY_V4) {
		struct iphdr *iph = inner;

		if ((void *)(iph + 1) > data_end)
			return DECAP_STAT_DROP_MALFORMED;
		if ((iph->tos & ECN_MASK) == ECN_NOT_ECT)
			return DECAP_STAT_DROP_MALFORMED;
		old = *(__u16 *)iph;
		iph->tos |= ECN_CE;
		csum_replace2(&iph->check, old, *(__u16 *)iph);
		return 0;
	}
	/* IPv6: the traffic class's ECN bits are bits 5-4 of byte 1 (no
	 * header checksum). */
	if ((void *)(b + 2) > data_end)
		return DECAP_STAT_DROP_MALFORMED;
	if (((b[1] >> 4) & ECN_MASK) == ECN_NOT_ECT)
		return DECAP_STAT_DROP_MALFORMED;
	b[1] |= ECN_CE << 4;
	return 0;
}

#endif
