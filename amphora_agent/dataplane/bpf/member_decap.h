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

#define GATE_PASSED -1

/* The first check of a tunnel packet to daddr from saddr: GATE_PASSED (a
 * tunnel address that takes this source: go on), TC_ACT_OK (not a tunnel
 * address: not ours) or TC_ACT_SHOT (a refused source, counted). */
static __always_inline int tunnel_gate(const void *daddr, const void *saddr, __u8 family)
{
	__u32 flags = tunnel_addr_flags(daddr, family);

	if (!flags)
		return TC_ACT_OK;
	if (source_refused(flags, saddr, family))
		return shot(DECAP_STAT_DROP_SOURCE);
	return GATE_PASSED;
}

#define IPV6_EXT_MAX 4

static __always_inline int ipv6_ext_hdr(__u8 nexthdr)
{
	return nexthdr == IPPROTO_HOPOPTS || nexthdr == IPPROTO_ROUTING ||
	       nexthdr == IPPROTO_FRAGMENT || nexthdr == IPPROTO_DSTOPTS;
}

static __always_inline int tunnel_proto(__u8 proto)
{
	return proto == IPPROTO_IPIP || proto == IPPROTO_IPV6 || proto == IPPROTO_GRE;
}

/* An IPv6 packet whose first next header is an extension header: the
 * protocol after at most IPV6_EXT_MAX of them (0 if not found).  Read
 * with bpf_skb_load_bytes: they need not be in the linear data, and only
 * such packets (rare) pay for it. */
static __always_inline __u8 ipv6_upper_proto(struct __sk_buff *skb, __u8 nexthdr)
{
	__u32 off = sizeof(struct ethhdr) + sizeof(struct ipv6hdr);
	__u8 h[2];
	int i;

#pragma unroll
	for (i = 0; i < IPV6_EXT_MAX; i++) {
		if (!ipv6_ext_hdr(nexthdr))
			return nexthdr;
		if (bpf_skb_load_bytes(skb, off, h, sizeof(h)))
			return 0;
		/* The Fragment header is 8 bytes; its second byte is
		 * reserved. */
		off += nexthdr == IPPROTO_FRAGMENT ? 8 : ((__u32)h[1] + 1) * 8;
		nexthdr = h[0];
	}
	return ipv6_ext_hdr(nexthdr) ? 0 : nexthdr;
}

/* A tunnel packet behind IPv6 extension headers: the SEs never send one
 * and it is not decapsulated here; to a tunnel address it is dropped (a
 * refused source as such, like any of its packets).  Anything else,
 * e.g. the member's own traffic with extension headers, is passed. */
static __always_inline int ipv6_ext_verdict(struct __sk_buff *skb, struct ipv6hdr *ip6h)
{
	int gate;

	if (!tunnel_proto(ipv6_upper_proto(skb, ip6h->nexthdr)))
		return TC_ACT_OK;
	gate = tunnel_gate(&ip6h->daddr, &ip6h->saddr, DSR_FAMILY_V6);
	if (gate != GATE_PASSED)
		return gate;
	return shot(DECAP_STAT_DROP_MALFORMED);
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
	__u32 err, pkt_len, inner_len;
	int gate;
	__u8 proto, ecn, *inner;
	void *payload;

	if ((void *)(eth + 1) > data_end)
		return TC_ACT_OK;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = (void *)(eth + 1);

		if ((void *)(iph + 1) > data_end)
			return TC_ACT_OK;
		if (!tunnel_proto(iph->protocol))
			return TC_ACT_OK;
		gate = tunnel_gate(&iph->daddr, &iph->saddr, DSR_FAMILY_V4);
		if (gate != GATE_PASSED)
			return gate;
		/* This runs before ip_rcv: its header checks (but the
		 * checksum) are ours. */
		if (iph->version != 4 || iph->ihl < 5 ||
		    (iph->frag_off & bpf_htons(IP_MF_ | IP_OFFMASK_)))
			return shot(DECAP_STAT_DROP_MALFORMED);
		t.outer_len = iph->ihl * 4;
		pkt_len = bpf_ntohs(iph->tot_len);
		if (pkt_len < t.outer_len || pkt_len > skb->len - sizeof(*eth))
			return shot(DECAP_STAT_DROP_MALFORMED);
		proto = iph->protocol;
		ecn = iph->tos & ECN_MASK;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6h = (void *)(eth + 1);

		if ((void *)(ip6h + 1) > data_end)
			return TC_ACT_OK;
		if (!tunnel_proto(ip6h->nexthdr)) {
			if (unlikely(ipv6_ext_hdr(ip6h->nexthdr)))
				return ipv6_ext_verdict(skb, ip6h);
			return TC_ACT_OK;
		}
		gate = tunnel_gate(&ip6h->daddr, &ip6h->saddr, DSR_FAMILY_V6);
		if (gate != GATE_PASSED)
			return gate;
		t.outer_len = sizeof(*ip6h);
		pkt_len = skb->len - sizeof(*eth);
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
	/* A whole inner header, of the family the tunnel says (else
	 * bpf_skb_adjust_room refuses it, or hands on a truncated packet). */
	inner_len = t.inner_family == DSR_FAMILY_V4 ? sizeof(struct iphdr)
						    : sizeof(struct ipv6hdr);
	if (pkt_len < t.outer_len + inner_len)
		return shot(DECAP_STAT_DROP_MALFORMED);
	inner = data + sizeof(*eth) + t.outer_len;
	if ((void *)(inner + 1) <= data_end &&
	    *inner >> 4 != (t.inner_family == DSR_FAMILY_V4 ? 4 : 6))
		return shot(DECAP_STAT_DROP_MALFORMED);
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
