/* ICMP for VIPs: echo replies, errors about a VIP flow (steered to the member
 * that owns the flow, so it learns e.g. a smaller path MTU), and the SE's own
 * frag-needed / packet-too-big when encapsulation would exceed the MTU. */
#ifndef DSR_ICMP_H
#define DSR_ICMP_H

#include "common.h"
#include "csum.h"
#include "maps.h"
#include "parse.h"

/* Bytes of the offending datagram quoted in a too-big message: its IP header
 * plus 64 bytes, enough for any L4 header the client needs to match. */
#define TOO_BIG_QUOTE4 (sizeof(struct iphdr) + 64)
#define TOO_BIG_QUOTE6 (sizeof(struct ipv6hdr) + 64)
#define IPV6_MIN_MTU 1280

static __always_inline void swap_macs(struct ethhdr *eth)
{
	__u8 tmp[ETH_ALEN];

	__builtin_memcpy(tmp, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, tmp, ETH_ALEN);
}

enum icmp_verdict {
	ICMP_ECHO_REPLIED = 0, /* XDP_TX the reply */
	ICMP_STEER,            /* p now describes the flow the error is about */
	ICMP_DROP,             /* p->drop_stat says why */
};

/* Error about a flow the VIP sent: the quoted header goes VIP -> client, so
 * the flow key is the reverse of the quoted one. */
static __always_inline int icmp_error_flow(struct pkt *p, __u8 quoted_proto,
					   const __u16 *quoted_ports)
{
	if (quoted_proto != IPPROTO_TCP && quoted_proto != IPPROTO_UDP &&
	    quoted_proto != IPPROTO_SCTP_) {
		p->drop_stat = STAT_DROP_ICMP;
		return ICMP_DROP;
	}
	p->flow.proto = quoted_proto;
	p->flow.sport = quoted_ports[1];
	p->flow.dport = quoted_ports[0];
	return ICMP_STEER;
}

static __always_inline int handle_icmp4(struct xdp_md *ctx, struct pkt *p)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *iph = data + sizeof(*eth);
	/* Option-less header (parse checked): a constant offset keeps the
	 * verifier's packet range. */
	struct icmphdr *icmp = (void *)(iph + 1);
	struct iphdr *quoted;
	__u16 *ports;

	if ((void *)(icmp + 1) > data_end ||
	    p->l3_len < sizeof(*iph) + sizeof(*icmp))
		goto malformed;

	if (icmp->type == ICMP_ECHO && icmp->code == 0) {
		struct se_config *cfg;
		__u32 zero = 0, tmp;

		cfg = bpf_map_lookup_elem(&se_config, &zero);
		if (!cfg || !(cfg->flags & SE_F_ICMP_ECHO)) {
			p->drop_stat = STAT_DROP_ICMP;
			return ICMP_DROP;
		}
		if ((void *)(iph + 1) > data_end)
			goto malformed;
		swap_macs(eth);
		tmp = iph->saddr;
		iph->saddr = iph->daddr;
		iph->daddr = tmp;
		iph->ttl = 64;
		ipv4_set_csum(iph);
		csum_replace2(&icmp->checksum, bpf_htons(ICMP_ECHO << 8),
			      bpf_htons(ICMP_ECHOREPLY << 8));
		icmp->type = ICMP_ECHOREPLY;
		return ICMP_ECHO_REPLIED;
	}
	if (icmp->type != ICMP_DEST_UNREACH && icmp->type != ICMP_TIME_EXCEEDED) {
		p->drop_stat = STAT_DROP_ICMP;
		return ICMP_DROP;
	}
	quoted = (void *)(icmp + 1);
	if ((void *)(quoted + 1) + 4 > data_end ||
	    p->l3_len < sizeof(*iph) + sizeof(*icmp) + sizeof(*quoted) + 4)
		goto malformed;
	/* An option-less IPv4 header whose first L4 bytes are ports: a later
	 * fragment's are payload (a first fragment, MF alone, has them). */
	if (quoted->version != 4 || quoted->ihl != 5 ||
	    (quoted->frag_off & bpf_htons(IP_OFFMASK_)))
		goto malformed;
	/* Only errors about what this VIP sent are ours to steer. */
	if (quoted->saddr != p->flow.dst[0])
		goto malformed;
	ports = (void *)(quoted + 1);
	p->flow.src[0] = quoted->daddr;
	return icmp_error_flow(p, quoted->protocol, ports);
malformed:
	p->drop_stat = STAT_DROP_MALFORMED;
	return ICMP_DROP;
}

static __always_inline int handle_icmp6(struct xdp_md *ctx, struct pkt *p)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct ipv6hdr *ip6h = data + sizeof(*eth);
	struct icmp6hdr *icmp = (void *)(ip6h + 1);
	struct ipv6hdr *quoted;
	__u16 *ports;

	if ((void *)(icmp + 1) > data_end ||
	    p->l3_len < sizeof(*ip6h) + sizeof(*icmp))
		goto malformed;

	if (icmp->icmp6_type == ICMPV6_ECHO_REQUEST && icmp->icmp6_code == 0) {
		struct se_config *cfg;
		struct in6_addr tmp;
		__u32 zero = 0;

		cfg = bpf_map_lookup_elem(&se_config, &zero);
		if (!cfg || !(cfg->flags & SE_F_ICMP_ECHO)) {
			p->drop_stat = STAT_DROP_ICMP;
			return ICMP_DROP;
		}
		if ((void *)(ip6h + 1) > data_end)
			goto malformed;
		swap_macs(eth);
		tmp = ip6h->saddr;
		ip6h->saddr = ip6h->daddr;
		ip6h->daddr = tmp;
		ip6h->hop_limit = 64;
		/* Swapping addresses leaves the pseudo-header sum unchanged. */
		csum_replace2(&icmp->icmp6_cksum, bpf_htons(ICMPV6_ECHO_REQUEST << 8),
			      bpf_htons(ICMPV6_ECHO_REPLY << 8));
		icmp->icmp6_type = ICMPV6_ECHO_REPLY;
		return ICMP_ECHO_REPLIED;
	}
	if (icmp->icmp6_type != ICMPV6_DEST_UNREACH &&
	    icmp->icmp6_type != ICMPV6_PKT_TOOBIG &&
	    icmp->icmp6_type != ICMPV6_TIME_EXCEED &&
	    icmp->icmp6_type != ICMPV6_PARAMPROB) {
		p->drop_stat = STAT_DROP_ICMP;
		return ICMP_DROP;
	}
	quoted = (void *)(icmp + 1);
	if ((void *)(quoted + 1) + 4 > data_end || quoted->version != 6 ||
	    p->l3_len < sizeof(*ip6h) + sizeof(*icmp) + sizeof(*quoted) + 4)
		goto malformed;
	if (quoted->saddr.in6_u.u6_addr32[0] != p->flow.dst[0] ||
	    quoted->saddr.in6_u.u6_addr32[1] != p->flow.dst[1] ||
	    quoted->saddr.in6_u.u6_addr32[2] != p->flow.dst[2] ||
	    quoted->saddr.in6_u.u6_addr32[3] != p->flow.dst[3])
		goto malformed;
	ports = (void *)(quoted + 1);
	__builtin_memcpy(p->flow.src, &quoted->daddr, 16);
	return icmp_error_flow(p, quoted->nexthdr, ports);
malformed:
	p->drop_stat = STAT_DROP_MALFORMED;
	return ICMP_DROP;
}

/* Turn the frame into an ICMP frag-needed for the client, sent from the VIP.
 * Returns 0 (XDP_TX it) or a STAT_DROP_* reason. */
static __always_inline __u32 send_too_big4(struct xdp_md *ctx, __u16 mtu)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data, orig_eth;
	struct iphdr *iph = data + sizeof(*eth);
	struct icmphdr *icmp;
	__u32 saddr, daddr;
	int new_len = sizeof(struct ethhdr) + TOO_BIG_QUOTE4;
	__u64 sum;

	if ((void *)(iph + 1) > data_end)
		return STAT_DROP_MALFORMED;
	if (data + new_len > data_end)
		return STAT_DROP_TOO_BIG;
	orig_eth = *eth;
	saddr = iph->saddr;
	daddr = iph->daddr;
	if (bpf_xdp_adjust_tail(ctx, new_len - (int)(data_end - data)))
		return STAT_DROP_INTERNAL;
	if (bpf_xdp_adjust_head(ctx, -(int)(sizeof(struct iphdr) + sizeof(struct icmphdr))))
		return STAT_DROP_INTERNAL;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	iph = data + sizeof(*eth);
	icmp = (void *)(iph + 1);
	if ((void *)(icmp + 1) + TOO_BIG_QUOTE4 > data_end)
		return STAT_DROP_INTERNAL;
	__builtin_memcpy(eth->h_dest, orig_eth.h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, orig_eth.h_dest, ETH_ALEN);
	eth->h_proto = bpf_htons(ETH_P_IP);
	iph->version = 4;
	iph->ihl = 5;
	iph->tos = 0;
	iph->tot_len = bpf_htons(sizeof(*iph) + sizeof(*icmp) + TOO_BIG_QUOTE4);
	iph->id = 0;
	iph->frag_off = 0;
	iph->ttl = 64;
	iph->protocol = IPPROTO_ICMP;
	iph->saddr = daddr;
	iph->daddr = saddr;
	ipv4_set_csum(iph);
	icmp->type = ICMP_DEST_UNREACH;
	icmp->code = ICMP_FRAG_NEEDED;
	icmp->checksum = 0;
	icmp->un.frag.__unused = 0;
	icmp->un.frag.mtu = bpf_htons(mtu);
	sum = bpf_csum_diff(0, 0, (void *)icmp, sizeof(*icmp) + TOO_BIG_QUOTE4, 0);
	icmp->checksum = csum_fold(sum);
	return 0;
}

struct ipv6_pseudo {
	struct in6_addr saddr;
	struct in6_addr daddr;
	__be32 len;
	__u8 zero[3];
	__u8 nexthdr;
};

static __always_inline __u32 send_too_big6(struct xdp_md *ctx, __u32 mtu)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data, orig_eth;
	struct ipv6hdr *ip6h = data + sizeof(*eth);
	struct ipv6_pseudo ph = {};
	struct icmp6hdr *icmp;
	int new_len = sizeof(struct ethhdr) + TOO_BIG_QUOTE6;
	__u32 icmp_len = sizeof(struct icmp6hdr) + TOO_BIG_QUOTE6;
	__s64 sum;

	if ((void *)(ip6h + 1) > data_end)
		return STAT_DROP_MALFORMED;
	if (data + new_len > data_end)
		return STAT_DROP_TOO_BIG;
	orig_eth = *eth;
	ph.saddr = ip6h->daddr;
	ph.daddr = ip6h->saddr;
	ph.len = bpf_htonl(icmp_len);
	ph.nexthdr = IPPROTO_ICMPV6;
	if (bpf_xdp_adjust_tail(ctx, new_len - (int)(data_end - data)))
		return STAT_DROP_INTERNAL;
	if (bpf_xdp_adjust_head(ctx, -(int)(sizeof(struct ipv6hdr) + sizeof(struct icmp6hdr))))
		return STAT_DROP_INTERNAL;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	ip6h = data + sizeof(*eth);
	icmp = (void *)(ip6h + 1);
	if ((void *)(icmp + 1) + TOO_BIG_QUOTE6 > data_end)
		return STAT_DROP_INTERNAL;
	__builtin_memcpy(eth->h_dest, orig_eth.h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, orig_eth.h_dest, ETH_ALEN);
	eth->h_proto = bpf_htons(ETH_P_IPV6);
	ip6h->version = 6;
	ip6h->priority = 0;
	ip6h->flow_lbl[0] = 0;
	ip6h->flow_lbl[1] = 0;
	ip6h->flow_lbl[2] = 0;
	ip6h->payload_len = bpf_htons(icmp_len);
	ip6h->nexthdr = IPPROTO_ICMPV6;
	ip6h->hop_limit = 64;
	ip6h->saddr = ph.saddr;
	ip6h->daddr = ph.daddr;
	icmp->icmp6_type = ICMPV6_PKT_TOOBIG;
	icmp->icmp6_code = 0;
	icmp->icmp6_cksum = 0;
	icmp->icmp6_mtu = bpf_htonl(mtu < IPV6_MIN_MTU ? IPV6_MIN_MTU : mtu);
	sum = bpf_csum_diff(0, 0, (void *)&ph, sizeof(ph), 0);
	sum = bpf_csum_diff(0, 0, (void *)icmp, icmp_len, sum);
	icmp->icmp6_cksum = csum_fold(sum);
	return 0;
}

#endif
