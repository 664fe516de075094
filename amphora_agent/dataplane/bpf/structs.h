/* Structures shared between the BPF programs and userspace.
 *
 * amphora_agent/dataplane/structs.py mirrors every struct here with ctypes;
 * change both together.  All addresses and ports are in network byte order;
 * an IPv4 address lives in addr[0] with addr[1..3] zero.
 */
#ifndef DSR_STRUCTS_H
#define DSR_STRUCTS_H

#include <linux/types.h>

#define DSR_FAMILY_V4 4
#define DSR_FAMILY_V6 6

#define DSR_HASH_SOURCE_IP_PORT 0
#define DSR_HASH_SOURCE_IP 1

#define DSR_ENCAP_IPIP 0 /* IPIP (4) / IPv6-in-IP (41), by inner family */
#define DSR_ENCAP_GRE 1  /* GRE (47), no key, no checksum */

/* One listener: VIP address + L4 protocol + port. */
struct vip_key {
	__u32 addr[4];
	__u16 port;
	__u8 proto;
	__u8 family;
};

struct listener {
	__u32 id;      /* index into the rings and listener_stats: 0..max_listeners-1 */
	__u8 hash_alg; /* DSR_HASH_* */
	__u8 encap;    /* DSR_ENCAP_* */
	__u16 flags;
};

/* A VIP address (any port): its packets are never passed to the stack. */
struct vip_addr_key {
	__u32 addr[4];
	__u8 family;
	__u8 pad[3];
};

struct vip_addr {
	__u32 listeners; /* number of listeners on the address */
	__u32 flags;
};

#define REAL_F_IN_USE 1
#define REAL_F_BACKUP 2

/* A member of one listener.  Each (listener, member) pair owns a slot so
 * that counters are per member and removal can invalidate its flows. */
struct real {
	__u32 addr[4];
	__u8 family;
	__u8 flags;   /* REAL_F_* */
	__u8 encap;   /* the listener's DSR_ENCAP_*, so a conn-table hit needs
		       * no listener lookup */
	__u8 pad;
	__u32 gen;    /* bumped on removal: conn entries with another gen re-steer */
	__u32 nh;     /* index into nexthops; 0 = not cached, use bpf_fib_lookup */
	__u32 listener_id; /* owner: listener_stats index on a conn-table hit */
	__u32 weight;      /* userspace bookkeeping (the ring carries the weight) */
};

/* Next hop towards a member, resolved by the agent from the neighbour table. */
struct nexthop {
	__u32 ifindex;
	__u16 mtu; /* egress link MTU; the encap overhead is subtracted in BPF */
	__u8 smac[6];
	__u8 dmac[6];
	__u16 pad;
};

struct flow_key {
	__u32 src[4];
	__u32 dst[4];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 family;
	__u8 pad[2];
};

struct conn {
	__u32 real;
	__u32 gen;
	__u32 hash;  /* flow hash, reused for the IPv6 outer flow label */
	__u32 atime; /* creation, in 2^30 ns (~1.07 s) units; not refreshed
		      * on hits: a clock read and a store per packet cost
		      * ~10 ns of the ~100 ns fast path */
};

#define SE_F_ICMP_ECHO 1 /* answer ICMP echo to VIP addresses */

struct se_config {
	__u32 tunnel_src4;
	__u32 tunnel_src6[4];
	__u32 ring_size; /* slots per listener ring (prime) */
	__u32 flags;     /* SE_F_* */
	__u8 ttl;        /* outer TTL / hop limit */
	__u8 pad[3];
};

struct listener_stats {
	__u64 packets;
	__u64 bytes; /* inner L3 bytes */
	__u64 new_flows;
	__u64 conn_hits;
	__u64 conn_misses;
	__u64 drops;
};

struct real_stats {
	__u64 packets;
	__u64 bytes;
	__u64 new_flows;
	__u64 pad;
};

/* Indexes of se_stats (per-CPU u64).  Keep in step with structs.py. */
enum se_stat {
	STAT_PASS = 0,          /* not for a VIP: handed to the stack untouched */
	STAT_STEERED,           /* encapsulated to a member */
	STAT_ICMP_ECHO_REPLY,
	STAT_ICMP_TOO_BIG_SENT, /* frag-needed / packet-too-big sent to a client */
	STAT_ICMP_ERR_STEERED,  /* ICMP error about a VIP flow sent to its member */
	STAT_DROP_MALFORMED,
	STAT_DROP_IP_OPTIONS,
	STAT_DROP_FRAGMENT,
	STAT_DROP_IPV6_EXT,
	STAT_DROP_UNSUPPORTED_PROTO,
	STAT_DROP_NO_LISTENER,
	STAT_DROP_NO_MEMBER,
	STAT_DROP_NO_TUNNEL_SRC,
	STAT_DROP_NO_ROUTE,
	STAT_DROP_TOO_BIG,      /* too big after encap and DF clear: cannot fragment */
	STAT_DROP_ICMP,         /* ICMP to a VIP that is neither echo nor a flow's error */
	STAT_DROP_INTERNAL,     /* a helper failed (adjust_head, ...) */
	STAT_MAX,
};

/* Member-side decap counters (per-CPU u64). */
enum decap_stat {
	DECAP_STAT_IPIP = 0,    /* IPIP / IPv6-outer with inner IPv4 */
	DECAP_STAT_IP6IP,       /* inner IPv6 (proto 41) */
	DECAP_STAT_GRE,
	DECAP_STAT_DROP_MALFORMED,
	DECAP_STAT_DROP_GRE_UNSUPPORTED, /* GRE with checksum/routing/seq, or other payload */
	DECAP_STAT_DROP_INTERNAL,
	DECAP_STAT_MAX,
};

struct decap_key {
	__u32 addr[4];
	__u8 family;
	__u8 pad[3];
};

#endif
