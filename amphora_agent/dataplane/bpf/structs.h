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

#define LISTENER_F_ACL 1     /* an allow list (allowed_cidrs) applies */
#define LISTENER_F_ACL_ALT 2 /* its prefixes are under tag (id << 1) | 1 */

struct listener {
	__u32 id;      /* index into listener_stats, conn_slots: 0..max_listeners-1 */
	__u8 hash_alg; /* DSR_HASH_* */
	__u8 encap;    /* DSR_ENCAP_* */
	__u16 flags;   /* LISTENER_F_* */
	__u32 conn_limit; /* concurrent flows admitted by this SE; 0 = no limit */
	__u32 idle_ms;    /* timeout_client_data in ms, 0 = none (the members
			   * carry it in conn-time units: real.idle) */
	__u32 ring_off;   /* first slot of its Maglev ring in the rings map */
	__u32 ring_size;  /* slots of its ring (a prime sized by its pool,
			   * maglev.ring_size_for); 0 = no ring */
	__u32 check;      /* FNV-1a of its key and the fields above:
			   * a reader tells this key's entry from a reused
			   * element's (listener.h, find_listener) */
};

/* allowed_cidrs: LPM trie keys.  The data is the listener's tag, then the
 * source address; prefixlen = 32 + the CIDR's length, so a lookup matches
 * only the prefixes of one listener.  Each listener has two tags
 * ((id << 1) | 0 and | 1): an update writes the new list under the unused
 * tag, flips LISTENER_F_ACL_ALT in one listener update and then deletes the
 * old prefixes, so no packet sees a half-written or empty list. */
struct acl4_key {
	__u32 prefixlen;
	__u32 tag;
	__u32 addr;
};

struct acl6_key {
	__u32 prefixlen;
	__u32 tag;
	__u32 addr[4];
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
#define REAL_F_LIMITED 4 /* its listener has a connection limit: conn-table
			  * hits keep the flow's count (conn.ep) current */

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
	__u32 idle;        /* its listener's idle timeout (timeout_client_data)
			    * in conn-time units, 0 = none: a conn-table entry
			    * idle longer no longer holds the flow's member */
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

/* conn_table_v4's key: an IPv4 flow in 16 bytes (flow_key is 40), so the
 * kernel hashes and compares 4 words instead of 10 on every lookup.  The
 * second word is flow_key's tail as it is (ports, proto, family, pad). */
struct flow_key4 {
	__u32 src;
	__u32 dst;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 family;
	__u8 pad[2];
};

/* conn.atime and real.idle unit: 2^23 ns (8.39 ms).  A u32 of them wraps
 * after 417 days, far beyond Octavia's longest timeout (24 days). */
#define CONN_TIME_SHIFT 23

/* conn.ep: the connection-limit epoch the flow was last counted in. */
#define CONN_EP_NONE 0           /* not counted (no limit when it was made) */
#define CONN_EP_CLOSED 0xffffffff /* the client sent FIN or RST */

struct conn {
	__u32 real;
	__u32 gen;
	__u32 hash;  /* flow hash, reused for the IPv6 outer flow label */
	__u32 atime; /* last packet, in 2^CONN_TIME_SHIFT ns units; stored
		      * only when it changed (at most once per unit), and
		      * only for members with an idle timeout (real.idle) */
	__u32 ep;    /* CONN_EP_* or an epoch (see limit.h) */
	__u32 pad;
};

/* Per-CPU flow counts of one listener in the last two epochs (limit.h):
 * slot i counts the flows of epoch tag[i] seen on this CPU (decrements
 * may make one CPU's count negative; the sum over CPUs is what counts). */
struct conn_slots {
	__u32 tag[2];
	__s32 count[2];
};

#define SE_F_ICMP_ECHO 1 /* answer ICMP echo to VIP addresses */

struct se_config {
	__u32 tunnel_src4;
	__u32 tunnel_src6[4];
	__u32 ring_size; /* the largest ring ([dataplane] ring_size, a prime);
			  * each listener's own size is in struct listener */
	__u32 flags;     /* SE_F_* */
	__u8 ttl;        /* outer TTL / hop limit */
	__u8 epoch_shift; /* connection-limit epoch = 2^epoch_shift ns; 0 =
			   * DEFAULT_EPOCH_SHIFT (limit.h) */
	__u8 pad[2];
	__u32 flood_rate; /* conn-table inserts per second per CPU beyond
			   * which new flows are not remembered (flood.h);
			   * 0 = no limit */
};

/* flood.h: this CPU's current one-second window of conn-table inserts. */
struct flood_window {
	__u64 start;   /* bpf_ktime_get_coarse_ns() the window began */
	__u64 inserts; /* conn-table inserts in it */
};

struct listener_stats {
	__u64 packets;
	__u64 bytes; /* inner L3 bytes */
	__u64 new_flows;
	__u64 conn_hits;
	__u64 conn_misses;
	__u64 drops;          /* every drop below, plus no member, no route, ... */
	__u64 drop_not_allowed; /* source not in allowed_cidrs */
	__u64 drop_conn_limit;  /* new flow over connection_limit */
	__u64 conn_expired;     /* packets of a flow idle past the listener's
				 * timeout_client_data: steered (and admitted)
				 * as a new flow */
	__u64 flood_guarded;    /* packets steered without a conn-table insert
				 * because this CPU was over se_config.flood_rate
				 * (flood.h): every packet of such a flow counts */
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
	STAT_DROP_NOT_ALLOWED,  /* source not in the listener's allowed_cidrs */
	STAT_DROP_CONN_LIMIT,   /* new flow over the listener's connection_limit */
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
	DECAP_STAT_DROP_SOURCE,  /* outer source not in decap_sources */
	DECAP_STAT_MAX,
};

/* decap_addrs values: the tunnel address is decapsulated for (always
 * set), and only for outer sources in decap_sources. */
#define DECAP_F_ACTIVE 1
#define DECAP_F_SOURCES 2

struct decap_key {
	__u32 addr[4];
	__u8 family;
	__u8 pad[3];
};

#endif
