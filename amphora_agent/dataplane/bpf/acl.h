/* allowed_cidrs: a listener's source-prefix allow list.
 *
 * Checked when a packet has no live connection-table entry (a new flow, or
 * a flow whose entry was evicted or whose member went away), never on a
 * conn-table hit: the fast path stays one lookup.  The prefixes live in one
 * LPM trie per family, keyed by the listener's tag and the source address
 * (structs.h, struct acl4_key). */
#ifndef DSR_ACL_H
#define DSR_ACL_H

#include "common.h"
#include "maps.h"
#include "parse.h"

/* 1 when the flow's source may use listener l. */
static __always_inline int acl_allows(const struct pkt *p, const struct listener *l)
{
	__u32 tag = (l->id << 1) | !!(l->flags & LISTENER_F_ACL_ALT);

	if (!(l->flags & LISTENER_F_ACL))
		return 1;
	if (p->flow.family == DSR_FAMILY_V4) {
		struct acl4_key k = {.prefixlen = 64, .tag = tag,
				     .addr = p->flow.src[0]};

		return bpf_map_lookup_elem(&acl_v4, &k) != NULL;
	} else {
		struct acl6_key k = {.prefixlen = 160, .tag = tag};

		__builtin_memcpy(k.addr, p->flow.src, 16);
		return bpf_map_lookup_elem(&acl_v6, &k) != NULL;
	}
}

#endif
