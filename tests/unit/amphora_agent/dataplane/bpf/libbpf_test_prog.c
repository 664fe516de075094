/* Test object for tests/unit/amphora_agent/dataplane/test_libbpf.py.
 *
 * Exercises the ctypes libbpf binding: one map of each kind the binding
 * treats differently (ARRAY, HASH, PERCPU_ARRAY with a value size that is
 * not a multiple of 8), an XDP program with an observable effect for
 * BPF_PROG_TEST_RUN, and trivial XDP/tc programs to attach.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

struct lbt_hash_value {
	__u32 a;
	__u32 b;
	__u64 c;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u64);
} lbt_array SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct lbt_hash_value);
} lbt_hash SEC(".maps");

/* 4-byte values: the kernel lays per-CPU values out 8-byte aligned. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} lbt_percpu SEC(".maps");

/* Flips every bit of the first byte, counts runs per CPU in lbt_percpu[0]
 * and bounces the frame. */
SEC("xdp")
int lbt_xdp_flip(struct xdp_md *ctx)
{
	unsigned char *data = (void *)(long)ctx->data;
	unsigned char *data_end = (void *)(long)ctx->data_end;
	__u32 key = 0;
	__u32 *count;

	if (data + 1 > data_end)
		return XDP_ABORTED;
	data[0] ^= 0xff;

	count = bpf_map_lookup_elem(&lbt_percpu, &key);
	if (count)
		*count += 1;
	return XDP_TX;
}

SEC("xdp")
int lbt_xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

/* Sets skb->mark from lbt_array[1] so ctx_out can be checked. */
SEC("tc")
int lbt_tc_mark(struct __sk_buff *skb)
{
	__u32 key = 1;
	__u64 *mark = bpf_map_lookup_elem(&lbt_array, &key);

	if (mark)
		skb->mark = (__u32)*mark;
	return TC_ACT_OK;
}

char _license[] SEC("license") = "GPL";
