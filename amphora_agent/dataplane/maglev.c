/* Maglev lookup-table population (Eisenbud et al., NSDI'16), weighted.
 *
 * Loaded by amphora_agent/dataplane/maglev.py through ctypes; that module
 * also holds a pure-Python twin (build_ring_reference) which must produce
 * bit-identical rings, so any change to the fill order here must be made
 * there too.
 *
 * Backend i prefers slots in the order perm_i(j) = (offset_i + j*skip_i) % M.
 * Backends take turns in array order; in each round backend i takes weight_i
 * turns in a row and each turn claims its next preferred slot that is still
 * empty.  Filling stops as soon as all M slots are taken.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAGLEV_ABI_VERSION 1u

#define EXPORT __attribute__((visibility("default")))

/* Lets the Python side refuse a stale library built from an older source. */
EXPORT uint32_t maglev_abi_version(void)
{
	return MAGLEV_ABI_VERSION;
}

static uint32_t gcd32(uint32_t a, uint32_t b)
{
	while (b) {
		uint32_t t = a % b;
		a = b;
		b = t;
	}
	return a;
}

/* Next position in a permutation.  pos and skip are both < m, so this never
 * overflows and avoids a division per probe. */
static inline uint32_t advance(uint32_t pos, uint32_t skip, uint32_t m)
{
	return pos >= m - skip ? pos - (m - skip) : pos + skip;
}

/* Fill ring_out[0..ring_size) with value[i] of the backend owning each slot.
 *
 * Slots stay 0 when there is no backend with a non-zero weight; 0 also marks
 * an empty slot while filling, which is why values must be non-zero.
 *
 * Returns 0, -EINVAL on bad arguments (ring_out is then untouched) or
 * -ENOMEM.
 */
EXPORT int maglev_fill(uint32_t ring_size, uint32_t n, const uint32_t *offset,
		       const uint32_t *skip, const uint32_t *weight,
		       const uint32_t *value, uint32_t *ring_out)
{
	const uint32_t m = ring_size;
	uint32_t *pos;
	uint32_t filled = 0;
	int any_weight = 0;
	uint32_t i;

	if (m < 2 || !ring_out)
		return -EINVAL;
	if (n && (!offset || !skip || !weight || !value))
		return -EINVAL;

	for (i = 0; i < n; i++) {
		if (offset[i] >= m || skip[i] == 0 || skip[i] >= m)
			return -EINVAL;
		/* A skip sharing a factor with m gives a short cycle: the
		 * backend could then spin forever on a cycle that is full
		 * while other slots are still empty. */
		if (gcd32(skip[i], m) != 1)
			return -EINVAL;
		if (value[i] == 0)
			return -EINVAL;
		if (weight[i])
			any_weight = 1;
	}

	memset(ring_out, 0, (size_t)m * sizeof(*ring_out));
	if (!any_weight)
		return 0;

	pos = malloc((size_t)n * sizeof(*pos));
	if (!pos)
		return -ENOMEM;
	memcpy(pos, offset, (size_t)n * sizeof(*pos));

	/* Terminates: every round makes at least one claim (some weight is
	 * non-zero), and each claim finds an empty slot because the
	 * permutation visits all m slots and fewer than m are taken. */
	for (;;) {
		for (i = 0; i < n; i++) {
			uint32_t t;

			for (t = 0; t < weight[i]; t++) {
				uint32_t p = pos[i];

				while (ring_out[p])
					p = advance(p, skip[i], m);
				ring_out[p] = value[i];
				pos[i] = advance(p, skip[i], m);
				if (++filled == m)
					goto out;
			}
		}
	}
out:
	free(pos);
	return 0;
}
