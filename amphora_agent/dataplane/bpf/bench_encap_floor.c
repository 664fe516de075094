/* The encapsulation floor: what any L3 DSR load balancer must do per packet,
 * and nothing else.  Not loaded by the agent.
 *
 * Each bench_floor_* program restores the frame (bench_restore.h, the same
 * restore the SE wrappers use), parses it with the SE's own parse_packet()
 * (no map lookup), prepends one FIXED encapsulation with the SE's own
 * encapsulate() towards one FIXED member through one FIXED next hop, and
 * returns XDP_TX.  No connection table, no listener, no ring, no member or
 * next-hop lookup, no counters, no MTU check.  The member, next hop and
 * tunnel sources come from the global `fixed` (.bss, written by the bench
 * before the runs): a global is a direct memory access, not a map lookup.
 *
 * bench/dataplane_bench.py judges the SE's conn-table hit against this
 * floor (same frame, same restore, same run): SE hit / floor is what the
 * SE's lookups and bookkeeping cost on top of the job itself.
 *
 * maps.h is included through parse.h / encap.h; the bench reuses the
 * configured Dataplane's pinned maps for them (nothing is allocated), and
 * the pinned rst_cfg of bench_se_xdp.o. */
#include "common.h"
#include "maps.h"
#include "parse.h"
#include "encap.h"
#include "bench_restore.h"

/* Written by userspace through the object's .bss map.  The IPv6 outer flow
 * label of the floor is the fixed `hash` (the SE takes the flow's). */
struct floor_cfg {
	struct real real4;   /* IPv4 member: addr[0], family 4 */
	struct real real6;   /* IPv6 member */
	struct nexthop nh4;  /* next hop towards real4 */
	struct nexthop nh6;
	struct se_config cfg; /* tunnel sources, outer TTL */
	__u32 hash;
};

struct floor_cfg fixed = {};

static __always_inline int floor_run(struct xdp_md *ctx, int outer_v6, __u8 encap)
{
	struct pkt p = {};

	if (restore(ctx))
		return XDP_ABORTED;
	if (parse_packet(ctx, &p) != V_STEER)
		return XDP_ABORTED;
	if (encapsulate(ctx, &p, outer_v6 ? &fixed.real6 : &fixed.real4,
			outer_v6 ? &fixed.nh6 : &fixed.nh4, &fixed.cfg, encap,
			fixed.hash))
		return XDP_ABORTED;
	return XDP_TX;
}

/* One program per encapsulation, the encap a compile-time constant. */
#define FLOOR_PROG(name, outer_v6, encap)			\
	SEC("xdp")						\
	int name(struct xdp_md *ctx)				\
	{							\
		return floor_run(ctx, outer_v6, encap);		\
	}

FLOOR_PROG(bench_floor_4in4, 0, DSR_ENCAP_IPIP)    /* IPv4 in IPv4 (IPIP) */
FLOOR_PROG(bench_floor_6in6, 1, DSR_ENCAP_IPIP)    /* IPv6 in IPv6 (41) */
FLOOR_PROG(bench_floor_gre4in4, 0, DSR_ENCAP_GRE)  /* IPv4 in GRE in IPv4 */
FLOOR_PROG(bench_floor_gre6in6, 1, DSR_ENCAP_GRE)  /* IPv6 in GRE in IPv6 */

/* The wire-rate floor (bench/veth_rate_bench.py): the same job on live
 * frames -- no restore (every frame is fresh), IPv4 in IPv4 to the fixed
 * member, redirected to the fixed next hop's interface as the SE does. */
SEC("xdp")
int bench_floor_wire4in4(struct xdp_md *ctx)
{
	struct pkt p = {};

	if (parse_packet(ctx, &p) != V_STEER)
		return XDP_ABORTED;
	if (encapsulate(ctx, &p, &fixed.real4, &fixed.nh4, &fixed.cfg,
			DSR_ENCAP_IPIP, fixed.hash))
		return XDP_ABORTED;
	return bpf_redirect(fixed.nh4.ifindex, 0);
}

char _license[] SEC("license") = "GPL";
