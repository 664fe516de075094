/* The member's decapsulation of one packet (tc), shared by the program
 * member_tc.c attaches and the benchmark wrappers (bench_decap_tc.c): which
 * tunnel packets are taken (decap_addrs, decap_sources), their checks, and
 * the removal of the outer header. */
#ifndef DSR_MEMBER_DECAP_H
#define DSR_MEMBER_DECAP_H

#include "common.h"
#include "decap.h"

#define TC_ACT_OK 0
#define TC_ACT_SHOT 2

/* struct decap_key as the words it is hashed and compared by.  The family
 * word puts the family in byte 16 and zeroes the pad on a little-endian
 * host (the BPF target here, bpfel). */
union decap_key_words {
	struct decap_key key;
	struct {
		__u64 lo, hi;
		__u32 family;
	} w;
};

_Static_assert(sizeof(struct decap_key) == 20, "decap_key is 20 bytes");
_Static_assert(__builtin_offsetof(struct decap_key, family) == 16,
	       "the family word starts with the family");
_Static_assert(sizeof(union decap_key_words) == 24 &&
	       __builtin_offsetof(union decap_key_words, w.family) == 16,
	       "the words cover the key");
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
	       "the family word is little-endian");

/* An address's value in decap_addrs or decap_sources, NULL if absent.  The
 * key is stored in whole words, each once: a load of the hash or the
 * compare that spans several smaller stores still in the store buffer
 * (a 1-byte family, a 4-byte address over a zeroed key) waits for them. */
static __always_inline __u32 *lookup_addr(void *map, const void *addr, __u8 family)
{
	union decap_key_words k;

	if (family == DSR_FAMILY_V4) {
		k.w.lo = *(const __u32 *)addr;
		k.w.hi = 0;
	} else {
		k.w.lo = *(const __u64 *)addr;
		k.w.hi = *(const __u64 *)(addr + 8);
	}
	k.w.family = family;
	return bpf_map_lookup_elem(map, &k);
}

/* The decap_addrs flags of a tunnel address, 0 when it is none. */
static __always_inline __u32 tunnel_addr_flags(const void *addr, __u8 family)
{
	__u32 *flags = lookup_addr(&decap_addrs, addr, family);

	return flags ? *flags | DECAP_F_ACTIVE : 0;
}

/* Restricted tunnel addresses take only the SEs' packets. */
static __always_inline int source_refused(__u32 flags, const void *saddr, __u8 family)
{
	return (flags & DECAP_F_SOURCES) &&
	       !lookup_addr(&decap_sources, saddr, family);
}

static __always_inline int shot(__u32 stat)
{
	decap_count(stat);
	return TC_ACT_SHOT;
}

/* The decapsulation of one packet at tc ingress: TC_ACT_OK (decapsulated,
 * or not a tunnel packet for this member) or TC_ACT_SHOT (counted). */
static __always_inline int decap_skb(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct tunnel t = {};
	__u64 adj_flags;
	__u32 err, flags;
	__u8 proto, ecn;
	void *payload;

	if ((void *)(eth + 1) > data_end)
		return TC_ACT_OK;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = (void *)(eth + 1);

		if ((void *)(iph + 1) > data_end)
			return TC_ACT_OK;
		if (iph->protocol != IPPROTO_IPIP && iph->protocol != IPPROTO_IPV6 &&
		    iph->protocol != IPPROTO_GRE)
			return TC_ACT_OK;
		flags = tunnel_addr_flags(&iph->daddr, DSR_FAMILY_V4);
		if (!flags)
			return TC_ACT_OK;
		if (source_refused(flags, &iph->saddr, DSR_FAMILY_V4))
			return shot(DECAP_STAT_DROP_SOURCE);
		if (iph->ihl < 5 || (iph->frag_off & bpf_htons(IP_MF_ | IP_OFFMASK_)))
			return shot(DECAP_STAT_DROP_MALFORMED);
		t.outer_len = iph->ihl * 4;
		proto = iph->protocol;
		ecn = iph->tos & ECN_MASK;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6h = (void *)(eth + 1);

		if ((void *)(ip6h + 1) > data_end)
			return TC_ACT_OK;
		if (ip6h->nexthdr != IPPROTO_IPIP && ip6h->nexthdr != IPPROTO_IPV6 &&
		    ip6h->nexthdr != IPPROTO_GRE)
			return TC_ACT_OK;
		flags = tunnel_addr_flags(&ip6h->daddr, DSR_FAMILY_V6);
		if (!flags)
			return TC_ACT_OK;
		if (source_refused(flags, &ip6h->saddr, DSR_FAMILY_V6))
			return shot(DECAP_STAT_DROP_SOURCE);
		t.outer_len = sizeof(*ip6h);
		proto = ip6h->nexthdr;
		ecn = (ip6h->flow_lbl[0] >> 4) & ECN_MASK;
	} else {
		return TC_ACT_OK;
	}

	if (t.outer_len > 60)
		return shot(DECAP_STAT_DROP_MALFORMED);
	payload = data + sizeof(*eth) + t.outer_len;
	if (payload > data_end)
		return shot(DECAP_STAT_DROP_MALFORMED);
	err = parse_tunnel_payload(payload, data_end, proto, &t);
	if (err)
		return shot(err);
	/* Before the outer header, and its ECN field, is gone. */
	err = ecn_decapsulate(ecn, data + sizeof(*eth) + t.outer_len, data_end,
			      t.inner_family);
	if (err)
		return shot(err);

	adj_flags = t.inner_family == DSR_FAMILY_V4 ? BPF_F_ADJ_ROOM_DECAP_L3_IPV4
						    : BPF_F_ADJ_ROOM_DECAP_L3_IPV6;
	if (bpf_skb_adjust_room(skb, -(int)t.outer_len, BPF_ADJ_ROOM_MAC, adj_flags))
		return shot(DECAP_STAT_DROP_INTERNAL);

	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return shot(DECAP_STAT_DROP_INTERNAL);
	eth->h_proto = t.inner_family == DSR_FAMILY_V4 ? bpf_htons(ETH_P_IP)
						       : bpf_htons(ETH_P_IPV6);
	if (proto == IPPROTO_GRE)
		decap_count(DECAP_STAT_GRE);
	else
		decap_count(t.inner_family == DSR_FAMILY_V4 ? DECAP_STAT_IPIP
							    : DECAP_STAT_IP6IP);
	return TC_ACT_OK;
}

#endif
