/* Packet parsing for the SE program.
 *
 * parse_packet() classifies a frame without any map lookup: not IP or not
 * to a unicast MAC (pass), a well-formed TCP/UDP/SCTP flow (V_STEER, flow
 * filled in), ICMP (V_ICMP), or a packet the SE could not steer (V_DROP
 * with a reason).  Whether the
 * destination is a VIP is decided afterwards (se.h): a V_DROP packet that is
 * not for a VIP is passed untouched, one for a VIP is dropped -- the SE must
 * never hand VIP traffic to its stack, which would route it back to the
 * router and loop. */
#ifndef DSR_PARSE_H
#define DSR_PARSE_H

#include "common.h"
#include "maps.h"

enum verdict {
	V_PASS = 0,  /* not ours */
	V_STEER,     /* TCP/UDP/SCTP to a VIP */
	V_ICMP,      /* ICMP/ICMPv6 to a VIP: handled by icmp.h */
	V_DROP,      /* counted under pkt.drop_stat */
};

struct pkt {
	struct flow_key flow;
	__u32 l3_off;     /* offset of the IP header in the frame */
	__u32 l4_off;     /* offset of the L4 header */
	__u32 l3_len;     /* IP total length (IPv6: 40 + payload length) */
	__u8 tos;         /* DSCP + ECN, copied to the outer header */
	__u8 df;          /* IPv4 DF set (IPv6: always 1, routers never fragment) */
	__u32 drop_stat;
	__u8 dst_known;   /* the IP header was long enough to read addresses */
	__u8 tcp_flags;   /* TCP: byte 13 of the header (FIN, SYN, RST, ACK...) */
} __attribute__((aligned(8))); /* flow is written in 8-byte words */

/* The conn-table lookup reads the flow key with 8-byte loads (the kernel's
 * memcmp).  A load that spans several smaller stores still in the store
 * buffer cannot be forwarded from them and waits for them to drain, on
 * every packet; so the key is written in whole, aligned 8-byte words. */
union key_word {
	__u64 w;
	__u32 h[2];
	__u16 q[4];
	__u8 b[8];
};

_Static_assert(__builtin_offsetof(struct flow_key, dst) % 8 == 0 &&
	       __builtin_offsetof(struct flow_key, sport) % 8 == 0,
	       "flow_key words must be 8-byte aligned");

static __always_inline void key_put(__u32 *at, __u32 lo, __u32 hi)
{
	union key_word k;

	k.h[0] = lo;
	k.h[1] = hi;
	*(__u64 *)at = k.w;
}

#define TCPF_FIN 0x01
#define TCPF_SYN 0x02
#define TCPF_RST 0x04
#define TCPF_ACK 0x10

static __always_inline int is_vip_addr(const __u32 *addr, __u8 family)
{
	struct vip_addr_key k = {};

	k.addr[0] = addr[0];
	k.addr[1] = addr[1];
	k.addr[2] = addr[2];
	k.addr[3] = addr[3];
	k.family = family;
	return bpf_map_lookup_elem(&vip_addrs, &k) != NULL;
}

/* A source no host can send from across a router (RFC 1122 3.2.1.3,
 * RFC 1112 4; RFC 4291 2.5.2, 2.5.3, 2.5.5.2, 2.5.6, 2.7): IPv4 0/8,
 * 127/8, 224/4 and 240/4 (with 255.255.255.255); IPv6 ::, ::1,
 * ::ffff:0:0/96 (IPv4-mapped: never on the wire), fe80::/10 (link-local:
 * never routed) and ff00::/8.
 * Answering one (echo reply, frag-needed) would send to a group, the
 * broadcast or nowhere; steering one hands the member a flow it cannot
 * answer. */
static __always_inline int bogus_source(const struct pkt *p)
{
	__u32 a = bpf_ntohl(p->flow.src[0]);
	__u8 first = a >> 24;

	if (p->flow.family == DSR_FAMILY_V4)
		return first == 0 || first == 127 || first >= 224;
	if (first == 0xff || (a & 0xffc00000) == 0xfe800000)
		return 1;
	if (p->flow.src[0] | p->flow.src[1])
		return 0;
	if (p->flow.src[2] == bpf_htonl(0xffff))
		return 1;
	return !p->flow.src[2] &&
	       (p->flow.src[3] == 0 || p->flow.src[3] == bpf_htonl(1));
}

/* Not a source for a new flow or an answer: one no host can have, or a
 * VIP of this SE (Linux's martian source: a packet from one of the host's
 * own addresses).  A spoofed VIP1:7 -> VIP2:7 datagram would otherwise
 * have two echo-style members answer each other through the SE forever.
 * Costs a map lookup: never on the conn-table hit. */
static __always_inline int unanswerable_source(const struct pkt *p)
{
	return bogus_source(p) || is_vip_addr(p->flow.src, p->flow.family);
}

static __always_inline int drop(struct pkt *p, __u32 stat)
{
	p->drop_stat = stat;
	return V_DROP;
}

/* Ports of TCP/UDP/SCTP: all three start with source and destination port.
 * min_len is the fixed header size that must be present. */
static __always_inline int parse_ports(void *data, void *data_end, struct pkt *p)
{
	void *l4 = data + p->l4_off;
	union key_word key;
	__u32 min_len;

	switch (p->flow.proto) {
	case IPPROTO_TCP:
		min_len = sizeof(struct tcphdr);
		break;
	case IPPROTO_UDP:
		min_len = sizeof(struct udphdr);
		break;
	case IPPROTO_SCTP_:
		min_len = 12;
		break;
	default:
		return drop(p, STAT_DROP_UNSUPPORTED_PROTO);
	}
	/* Within the frame and within the IP packet: Ethernet padding after
	 * a short packet is not a header. */
	if (l4 + min_len > data_end || p->l4_off + min_len > p->l3_off + p->l3_len)
		return drop(p, STAT_DROP_MALFORMED);
	key.q[0] = ((__u16 *)l4)[0];
	key.q[1] = ((__u16 *)l4)[1];
	key.b[4] = p->flow.proto;
	key.b[5] = p->flow.family;
	key.b[6] = 0;
	key.b[7] = 0;
	*(__u64 *)&p->flow.sport = key.w; /* sport, dport, proto, family, pad */
	if (p->flow.proto == IPPROTO_TCP)
		p->tcp_flags = ((__u8 *)l4)[13];
	return V_STEER;
}

static __always_inline int parse_ipv4(void *data, void *data_end, struct pkt *p)
{
	struct iphdr *iph = data + sizeof(struct ethhdr);
	__u16 frag;

	/* Too short to carry a destination: the stack would drop it too. */
	if ((void *)(iph + 1) > data_end)
		return drop(p, STAT_DROP_MALFORMED);
	key_put(&p->flow.dst[0], iph->daddr, 0);
	p->dst_known = 1;
	p->flow.family = DSR_FAMILY_V4;
	key_put(&p->flow.src[0], iph->saddr, 0);
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
	if (p->flow.proto == IPPROTO_ICMP)
		return V_ICMP;
	return parse_ports(data, data_end, p);
}

static __always_inline int parse_ipv6(void *data, void *data_end, struct pkt *p)
{
	struct ipv6hdr *ip6h = data + sizeof(struct ethhdr);
	const __u32 *d = (const __u32 *)&ip6h->daddr;
	const __u32 *s = (const __u32 *)&ip6h->saddr;

	if ((void *)(ip6h + 1) > data_end)
		return drop(p, STAT_DROP_MALFORMED);
	key_put(&p->flow.dst[0], d[0], d[1]);
	key_put(&p->flow.dst[2], d[2], d[3]);
	p->dst_known = 1;
	p->flow.family = DSR_FAMILY_V6;
	key_put(&p->flow.src[0], s[0], s[1]);
	key_put(&p->flow.src[2], s[2], s[3]);
	p->flow.proto = ip6h->nexthdr;
	p->l3_off = sizeof(struct ethhdr);
	p->tos = (ip6h->priority << 4) | (ip6h->flow_lbl[0] >> 4);
	p->df = 1;
	if (ip6h->version != 6)
		return drop(p, STAT_DROP_MALFORMED);
	p->l3_len = bpf_ntohs(ip6h->payload_len);
	/* payload_len 0 is a jumbogram (hop-by-hop option): unsupported. */
	if (p->l3_len == 0)
		return drop(p, STAT_DROP_IPV6_EXT);
	p->l3_len += sizeof(*ip6h);
	if ((void *)ip6h + p->l3_len > data_end)
		return drop(p, STAT_DROP_MALFORMED);
	p->l4_off = p->l3_off + sizeof(*ip6h);

	switch (p->flow.proto) {
	case IPPROTO_ICMPV6:
		return V_ICMP;
	case IPPROTO_FRAGMENT:
		return drop(p, STAT_DROP_FRAGMENT);
	case IPPROTO_HOPOPTS:
	case IPPROTO_ROUTING:
	case IPPROTO_DSTOPTS:
	case IPPROTO_AH:
	case IPPROTO_ESP:
	case 135: /* mobility */
	case 139: /* HIP */
	case 140: /* shim6 */
		return drop(p, STAT_DROP_IPV6_EXT);
	}
	return parse_ports(data, data_end, p);
}

static __always_inline int parse_packet(struct xdp_md *ctx, struct pkt *p)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return V_PASS;
	/* A group destination (broadcast, multicast) is not addressed to this
	 * host at layer 2: never steered nor answered (an answer would come
	 * from the group MAC).  The stack drops it as any router does
	 * (pkt_type != PACKET_HOST is never forwarded). */
	if (eth->h_dest[0] & 1)
		return V_PASS;
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		return parse_ipv4(data, data_end, p);
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return parse_ipv6(data, data_end, p);
	return V_PASS;
}

#endif
