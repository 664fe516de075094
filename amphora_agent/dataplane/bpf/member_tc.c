/* Member-side tc (clsact ingress) program: removes the IPIP / IPv6-in-IP /
 * GRE header the SE added and hands the inner packet to the stack, for
 * members whose kernel has no tunnel drivers.  Only packets addressed to one
 * of the member's tunnel addresses (decap_addrs) are touched; where the
 * address says so (DECAP_F_SOURCES), only those from the SEs' tunnel
 * sources (decap_sources) are decapsulated, the others dropped. */
#include "member_decap.h"

SEC("tc")
int dsr_decap(struct __sk_buff *skb)
{
	return decap_skb(skb);
}

char _license[] SEC("license") = "GPL";
