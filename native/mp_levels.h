/*
 * mp_levels: the analyzer's float book, applied straight from ring records.
 *
 * A ring book record carries its levels as int64 (price, size) mantissa pairs, bids first,
 * with one exponent per column (supervisor.codec). The analyzer only needs floats (mid,
 * spread, depth, microprice), so each side is a sorted array of double keys (bids negated,
 * so index 0 is the best level on both sides) and double sizes. One call applies a whole
 * record; no Python object is created per level.
 *
 * Keys: mantissa / 10^-exp in double arithmetic. For |mantissa| <= 2^53 and exp >= -22 both
 * operands are exact, so the IEEE quotient is the correctly rounded value: the same double
 * as Python's float("43250.1") whatever exponent the record chose. Larger inputs use long
 * double (still consistent for one book: the same value always maps to the same key).
 */
#ifndef MP_LEVELS_H
#define MP_LEVELS_H

#include <stdint.h>

enum mp_levels_result_enum
{
    MP_LEVELS_ENOMEM = -1,   /* could not grow a side */
    MP_LEVELS_EINVAL = -2    /* negative level count */
};

typedef struct mp_levels_side_stct
{
    double *keys;    /* ascending; bids negated */
    double *sizes;
    int32_t count;
    int32_t capacity;
}
mp_levels_side_t;

typedef struct mp_levels_book_stct
{
    mp_levels_side_t bids;
    mp_levels_side_t asks;
}
mp_levels_book_t;

mp_levels_book_t *mp_levels_new(void);
void mp_levels_free(mp_levels_book_t *book);
void mp_levels_clear(mp_levels_book_t *book);

/*
 * Apply one record: vals holds 2 * (n_bids + n_asks) mantissas (price, size), bids first.
 * load != 0: replace both sides (a snapshot; sizes <= 0 are dropped and counted).
 * load == 0: size 0 removes the level (absent is fine), > 0 sets it, < 0 is counted and
 * skipped. Returns the count of bad sizes (>= 0) or a negative mp_levels_result_enum.
 */
int32_t mp_levels_apply(mp_levels_book_t *book, const int64_t *vals, int32_t n_bids,
                        int32_t n_asks, int32_t price_exp, int32_t size_exp, int32_t load);

/* The same from (price, size) doubles (the ZeroMQ text path); a non-finite price or size is
 * counted as bad and skipped. */
int32_t mp_levels_apply_f(mp_levels_book_t *book, const double *vals, int32_t n_bids,
                          int32_t n_asks, int32_t load);

/*
 * Best levels: out[0..3] = best bid, its size, best ask, its size (0 where a side is empty).
 * Returns 0 if either side is empty, else 1 (normal), 2 (locked: bid == ask) or
 * 3 (crossed: bid > ask).
 */
int32_t mp_levels_top(const mp_levels_book_t *book, double *out);

/* Total size of the best n levels of a side (side 0 bids, 1 asks). */
double mp_levels_depth(const mp_levels_book_t *book, int32_t side, int32_t n);

/* Copy up to max levels of a side, best first, as (price, size) pairs (bid prices positive).
 * Returns the number copied. */
int32_t mp_levels_copy(const mp_levels_book_t *book, int32_t side, double *out, int32_t max);

#endif
