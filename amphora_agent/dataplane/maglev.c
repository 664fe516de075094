/* Maglev lookup-table population with bounded loads, weighted.
 *
 * Loaded by amphora_agent/dataplane/maglev.py through ctypes; that module
 * also holds a pure-Python twin (build_ring_reference) which must produce
 * bit-identical rings, so any change to the fill order here must be made
 * there too.
 *
 * Backend i prefers slots in the order perm_i(j) = (offset_i + j*skip_i) % M,
 * as in Maglev (Eisenbud et al., NSDI'16).  Backends take turns in array
 * order; in each round backend i makes weight_i visits in a row, each to the
 * next slot of its permutation.  Two changes to the paper's fill:
 *
 *  - a visit to a slot that is already taken is lost (the backend still
 *    moves on) instead of searching ahead for an empty one.  A slot thus
 *    belongs to the backend whose visit reaches it first, which does not
 *    depend on the other backends' claims: removing a backend moves its own
 *    slots and (nearly) nothing else.  Standard Maglev's search-ahead makes
 *    every later claim depend on earlier ones, and one removal re-shuffles
 *    ~0.6 x M/N other slots at N = 100.
 *  - first-visitor-wins alone is as uneven as rendezvous hashing (max/mean
 *    1.06 at N = 100), so each backend stops claiming at its cap (see
 *    compute_caps): max/mean stays <= 1.01 for shares of 655 slots and
 *    more at the price of extra moves, the capped backends' turnover:
 *    ~0.17 x M/N at shares of 655 slots, ~0.1 at 1000 (the pool tiers).
 *
 * Filling stops as soon as all M slots are taken.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* 2: bounded-load fill (1 was the paper's search-ahead fill); 3: the
 * same fill, rings sized by their pool (maglev.ring_size_for); 4: the same
 * fill, pool tiers of >= 1000 slots per member (dsr_wire/rings.py). */
#define MAGLEV_ABI_VERSION 4u

/* A backend's cap is its share s = M * weight / total weight plus
 * max(1% of s, 6.5 slots), rounded down.  Part of the algorithm: identical
 * on every SE. */
#define CAP_SLACK_NUM 101u
#define CAP_SLACK_DEN 100u
#define CAP_HEADROOM_NUM 13u /* 6.5 slots = 13 / 2 */
#define CAP_HEADROOM_DEN 2u

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

/* Slots backend i may hold: floor(s_i + max(s_i / 100, 6.5)) with
 * s_i = M * w_i / W, its share.
 *
 * Why both terms: the extra moves come from capped backends trading slots
 * when a removal raises every cap, and they grow as the headroom shrinks
 * below the spread of what each survivor inherits.  1% of the share is the
 * balance target (max/mean <= 1.01) and is 6.5 slots at M/N = 655
 * (N = 100, M = 65537; the pool tiers give >= 1000, 10 slots); at smaller
 * shares (N = 1000: 65.5 slots) 1% is under
 * one slot, nearly every backend sits at its cap and one removal moved
 * 2.7 x M/N, so the headroom stays at 6.5 slots there (1.12 x M/N, max/mean
 * 1.10).  A pool that wants both at that size needs a larger ring_size
 * (M >= 655 x N keeps the 1% rule in force).
 *
 * Caps of backends with weight add up to at least M for any sane N; if
 * rounding leaves them short (hundreds of thousands of backends), the first
 * backends in array order get one more until they do, so the fill always
 * completes. */
static void compute_caps(uint32_t m, uint32_t n, const uint32_t *weight,
			 uint64_t total_weight, uint32_t *cap)
{
	uint64_t sum = 0;
	uint32_t i;

	for (i = 0; i < n; i++) {
		uint64_t share_part = (uint64_t)m * weight[i];
		uint64_t c = CAP_SLACK_NUM * share_part /
			     (CAP_SLACK_DEN * total_weight);
		uint64_t c_headroom = (CAP_HEADROOM_DEN * share_part +
				       CAP_HEADROOM_NUM * total_weight) /
				      (CAP_HEADROOM_DEN * total_weight);

		if (c_headroom > c)
			c = c_headroom;
		if (!weight[i])
			c = 0;
		cap[i] = c > m ? m : (uint32_t)c;
		sum += cap[i];
	}
	while (sum < m)
		for (i = 0; i < n && sum < m; i++)
			if (weight[i] && cap[i] < m) {
				cap[i]++;
				sum++;
			}
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
	uint32_t *pos, *cap, *load, *active;
	uint32_t filled = 0, n_active = 0;
	uint64_t total_weight = 0;
	uint32_t i;

	if (m < 2 || !ring_out)
		return -EINVAL;
	if (n && (!offset || !skip || !weight || !value))
		return -EINVAL;

	for (i = 0; i < n; i++) {
		if (offset[i] >= m || skip[i] == 0 || skip[i] >= m)
			return -EINVAL;
		/* A skip sharing a factor with m gives a short cycle that
		 * never reaches the slots left empty. */
		if (gcd32(skip[i], m) != 1)
			return -EINVAL;
		if (value[i] == 0)
			return -EINVAL;
		total_weight += weight[i];
	}

	memset(ring_out, 0, (size_t)m * sizeof(*ring_out));
	if (!total_weight)
		return 0;

	pos = malloc((size_t)n * sizeof(*pos));
	cap = malloc((size_t)n * sizeof(*cap));
	load = calloc(n, sizeof(*load));
	active = malloc((size_t)n * sizeof(*active));
	if (!pos || !cap || !load || !active) {
		free(pos);
		free(cap);
		free(load);
		free(active);
		return -ENOMEM;
	}
	memcpy(pos, offset, (size_t)n * sizeof(*pos));
	compute_caps(m, n, weight, total_weight, cap);
	for (i = 0; i < n; i++)
		if (cap[i]) /* 0 exactly for weight 0 */
			active[n_active++] = i;

	/* Terminates: the caps add up to at least m, so while a slot is
	 * empty some active backend has room, and its permutation reaches
	 * every slot within m visits. */
	while (filled < m) {
		uint32_t a, kept = 0;

		for (a = 0; a < n_active && filled < m; a++) {
			uint32_t k = active[a], p = pos[k], t;

			for (t = 0; t < weight[k]; t++) {
				if (!ring_out[p]) {
					ring_out[p] = value[k];
					filled++;
					if (++load[k] == cap[k]) {
						p = advance(p, skip[k], m);
						break;
					}
				}
				p = advance(p, skip[k], m);
			}
			pos[k] = p;
			if (load[k] < cap[k])
				active[kept++] = k; /* keeps array order */
		}
		n_active = kept;
	}
	free(pos);
	free(cap);
	free(load);
	free(active);
	return 0;
}
