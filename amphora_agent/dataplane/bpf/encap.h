/* Next-hop resolution and IP-in-IP / GRE encapsulation.
 *
 * Outer family = the member's family; inner family = the VIP's.  IPv4 outer
 * carries proto 4 (inner IPv4) or 41 (inner IPv6), IPv6 outer next header
 * 4 or 41, GRE is 47 with a bare 4-byte header.  The outer source is the SE's
 * tunnel address of the outer family, DSCP/ECN are copied from the inner
 * header, IPv4 outer sets DF so path-MTU problems surface as ICMP. */
#ifndef DSR_ENCAP_H
#define DSR_ENCAP_H

#include "common.h"
#include "csum.h"
#include "maps.h"
#include "parse.h"

struct gre_base {
	__be16 flags;
	__be16 proto;
};

static __always_inline __u32 encap_overhead(__u8 outer_family, __u8 encap)
{
	__u32 len = outer_family == DSR_FAMILY_V4 ? sizeof(struct iphdr)
						 : sizeof(struct ipv6hdr);

	return encap == DSR_ENCAP_GRE ? len + GRE_HLEN : len;
}

/* The next hop towards the member: the agent's cache, else the FIB.
 * On a FIB answer of FRAG_NEEDED, nh->mtu carries the route MTU.
 * Returns 0 or a STAT_DROP_* reason. */
static __always_inline __u32 resolve_nexthop(struct xdp_md *ctx, const struct real *r,
					     __u32 outer_len, struct nexthop *nh)
{
	struct bpf_fib_lookup fib = {};
	struct nexthop *cached;
	long rc;

	if (r->nh) {
		cached = bpf_map_lookup_elem(&nexthops, &r->nh);
		if (cached && cached->ifindex) {
			*nh = *cached;
			return 0;
		}
	}

	fib.ifindex = ctx->ingress_ifindex;
	if (r->family == DSR_FAMILY_V4) {
		fib.family = AF_INET;
		fib.ipv4_dst = r->addr[0];
	} else {
		fib.family = AF_INET6;
		__builtin_memcpy(fib.ipv6_dst, r->addr, 16);
	}
	fib.tot_len = outer_len;
	rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
	if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED) {
		nh->ifindex = fib.ifindex;
		nh->mtu = fib.mtu_result;
		return 0;
	}
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return STAT_DROP_NO_ROUTE;
	nh->ifindex = fib.ifindex;
	nh->mtu = 0xffff; /* the lookup checked tot_len already */
	__builtin_memcpy(nh->smac, fib.smac, ETH_ALEN);
	__builtin_memcpy(nh->dmac, fib.dmac, ETH_ALEN);
	return 0;
}

/* Prepend the outer headers.  Returns 0 or a STAT_DROP_* reason. */
static __always_inline __u32 encapsulate(struct xdp_md *ctx, const struct pkt *p,
					 const struct real *r, const struct nexthop *nh,
					 const struct se_config *cfg, __u8 encap, __u32 hash)
{
	__u32 ip_len = r->family == DSR_FAMILY_V4 ? sizeof(struct iphdr)
						 : sizeof(struct ipv6hdr);
	__u32 hdr = encap == DSR_ENCAP_GRE ? ip_len + GRE_HLEN : ip_len;
	__u8 inner_proto = p->flow.family == DSR_FAMILY_V4 ? IPPROTO_IPIP : IPPROTO_IPV6;
	__u16 inner_eth = p->flow.family == DSR_FAMILY_V4 ? bpf_htons(ETH_P_IP)
							 : bpf_htons(ETH_P_IPV6);
	__u8 outer_proto = encap == DSR_ENCAP_GRE ? IPPROTO_GRE : inner_proto;
	void *data, *data_end;
	struct ethhdr *eth;
	struct gre_base *gre;

	if (bpf_xdp_adjust_head(ctx, -(int)hdr))
		return STAT_DROP_INTERNAL;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return STAT_DROP_INTERNAL;
	__builtin_memcpy(eth->h_dest, nh->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, nh->smac, ETH_ALEN);

	if (r->family == DSR_FAMILY_V4) {
		struct iphdr *iph = (void *)(eth + 1);

		if ((void *)(iph + 1) + GRE_HLEN > data_end)
			return STAT_DROP_INTERNAL;
		eth->h_proto = bpf_htons(ETH_P_IP);
		iph->version = 4;
		iph->ihl = 5;
		iph->tos = p->tos;
		iph->tot_len = bpf_htons(p->l3_len + hdr);
		iph->id = 0;
		iph->frag_off = bpf_htons(IP_DF_);
		iph->ttl = cfg->ttl;
		iph->protocol = outer_proto;
		iph->saddr = cfg->tunnel_src4;
		iph->daddr = r->addr[0];
		ipv4_set_csum(iph);
		gre = (void *)(iph + 1);
	} else {
		struct ipv6hdr *ip6h = (void *)(eth + 1);
		/* The flow label spreads tunnels over ECMP paths and RSS queues. */
		__u32 label = hash & 0xfffff;

		if ((void *)(ip6h + 1) + GRE_HLEN > data_end)
			return STAT_DROP_INTERNAL;
		eth->h_proto = bpf_htons(ETH_P_IPV6);
		ip6h->version = 6;
		ip6h->priority = p->tos >> 4;
		ip6h->flow_lbl[0] = ((p->tos & 0xf) << 4) | (label >> 16);
		ip6h->flow_lbl[1] = label >> 8;
		ip6h->flow_lbl[2] = label;
		ip6h->payload_len = bpf_htons(p->l3_len + hdr - ip_len);
		ip6h->nexthdr = outer_proto;
		ip6h->hop_limit = cfg->ttl;
		__builtin_memcpy(&ip6h->saddr, cfg->tunnel_src6, 16);
		__builtin_memcpy(&ip6h->daddr, r->addr, 16);
		gre = (void *)(ip6h + 1);
	}
	if (encap == DSR_ENCAP_GRE) {
		gre->flags = 0;
		gre->proto = inner_eth;
	}
	return 0;
}

static __always_inline int tunnel_src_missing(const struct se_config *cfg, __u8 family)
{
	if (family == DSR_FAMILY_V4)
		return !cfg->tunnel_src4;
	return !(cfg->tunnel_src6[0] | cfg->tunnel_src6[1] |
		 cfg->tunnel_src6[2] | cfg->tunnel_src6[3]);
}

#endif
