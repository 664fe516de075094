/* A listener's entry, as a packet may use it.
 *
 * listener_entries is a preallocated hash.  The kernel hands the element an
 * update replaced to the CPU's next update of an existing key, and one a
 * delete freed to the next insert, at once -- no RCU grace period -- so a
 * pointer looked up a moment earlier can read
 * another listener's ring, id and policy, or a mix of two entries, while
 * this packet uses it; a connection-table entry made from that would hold
 * the flow on another listener's member for good.  So the entry is copied,
 * and the copy is used only when its check, which the agent writes over
 * the key and every field, matches the key looked up; else it is looked
 * up again.  A lookup can also miss while the agent replaces an entry of
 * the same bucket: a VIP's packet looks once more before it is dropped
 * (se.h). */
#ifndef DSR_LISTENER_H
#define DSR_LISTENER_H

#include "common.h"
#include "maps.h"
#include "parse.h"

/* Mirrored by amphora_agent/dataplane/structs.py (listener_check: the
 * key's words, then the entry's). */
#define LISTENER_CHECK_SEED 0x4c697374 /* "List" */
#define LISTENER_CHECK_MUL 0x01000193  /* FNV-1a's 32-bit prime */
/* Lookups in all before an entry that never checks is given up on: each
 * failed one means the element was rewritten during a copy of 28 bytes. */
#define LISTENER_TRIES 4

enum listener_found {
	LISTENER_NONE = 0,     /* no entry for the key */
	LISTENER_FOUND = 1,    /* *out holds the key's entry */
	LISTENER_CHANGING = 2, /* no copy checked in LISTENER_TRIES */
};

/* FNV-1a over 32-bit words.  Each step is a bijection of the running
 * value, so inputs that differ in one word always differ.  Unrolled: n
 * is a constant at both calls, and a loop would read the copy at a
 * variable stack offset. */
static __always_inline __u32 check_words(__u32 h, const __u32 *w, const int n)
{
#pragma clang loop unroll(full)
	for (int i = 0; i < n; i++)
		h = (h ^ w[i]) * LISTENER_CHECK_MUL;
	return h;
}

/* An entry's check (structs.listener_check): entry_check(key_check(key),
 * entry). */
static __always_inline __u32 key_check(const struct vip_key *k)
{
	return check_words(LISTENER_CHECK_SEED, (const __u32 *)k,
			   sizeof(*k) / 4);
}

static __always_inline __u32 entry_check(__u32 key_h, const struct listener *l)
{
	return check_words(key_h, (const __u32 *)l,
			   __builtin_offsetof(struct listener, check) / 4);
}

/* The drop reason of a lookup that found no usable entry. */
static __always_inline __u32 listener_miss(enum listener_found found)
{
	return found == LISTENER_CHANGING ? STAT_DROP_INTERNAL
					  : STAT_DROP_NO_LISTENER;
}

static __always_inline enum listener_found find_listener(const struct pkt *p,
							 struct listener *out)
{
	struct vip_key vk = {};
	struct listener *l;
	__u32 key_h;

	__builtin_memcpy(vk.addr, p->flow.dst, 16);
	vk.port = p->flow.dport;
	vk.proto = p->flow.proto;
	vk.family = p->flow.family;
	key_h = key_check(&vk);   /* once: the key is the same every try */
#pragma clang loop unroll(disable)
	for (int i = 0; i < LISTENER_TRIES; i++) {
		l = bpf_map_lookup_elem(&listener_entries, &vk);
		if (!l)
			return LISTENER_NONE;
		__builtin_memcpy(out, l, sizeof(*out));
		/* The check is of the copy: nothing below reads *l again. */
		asm volatile("" ::: "memory");
		if (out->check == entry_check(key_h, out))
			return LISTENER_FOUND;
	}
	return LISTENER_CHANGING;
}

#endif
