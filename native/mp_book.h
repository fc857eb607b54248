/*
 * mp_book: a local order book (both sides) keyed by exact decimal price, in C.
 *
 * Why C: applying a venue's diff in Python costs two float() calls, a dict and a sorted-list
 * operation per level (~0.5 us each); here a whole event (both sides) is one call.
 *
 * Input is the compact JSON text of a pair of level lists, [[bid, ...], [ask, ...]], each
 * level an array of at least two scalars [price, size, ...] (orjson.dumps((bids, asks))).
 * Prices become exact keys (price * 10^18 in 128 bits: at most 18 decimals and 20 integer
 * digits; "1.10" and "1.1" are the same level), so ordering never goes through a float.
 * Each level's JSON text is stored as given, so what is read back (top N, snapshots, OKX
 * checksums) is the venue's own text, never rounded.
 *
 * Each side is an array sorted so that the best level is the LAST entry (bids ascending by
 * price, asks descending): the levels that change most sit next to the best, so inserts and
 * removals move few entries.
 */
#ifndef MP_BOOK_H
#define MP_BOOK_H

#include <stddef.h>
#include <stdint.h>

enum mp_book_result_enum
{
    MP_BOOK_ESHAPE = -1,     /* text is not [[level, ...], [level, ...]] of scalar arrays */
    MP_BOOK_EPRICE = -2,     /* a price is not a decimal number */
    MP_BOOK_ENONFINITE = -3, /* a price is nan or infinite */
    MP_BOOK_ERANGE = -4,     /* a price has more than 18 decimals or 20 integer digits */
    MP_BOOK_ESIZE = -5,      /* a size is not a decimal number */
    MP_BOOK_ENOMEM = -6,     /* out of memory */
    MP_BOOK_ETOOBIG = -7     /* a side plus an update's levels (or one input) would pass
                                MP_BOOK_MAX_LEVELS */
};

#define MP_BOOK_MAX_LEVELS 4000000 /* per side */
#define MP_BOOK_BIDS 0
#define MP_BOOK_ASKS 1

typedef struct mp_book_stct mp_book_t;

/* A new empty book (NULL when out of memory); free with mp_book_free. */
mp_book_t *mp_book_new(void);
void mp_book_free(mp_book_t *book);

/* Empty both sides. */
void mp_book_clear(mp_book_t *book);

/*
 * Replace the sides selected by `sides` (bit 0 bids, bit 1 asks) with the levels in text
 * (levels of unselected sides are ignored). Zero sizes are dropped; a price given twice
 * keeps its last level. Returns a negative mp_book_result_enum value with the book
 * unchanged, or bits: 1 if the book is then crossed (best bid >= best ask); 2 (bids) and 4
 * (asks) for a loaded side stored exactly as given (strictly best first, no zero size), so
 * the caller may hand out its own level list rather than read the side back.
 */
int mp_book_load(mp_book_t *book, const char *text, size_t len, int sides);

/*
 * Apply absolute-size updates, in order: size 0 removes the level (an absent one is fine),
 * anything else inserts or replaces it. Every level is parsed before the book is touched, so
 * bad input leaves it unchanged (only MP_BOOK_ENOMEM can leave it partly applied). Returns 1
 * if the book is then crossed, 0 if not, or a negative mp_book_result_enum value.
 */
int mp_book_apply(mp_book_t *book, const char *text, size_t len);

/* Parse only (same checks and errors as mp_book_apply); the book's levels are untouched. */
int mp_book_check(mp_book_t *book, const char *text, size_t len);

/* After an error: byte offset in text of the offending level (or of the bad token), or -1. */
int64_t mp_book_error_offset(const mp_book_t *book);

/* 1 if both sides are non-empty and best bid >= best ask. */
int mp_book_crossed(const mp_book_t *book);

uint32_t mp_book_len(const mp_book_t *book, int side);

/*
 * The best n levels of a side, best first, as the JSON array of their stored texts.
 * Returns the number of bytes it takes; written to out only when that is <= cap.
 */
int64_t mp_book_top(const mp_book_t *book, int side, uint32_t n, char *out, size_t cap);

#endif
