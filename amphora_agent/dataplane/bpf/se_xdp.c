/* Service-engine XDP program: L3 Direct Server Return load balancing.
 *
 * VIP packets are matched to a listener, given a member by the connection
 * table or the listener's Maglev ring, encapsulated (IPIP/GRE, either family)
 * and sent to the member's next hop.  Everything that is not for a VIP is
 * passed untouched; a VIP packet that cannot be steered is counted and
 * dropped, never passed (see docs/dataplane.md for every verdict). */
#include "se.h"

SEC("xdp")
int dsr_se(struct xdp_md *ctx)
{
	return se_process(ctx);
}

char _license[] SEC("license") = "GPL";
