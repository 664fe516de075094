/* Maps of the service-engine program.  Sizes here are compile-time defaults:
 * the loader sets max_entries from the agent's configuration before load and
 * pins every map under the SE's pin directory, so a restarted loader reuses
 * the live state. */
#ifndef DSR_MAPS_H
#define DSR_MAPS_H

#include "common.h"

#define DEFAULT_MAX_LISTENERS 64
#define DEFAULT_RING_SIZE 128021
#define DEFAULT_MAX_REALS 65536
#define DEFAULT_MAX_NEXTHOPS 4096
#define DEFAULT_CONN_TABLE 262144
#define DEFAULT_MAX_CIDRS 16384

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct vip_key);
	__type(value, struct listener);
	__uint(max_entries, DEFAULT_MAX_LISTENERS);
} listener_entries SEC(".maps"); /* "listeners" before listener.check */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct vip_addr_key);
	__type(value, struct vip_addr);
	__uint(max_entries, DEFAULT_MAX_LISTENERS);
} vip_addrs SEC(".maps");

/* All Maglev rings, flat: slot s of a listener is global slot
 * listener.ring_off + s (s < listener.ring_size), a u32 index into reals
 * (0 = "no member").  The agent allocates the extents (rings.py); the map
 * holds [dataplane] ring_slots slots in all.  Two slots
 * share one 8-byte element (array elements are 8-byte aligned, so u32
 * elements would waste half the memory); as memory the map is a plain u32
 * array, and it is memory-mappable so the agent writes whole rings with a
 * memcpy instead of a syscall per slot. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, (DEFAULT_MAX_LISTENERS * DEFAULT_RING_SIZE + 1) / 2);
	__uint(map_flags, BPF_F_MMAPABLE);
} rings SEC(".maps");

static __always_inline __u32 ring_slot(__u32 global_slot)
{
	__u32 key = global_slot >> 1;
	__u32 *pair = bpf_map_lookup_elem(&rings, &key);

	if (!pair)
		return 0;
	return pair[global_slot & 1];
}

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct real);
	__uint(max_entries, DEFAULT_MAX_REALS);
} reals SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct nexthop);
	__uint(max_entries, DEFAULT_MAX_NEXTHOPS);
} nexthops SEC(".maps");

/* Established flows keep their member across ring changes.  Per-CPU LRU
 * lists avoid a global lock; the hash itself is shared by all CPUs.  One
 * table per family: IPv6 flows here, IPv4 flows in conn_table_v4 under a
 * 16-byte key (steer.h: conn_find), each of the configured size. */
#define DSR_CONN_TABLE(name, key_type)				\
	struct {						\
		__uint(type, BPF_MAP_TYPE_LRU_HASH);		\
		__type(key, key_type);				\
		__type(value, struct conn);			\
		__uint(max_entries, DEFAULT_CONN_TABLE);	\
		__uint(map_flags, BPF_F_NO_COMMON_LRU);		\
	} name SEC(".maps")

DSR_CONN_TABLE(conn_table, struct flow_key);
DSR_CONN_TABLE(conn_table_v4, struct flow_key4);

/* Connection-limit counts per listener id (limit.h). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct conn_slots);
	__uint(max_entries, DEFAULT_MAX_LISTENERS);
} conn_slots SEC(".maps");

/* allowed_cidrs of every listener, one trie per family (acl.h). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct acl4_key);
	__type(value, __u32);
	__uint(max_entries, DEFAULT_MAX_CIDRS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} acl_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct acl6_key);
	__type(value, __u32);
	__uint(max_entries, DEFAULT_MAX_CIDRS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} acl_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct se_config);
	__uint(max_entries, 1);
} se_config SEC(".maps");

/* The new-flow flood guard's per-CPU window (flood.h). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct flood_window);
	__uint(max_entries, 1);
} flood_window SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct listener_stats);
	__uint(max_entries, DEFAULT_MAX_LISTENERS);
} listener_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct real_stats);
	__uint(max_entries, DEFAULT_MAX_REALS);
} real_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, STAT_MAX);
} se_stats SEC(".maps");

static __always_inline void count(__u32 stat)
{
	__u64 *v = bpf_map_lookup_elem(&se_stats, &stat);

	if (v)
		*v += 1;
}

#endif
