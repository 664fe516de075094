/* Bob Jenkins' lookup3 hash (public domain) over 32-bit words: the flow hash.
 * The seed is a constant so that every SE maps a flow to the same ring slot. */
#ifndef DSR_JHASH_H
#define DSR_JHASH_H

#include <linux/types.h>

#define DSR_HASH_SEED 0x4f637461 /* "Octa" */

static __always_inline __u32 rol32(__u32 w, unsigned int s)
{
	return (w << s) | (w >> ((-s) & 31));
}

#define JHASH_MIX(a, b, c)                   \
	do {                                     \
		a -= c; a ^= rol32(c, 4); c += b;    \
		b -= a; b ^= rol32(a, 6); a += c;    \
		c -= b; c ^= rol32(b, 8); b += a;    \
		a -= c; a ^= rol32(c, 16); c += b;   \
		b -= a; b ^= rol32(a, 19); a += c;   \
		c -= b; c ^= rol32(b, 4); b += a;    \
	} while (0)

#define JHASH_FINAL(a, b, c)                 \
	do {                                     \
		c ^= b; c -= rol32(b, 14);           \
		a ^= c; a -= rol32(c, 11);           \
		b ^= a; b -= rol32(a, 25);           \
		c ^= b; c -= rol32(b, 16);           \
		a ^= c; a -= rol32(c, 4);            \
		b ^= a; b -= rol32(a, 14);           \
		c ^= b; c -= rol32(b, 24);           \
	} while (0)

/* Hash of five words: an address (IPv4 in w[0], zeros after) and one extra. */
static __always_inline __u32 jhash_5words(const __u32 *w, __u32 extra)
{
	__u32 a, b, c;

	a = b = c = 0xdeadbeef + (5 << 2) + DSR_HASH_SEED;
	a += w[0];
	b += w[1];
	c += w[2];
	JHASH_MIX(a, b, c);
	a += w[3];
	b += extra;
	JHASH_FINAL(a, b, c);
	return c;
}

#endif
