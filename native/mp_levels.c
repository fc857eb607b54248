#include "mp_levels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const double MP_LEVELS_POW10[23] = {
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
    1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22
};

#define MP_LEVELS_EXACT_MANTISSA (INT64_C(1) << 53)

/* mantissa * 10^exp as the nearest double when both operands are exact (see the header). */
static double mp_levels_value(int64_t mantissa, int32_t exp)
{
    if (mantissa <= MP_LEVELS_EXACT_MANTISSA && mantissa >= -MP_LEVELS_EXACT_MANTISSA)
    {
        if (exp <= 0 && exp >= -22)
        {
            return (double)mantissa / MP_LEVELS_POW10[-exp];
        }
        if (exp > 0 && exp <= 22)
        {
            return (double)mantissa * MP_LEVELS_POW10[exp];
        }
    }
    return (double)((long double)mantissa * powl(10.0L, (long double)exp));
}

static void mp_levels_side_free(mp_levels_side_t *side)
{
    free(side->keys);
    free(side->sizes);
    memset(side, 0, sizeof(*side));
}

static int mp_levels_side_grow(mp_levels_side_t *side)
{
    int32_t capacity = side->capacity ? side->capacity * 2 : 64;
    if (capacity <= side->capacity)
    {
        return MP_LEVELS_ENOMEM;
    }
    double *keys = realloc(side->keys, (size_t)capacity * sizeof(double));
    if (keys == NULL)
    {
        return MP_LEVELS_ENOMEM;
    }
    side->keys = keys;
    double *sizes = realloc(side->sizes, (size_t)capacity * sizeof(double));
    if (sizes == NULL)
    {
        return MP_LEVELS_ENOMEM;
    }
    side->sizes = sizes;
    side->capacity = capacity;
    return 0;
}

/* First index whose key is >= key. Levels mostly change near the top, so look there first. */
static int32_t mp_levels_lower_bound(const mp_levels_side_t *side, double key)
{
    const double *keys = side->keys;
    int32_t lo = 0, hi = side->count;
    if (hi > 8 && keys[7] >= key)
    {
        hi = 8;
    }
    while (lo < hi)
    {
        int32_t mid = lo + (hi - lo) / 2;
        if (keys[mid] < key)
        {
            lo = mid + 1;
        }
        else
        {
            hi = mid;
        }
    }
    return lo;
}

/* size > 0 sets the level, size == 0 removes it. Returns 0 or MP_LEVELS_ENOMEM. */
static int mp_levels_side_set(mp_levels_side_t *side, double key, double size)
{
    int32_t i = mp_levels_lower_bound(side, key);
    int found = i < side->count && side->keys[i] == key;
    if (size == 0.0)
    {
        if (found)
        {
            size_t tail = (size_t)(side->count - i - 1);
            memmove(side->keys + i, side->keys + i + 1, tail * sizeof(double));
            memmove(side->sizes + i, side->sizes + i + 1, tail * sizeof(double));
            side->count--;
        }
        return 0;
    }
    if (found)
    {
        side->sizes[i] = size;
        return 0;
    }
    if (side->count == side->capacity && mp_levels_side_grow(side) != 0)
    {
        return MP_LEVELS_ENOMEM;
    }
    size_t tail = (size_t)(side->count - i);
    memmove(side->keys + i + 1, side->keys + i, tail * sizeof(double));
    memmove(side->sizes + i + 1, side->sizes + i, tail * sizeof(double));
    side->keys[i] = key;
    side->sizes[i] = size;
    side->count++;
    return 0;
}

mp_levels_book_t *mp_levels_new(void)
{
    return calloc(1, sizeof(mp_levels_book_t));
}

void mp_levels_free(mp_levels_book_t *book)
{
    if (book != NULL)
    {
        mp_levels_side_free(&book->bids);
        mp_levels_side_free(&book->asks);
        free(book);
    }
}

void mp_levels_clear(mp_levels_book_t *book)
{
    book->bids.count = 0;
    book->asks.count = 0;
}

/* One level; a bad size (< 0, or <= 0 in a snapshot, or not finite) returns 1, else 0. */
static int mp_levels_put(mp_levels_book_t *book, int bid, double price, double size, int load,
                         int *error)
{
    if (!(size > 0.0) && (load || !(size == 0.0)))
    {
        return 1;
    }
    if (!isfinite(price) || !isfinite(size))
    {
        return 1;
    }
    if (mp_levels_side_set(bid ? &book->bids : &book->asks, bid ? -price : price, size) != 0)
    {
        *error = MP_LEVELS_ENOMEM;
    }
    return 0;
}

/* Checks the counts and, for a snapshot, empties the book. Returns 0 or an error. */
static int32_t mp_levels_begin(mp_levels_book_t *book, int32_t n_bids, int32_t n_asks,
                               int32_t load)
{
    if (n_bids < 0 || n_asks < 0)
    {
        return MP_LEVELS_EINVAL;
    }
    if (load)
    {
        mp_levels_clear(book);
    }
    return 0;
}

int32_t mp_levels_apply(mp_levels_book_t *book, const int64_t *vals, int32_t n_bids,
                        int32_t n_asks, int32_t price_exp, int32_t size_exp, int32_t load)
{
    int error = mp_levels_begin(book, n_bids, n_asks, load);
    int32_t bad = 0;
    for (int32_t i = 0; i < n_bids + n_asks && !error; i++)
    {
        bad += mp_levels_put(book, i < n_bids, mp_levels_value(vals[2 * i], price_exp),
                             mp_levels_value(vals[2 * i + 1], size_exp), load, &error);
    }
    return error ? error : bad;
}

int32_t mp_levels_apply_f(mp_levels_book_t *book, const double *vals, int32_t n_bids,
                          int32_t n_asks, int32_t load)
{
    int error = mp_levels_begin(book, n_bids, n_asks, load);
    int32_t bad = 0;
    for (int32_t i = 0; i < n_bids + n_asks && !error; i++)
    {
        bad += mp_levels_put(book, i < n_bids, vals[2 * i], vals[2 * i + 1], load, &error);
    }
    return error ? error : bad;
}

int32_t mp_levels_top(const mp_levels_book_t *book, double *out)
{
    const mp_levels_side_t *b = &book->bids, *a = &book->asks;
    out[0] = b->count ? -b->keys[0] : 0.0;
    out[1] = b->count ? b->sizes[0] : 0.0;
    out[2] = a->count ? a->keys[0] : 0.0;
    out[3] = a->count ? a->sizes[0] : 0.0;
    if (!b->count || !a->count)
    {
        return 0;
    }
    if (out[0] < out[2])
    {
        return 1;
    }
    return out[0] == out[2] ? 2 : 3;
}

double mp_levels_depth(const mp_levels_book_t *book, int32_t side, int32_t n)
{
    const mp_levels_side_t *s = side ? &book->asks : &book->bids;
    double total = 0.0;
    for (int32_t i = 0; i < n && i < s->count; i++)
    {
        total += s->sizes[i];
    }
    return total;
}

int32_t mp_levels_copy(const mp_levels_book_t *book, int32_t side, double *out, int32_t max)
{
    const mp_levels_side_t *s = side ? &book->asks : &book->bids;
    int32_t n = s->count < max ? s->count : max;
    for (int32_t i = 0; i < n; i++)
    {
        out[2 * i] = side ? s->keys[i] : -s->keys[i];
        out[2 * i + 1] = s->sizes[i];
    }
    return n;
}
