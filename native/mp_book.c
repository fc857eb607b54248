#include "mp_book.h"
#include "mp_text.h"

#include <stdlib.h>
#include <string.h>

/* Level texts up to this many bytes live inside the entry (["7.5980","1433"] is 17). */
#define MP_BOOK_INLINE 40

/* Prices are keyed as value * 10^MP_BOOK_SCALE; |key| < 10^38 fits a signed 128-bit int. */
#define MP_BOOK_SCALE 18
#define MP_BOOK_DIGITS 38

__extension__ typedef __int128 mp_key_t; /* gcc and clang, every 64-bit target */

/* One stored level. key is the ordered key: +price for bids, -price for asks (x 10^18), so
 * both sides are ascending with the best level last. */
typedef struct mp_book_level_stct
{
    mp_key_t key;
    uint32_t len; /* text length; > MP_BOOK_INLINE: the text is on the heap */
    uint32_t pad;
    union
    {
        char inl[MP_BOOK_INLINE];
        char *heap;
    } t;
}
mp_book_level_t;

typedef struct mp_book_side_stct
{
    mp_book_level_t *v;
    uint32_t n;
    uint32_t cap;
}
mp_book_side_t;

/* One parsed input level: where its text is, its key, its side. */
typedef struct mp_book_parsed_stct
{
    mp_key_t key;
    uint32_t off;
    uint32_t len;
    uint32_t idx; /* input order: load keeps the last level of a repeated price */
    uint8_t side;
    uint8_t zero;
}
mp_book_parsed_t;

struct mp_book_stct
{
    mp_book_side_t side[2];
    mp_book_parsed_t *scratch;
    uint32_t scratch_cap;
    int64_t err_off;
};

/* ----- decimal text ------------------------------------------------------------------------ */

static int mp_book_is_nonfinite(const char *p, size_t n)
{
    if (n > 0 && (p[0] == '-' || p[0] == '+'))
    {
        p++;
        n--;
    }
    char low[9];
    if (n != 3 && n != 8)
    {
        return 0;
    }
    for (size_t i = 0; i < n; i++)
    {
        char c = p[i];
        low[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
    }
    return (n == 3 && (memcmp(low, "nan", 3) == 0 || memcmp(low, "inf", 3) == 0))
           || (n == 8 && memcmp(low, "infinity", 8) == 0);
}

static const int64_t MP_BOOK_POW10[19] = {
    1LL, 10LL, 100LL, 1000LL, 10000LL, 100000LL, 1000000LL, 10000000LL, 100000000LL,
    1000000000LL, 10000000000LL, 100000000000LL, 1000000000000LL, 10000000000000LL,
    100000000000000LL, 1000000000000000LL, 10000000000000000LL, 100000000000000000LL,
    1000000000000000000LL
};

/* 10^k for 0 <= k <= 38. */
static inline mp_key_t mp_book_pow10(long k)
{
    mp_key_t r = 1;
    for (; k > 18; k -= 18)
    {
        r *= MP_BOOK_POW10[18];
    }
    return r * MP_BOOK_POW10[k];
}

/* The common case, in 64 bits: digits[.digits], unsigned, at most 18 digits, no exponent.
 * Returns 1 with *out set, or 0 for anything else (mp_book_parse_price decides). */
static inline int mp_book_price_fast(const char *p, size_t n, mp_key_t *out)
{
    uint64_t m = 0;
    size_t dot = n;

    if (n == 0 || n > 19)
    {
        return 0;
    }
    for (size_t i = 0; i < n; i++)
    {
        unsigned d = (unsigned)(unsigned char)p[i] - '0';
        if (d < 10)
        {
            m = m * 10 + d;
        }
        else if (p[i] == '.' && dot == n)
        {
            dot = i;
        }
        else
        {
            return 0;
        }
    }
    size_t digits = n - (dot < n), decimals = dot < n ? n - 1 - dot : 0;
    if (digits == 0 || digits > 18)
    {
        return 0;
    }
    *out = (mp_key_t)m * MP_BOOK_POW10[18 - decimals];
    return 1;
}

/*
 * [+-]digits[.digits][e[+-]digits] (digits on at least one side of the dot) -> exact key.
 * Trailing zeros are kept lazily (pending) so "1.1000000000000000000000" is still exact.
 * Returns 0 or MP_BOOK_EPRICE / MP_BOOK_ERANGE (nan/inf are told apart by the caller).
 */
static int mp_book_parse_price(const char *p, size_t n, mp_key_t *out)
{
    size_t i = 0;
    int neg = 0, digits = 0, seen_dot = 0, sig = 0;
    long decimals = 0, pending = 0, exp10 = 0;
    mp_key_t m = 0;

    if (i < n && (p[i] == '-' || p[i] == '+'))
    {
        neg = p[i] == '-';
        i++;
    }
    for (; i < n; i++)
    {
        char c = p[i];
        if (c >= '0' && c <= '9')
        {
            digits++;
            decimals += seen_dot;
            if (c == '0')
            {
                pending += sig > 0; /* leading zeros are no digits of m */
                continue;
            }
            if (sig + pending + 1 > MP_BOOK_DIGITS)
            {
                return MP_BOOK_ERANGE;
            }
            for (; pending > 0; pending--)
            {
                m *= 10;
                sig++;
            }
            m = m * 10 + (c - '0');
            sig++;
        }
        else if (c == '.' && !seen_dot)
        {
            seen_dot = 1;
        }
        else
        {
            break;
        }
    }
    if (digits == 0)
    {
        return MP_BOOK_EPRICE;
    }
    int e;
    int rc = mp_text_exponent(p, n, &i, 1000, &e);
    if (rc != MP_TEXT_OK)
    {
        return rc == MP_TEXT_ERANGE ? MP_BOOK_ERANGE : MP_BOOK_EPRICE;
    }
    exp10 = e;
    if (i != n)
    {
        return MP_BOOK_EPRICE;
    }
    if (m == 0)
    {
        *out = 0;
        return 0;
    }
    /* value = m * 10^(pending + exp10 - decimals); key = value * 10^SCALE */
    long k = pending + exp10 - decimals + MP_BOOK_SCALE;
    if (k < 0 || sig + k > MP_BOOK_DIGITS)
    {
        return MP_BOOK_ERANGE; /* m has no trailing zeros: k < 0 means too many decimals */
    }
    m *= mp_book_pow10(k);
    *out = neg ? -m : m;
    return 0;
}

/* Same grammar as a price, any length; sets *zero when every digit is 0. */
static int mp_book_parse_size(const char *p, size_t n, int *zero)
{
    size_t i = 0;
    int digits = 0, seen_dot = 0, nonzero = 0;

    if (i < n && (p[i] == '-' || p[i] == '+'))
    {
        i++;
    }
    for (; i < n; i++)
    {
        char c = p[i];
        if (c >= '0' && c <= '9')
        {
            digits++;
            nonzero |= c != '0';
        }
        else if (c == '.' && !seen_dot)
        {
            seen_dot = 1;
        }
        else
        {
            break;
        }
    }
    if (digits == 0)
    {
        return MP_BOOK_ESIZE;
    }
    if (i < n && (p[i] == 'e' || p[i] == 'E'))
    {
        int edigits = 0;
        i++;
        if (i < n && (p[i] == '-' || p[i] == '+'))
        {
            i++;
        }
        for (; i < n && p[i] >= '0' && p[i] <= '9'; i++)
        {
            edigits++;
        }
        if (edigits == 0)
        {
            return MP_BOOK_ESIZE;
        }
    }
    if (i != n)
    {
        return MP_BOOK_ESIZE;
    }
    *zero = !nonzero;
    return 0;
}

/* ----- JSON of the level lists ---------------------------------------------------------------- */

/* Skip JSON whitespace (our own compact input has none: one compare in the common case). */
static inline size_t mp_book_ws(const char *t, size_t len, size_t pos)
{
    while (pos < len && (unsigned char)t[pos] <= ' '
           && (t[pos] == ' ' || t[pos] == '\n' || t[pos] == '\t' || t[pos] == '\r'))
    {
        pos++;
    }
    return pos;
}

static int mp_book_scratch_push(mp_book_t *book, uint32_t count)
{
    if (count < book->scratch_cap)
    {
        return 0;
    }
    uint32_t cap = book->scratch_cap ? book->scratch_cap * 2 : 64;
    if (cap > 2 * MP_BOOK_MAX_LEVELS + 64)
    {
        return MP_BOOK_ETOOBIG;
    }
    mp_book_parsed_t *s = realloc(book->scratch, (size_t)cap * sizeof(*s));
    if (s == NULL)
    {
        return MP_BOOK_ENOMEM;
    }
    book->scratch = s;
    book->scratch_cap = cap;
    return 0;
}

/* Fast path: a quoted plain price "digits[.digits]" (<= 18 digits) at t[*pos] == '"', parsed
 * in the one pass that finds its end. Returns 1 with *pos past the closing quote, or 0 (the
 * general path decides, from the same position). */
static inline int mp_book_quoted_price(const char *t, size_t len, size_t *pos, mp_key_t *key)
{
    const char *p = t + *pos + 1, *end = t + len, *q = p, *dot = NULL;
    uint64_t m = 0;
    for (; q < end; q++)
    {
        unsigned d = (unsigned)(unsigned char)*q - '0';
        if (d < 10)
        {
            m = m * 10 + d; /* wraps past 19 digits: then rejected below */
        }
        else if (*q == '.' && dot == NULL)
        {
            dot = q;
        }
        else
        {
            break;
        }
    }
    size_t digits = (size_t)(q - p) - (dot != NULL), decimals = dot ? (size_t)(q - dot - 1) : 0;
    if (q >= end || *q != '"' || digits == 0 || digits > 18)
    {
        return 0;
    }
    *key = (mp_key_t)m * MP_BOOK_POW10[18 - decimals];
    *pos = (size_t)(q - t) + 1;
    return 1;
}

/* Fast path: a quoted plain size "digits[.digits]"; sets *zero. As mp_book_quoted_price. */
static inline int mp_book_quoted_size(const char *t, size_t len, size_t *pos, int *zero)
{
    const char *p = t + *pos + 1, *end = t + len, *q = p, *dot = NULL;
    unsigned nonzero = 0;
    for (; q < end; q++)
    {
        unsigned d = (unsigned)(unsigned char)*q - '0';
        if (d < 10)
        {
            nonzero |= d;
        }
        else if (*q == '.' && dot == NULL)
        {
            dot = q;
        }
        else
        {
            break;
        }
    }
    if (q >= end || *q != '"' || (size_t)(q - p) == (dot != NULL))
    {
        return 0; /* not closed by a quote, or no digit */
    }
    *zero = !nonzero;
    *pos = (size_t)(q - t) + 1;
    return 1;
}

/* JSON's number grammar: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static int mp_book_json_number(const char *p, size_t n)
{
    size_t i = 0, d;
    if (i < n && p[i] == '-')
    {
        i++;
    }
    if (i < n && p[i] == '0')
    {
        i++;
    }
    else
    {
        for (d = i; i < n && p[i] >= '0' && p[i] <= '9'; i++)
        {
        }
        if (i == d)
        {
            return 0;
        }
    }
    if (i < n && p[i] == '.')
    {
        for (d = ++i; i < n && p[i] >= '0' && p[i] <= '9'; i++)
        {
        }
        if (i == d)
        {
            return 0;
        }
    }
    if (i < n && (p[i] == 'e' || p[i] == 'E'))
    {
        i++;
        if (i < n && (p[i] == '+' || p[i] == '-'))
        {
            i++;
        }
        for (d = i; i < n && p[i] >= '0' && p[i] <= '9'; i++)
        {
        }
        if (i == d)
        {
            return 0;
        }
    }
    return i == n;
}

/* One scalar of a level at t[*pos] (not whitespace), the general way: a string without
 * escapes or a bare token (numbers). Field 0 is the price, 1 the size, others are kept
 * as text only. Sets *pos past it. */
static int mp_book_parse_field(const char *t, size_t len, size_t *pos, int field,
                               mp_book_parsed_t *out)
{
    size_t i = *pos;
    const char *p;
    size_t n;
    int rc;

    if (t[i] == '"')
    {
        size_t j = i + 1;
        while (j < len && t[j] != '"' && t[j] != '\\' && (unsigned char)t[j] >= ' ')
        {
            j++;
        }
        if (j >= len)
        {
            return MP_BOOK_ESHAPE;
        }
        if (t[j] != '"') /* an escape or a control character: never part of a decimal */
        {
            return field == 0 ? MP_BOOK_EPRICE : field == 1 ? MP_BOOK_ESIZE : MP_BOOK_ESHAPE;
        }
        p = t + i + 1;
        n = j - i - 1;
        *pos = j + 1;
    }
    else
    {
        size_t j = i;
        while (j < len && ((t[j] >= '0' && t[j] <= '9') || (t[j] >= 'a' && t[j] <= 'z')
                           || (t[j] >= 'A' && t[j] <= 'Z') || t[j] == '.' || t[j] == '-'
                           || t[j] == '+'))
        {
            j++;
        }
        if (j == i)
        {
            return MP_BOOK_ESHAPE; /* nested array/object, or nothing */
        }
        p = t + i;
        n = j - i;
        *pos = j;
        /* Stored texts are read back as JSON: a bare token must be a JSON number (or, past
         * price and size, true/false/null). */
        if (!mp_book_json_number(p, n))
        {
            if (field >= 2 && ((n == 4 && (memcmp(p, "true", 4) == 0 || memcmp(p, "null", 4) == 0))
                               || (n == 5 && memcmp(p, "false", 5) == 0)))
            {
                return 0;
            }
            if (field == 0)
            {
                return mp_book_is_nonfinite(p, n) ? MP_BOOK_ENONFINITE : MP_BOOK_EPRICE;
            }
            return field == 1 ? MP_BOOK_ESIZE : MP_BOOK_ESHAPE;
        }
    }
    if (field == 0)
    {
        rc = mp_book_price_fast(p, n, &out->key) ? 0 : mp_book_parse_price(p, n, &out->key);
        if (rc != 0)
        {
            return mp_book_is_nonfinite(p, n) ? MP_BOOK_ENONFINITE : rc;
        }
    }
    else if (field == 1)
    {
        int zero = 0;
        if ((rc = mp_book_parse_size(p, n, &zero)) != 0)
        {
            return rc;
        }
        out->zero = (uint8_t)zero;
    }
    return 0;
}

/*
 * One level at t[*pos] == '[': [scalar, scalar, ...] with at least price and size. Plain
 * quoted decimals (what venues send) take the one-pass fast paths.
 */
static int mp_book_parse_level(mp_book_t *book, const char *t, size_t len, size_t *pos,
                               mp_book_parsed_t *out)
{
    size_t start = *pos, i = *pos + 1;
    int field = 0, rc, zero = 0;

    book->err_off = (int64_t)start;
    for (;;)
    {
        i = mp_book_ws(t, len, i);
        if (i >= len)
        {
            return MP_BOOK_ESHAPE;
        }
        if (field == 0 && t[i] == '"' && mp_book_quoted_price(t, len, &i, &out->key))
        {
        }
        else if (field == 1 && t[i] == '"' && mp_book_quoted_size(t, len, &i, &zero))
        {
            out->zero = (uint8_t)zero;
        }
        else if ((rc = mp_book_parse_field(t, len, &i, field, out)) != 0)
        {
            return rc;
        }
        field++;
        i = mp_book_ws(t, len, i);
        if (i < len && t[i] == ',')
        {
            i++;
            continue;
        }
        if (i < len && t[i] == ']')
        {
            i++;
            break;
        }
        return MP_BOOK_ESHAPE;
    }
    if (field < 2 || i - start > UINT32_MAX)
    {
        return MP_BOOK_ESHAPE;
    }
    out->off = (uint32_t)start;
    out->len = (uint32_t)(i - start);
    *pos = i;
    return 0;
}

#define MP_BOOK_NOT_COMPACT (-100)

/* A quoted plain decimal "digits[.digits]" starting at *pp (past the opening quote): the
 * digits' value (mod 2^64), their count and decimals; *pp ends on the closing quote. */
static inline int mp_book_compact_number(const char **pp, const char *end, uint64_t *m_out,
                                         size_t *digits, size_t *decimals)
{
    const char *p = *pp, *q = p, *dot = NULL;
    uint64_t m = 0;
    for (;; q++)
    {
        if (q >= end)
        {
            return 0;
        }
        unsigned d = (unsigned)(unsigned char)*q - '0';
        if (d < 10)
        {
            m = m * 10 + d;
        }
        else if (*q == '.' && dot == NULL)
        {
            dot = q;
        }
        else
        {
            break;
        }
    }
    *digits = (size_t)(q - p) - (dot != NULL);
    *decimals = dot ? (size_t)(q - dot - 1) : 0;
    *m_out = m;
    *pp = q;
    return *q == '"' && *digits > 0;
}

/*
 * The fast path for what venues send and orjson writes: no whitespace, every level
 * ["price","size"(,"extra")*] with plain quoted decimals (price <= 18 digits), extras
 * without escapes. Returns the level count, an error (scratch growth), or
 * MP_BOOK_NOT_COMPACT for anything else, which mp_book_parse_general then reads (and
 * judges) from the start.
 */
static int64_t mp_book_parse_compact(mp_book_t *book, const char *t, size_t len)
{
    const char *p = t, *end = t + len;
    uint32_t count = 0;
    int rc;

    if (len > UINT32_MAX || p >= end || *p++ != '[')
    {
        return MP_BOOK_NOT_COMPACT;
    }
    for (int side = 0; side < 2; side++)
    {
        if ((side && (p >= end || *p++ != ',')) || p >= end || *p++ != '[')
        {
            return MP_BOOK_NOT_COMPACT;
        }
        if (p < end && *p == ']')
        {
            p++;
            continue;
        }
        for (;;)
        {
            const char *start = p;
            uint64_t m;
            size_t digits, decimals;
            int zero;
            if (end - p < 7 || p[0] != '[' || p[1] != '"')
            {
                return MP_BOOK_NOT_COMPACT;
            }
            p += 2;
            if (!mp_book_compact_number(&p, end, &m, &digits, &decimals) || digits > 18)
            {
                return MP_BOOK_NOT_COMPACT;
            }
            mp_key_t key = (mp_key_t)m * MP_BOOK_POW10[18 - decimals];
            if (end - p < 3 || p[1] != ',' || p[2] != '"')
            {
                return MP_BOOK_NOT_COMPACT;
            }
            p += 3;
            if (!mp_book_compact_number(&p, end, &m, &digits, &decimals))
            {
                return MP_BOOK_NOT_COMPACT;
            }
            zero = m == 0 && digits <= 19; /* more digits wrap m: the general path judges */
            if (digits > 19)
            {
                return MP_BOOK_NOT_COMPACT;
            }
            p++;
            while (p < end && *p == ',') /* extra fields: plain strings */
            {
                if (++p >= end || *p++ != '"')
                {
                    return MP_BOOK_NOT_COMPACT;
                }
                while (p < end && *p != '"' && *p != '\\' && (unsigned char)*p >= ' ')
                {
                    p++;
                }
                if (p >= end || *p++ != '"')
                {
                    return MP_BOOK_NOT_COMPACT;
                }
            }
            if (p >= end || *p++ != ']')
            {
                return MP_BOOK_NOT_COMPACT;
            }
            if ((rc = mp_book_scratch_push(book, count)) != 0)
            {
                return rc;
            }
            mp_book_parsed_t *lv = &book->scratch[count];
            lv->key = side == MP_BOOK_ASKS ? -key : key;
            lv->off = (uint32_t)(start - t);
            lv->len = (uint32_t)(p - start);
            lv->idx = count;
            lv->side = (uint8_t)side;
            lv->zero = (uint8_t)zero;
            count++;
            if (p < end && *p == ',')
            {
                p++;
                continue;
            }
            if (p < end && *p == ']')
            {
                p++;
                break;
            }
            return MP_BOOK_NOT_COMPACT;
        }
    }
    if (p + 1 != end || *p != ']')
    {
        return MP_BOOK_NOT_COMPACT;
    }
    return count;
}

static int64_t mp_book_parse_general(mp_book_t *book, const char *t, size_t len);

/* Parse [[bids...],[asks...]] into book->scratch; returns the level count or an error.
 * Ask keys are negated, so both sides ascend to their best level. */
static int64_t mp_book_parse(mp_book_t *book, const char *t, size_t len)
{
    book->err_off = -1;
    int64_t count = mp_book_parse_compact(book, t, len);
    return count == MP_BOOK_NOT_COMPACT ? mp_book_parse_general(book, t, len) : count;
}

/* Any JSON layout of the level lists (whitespace, numbers, every error told apart). */
static int64_t mp_book_parse_general(mp_book_t *book, const char *t, size_t len)
{
    size_t pos = mp_book_ws(t, len, 0);
    uint32_t count = 0;
    int rc;

    book->err_off = -1;
    if (len > UINT32_MAX)
    {
        return MP_BOOK_ETOOBIG;
    }
    if (pos >= len || t[pos] != '[')
    {
        book->err_off = (int64_t)pos;
        return MP_BOOK_ESHAPE;
    }
    pos++;
    for (int side = 0; side < 2; side++)
    {
        pos = mp_book_ws(t, len, pos);
        if (side == 1)
        {
            if (pos >= len || t[pos] != ',')
            {
                book->err_off = (int64_t)pos;
                return MP_BOOK_ESHAPE;
            }
            pos = mp_book_ws(t, len, pos + 1);
        }
        if (pos >= len || t[pos] != '[')
        {
            book->err_off = (int64_t)pos;
            return MP_BOOK_ESHAPE;
        }
        pos = mp_book_ws(t, len, pos + 1);
        if (pos < len && t[pos] == ']')
        {
            pos++;
            continue;
        }
        for (;;)
        {
            if (pos >= len || t[pos] != '[')
            {
                book->err_off = (int64_t)pos;
                return MP_BOOK_ESHAPE;
            }
            if ((rc = mp_book_scratch_push(book, count)) != 0)
            {
                return rc;
            }
            mp_book_parsed_t *lv = &book->scratch[count];
            lv->side = (uint8_t)side;
            lv->idx = count;
            if ((rc = mp_book_parse_level(book, t, len, &pos, lv)) != 0)
            {
                return rc;
            }
            count++;
            pos = mp_book_ws(t, len, pos);
            if (pos < len && t[pos] == ',')
            {
                pos = mp_book_ws(t, len, pos + 1);
                continue;
            }
            if (pos < len && t[pos] == ']')
            {
                pos++;
                break;
            }
            book->err_off = (int64_t)pos;
            return MP_BOOK_ESHAPE;
        }
    }
    pos = mp_book_ws(t, len, pos);
    if (pos >= len || t[pos] != ']' || mp_book_ws(t, len, pos + 1) != len)
    {
        book->err_off = (int64_t)pos;
        return MP_BOOK_ESHAPE;
    }
    /* asks are ordered by -price so that both sides ascend to their best level */
    for (uint32_t k = 0; k < count; k++)
    {
        if (book->scratch[k].side == MP_BOOK_ASKS)
        {
            book->scratch[k].key = -book->scratch[k].key;
        }
    }
    book->err_off = -1;
    return count;
}

/* ----- sides ---------------------------------------------------------------------------------- */

static inline const char *mp_book_text(const mp_book_level_t *lv)
{
    return lv->len > MP_BOOK_INLINE ? lv->t.heap : lv->t.inl;
}

static inline void mp_book_drop_text(mp_book_level_t *lv)
{
    if (lv->len > MP_BOOK_INLINE)
    {
        free(lv->t.heap);
    }
    lv->len = 0;
}

static int mp_book_set_text(mp_book_level_t *lv, const char *p, uint32_t n)
{
    if (n <= MP_BOOK_INLINE)
    {
        mp_book_drop_text(lv);
        memcpy(lv->t.inl, p, n);
    }
    else
    {
        char *h = lv->len > MP_BOOK_INLINE ? realloc(lv->t.heap, n) : malloc(n);
        if (h == NULL)
        {
            return MP_BOOK_ENOMEM;
        }
        memcpy(h, p, n);
        lv->t.heap = h;
    }
    lv->len = n;
    return 0;
}

static void mp_book_side_free(mp_book_side_t *s)
{
    for (uint32_t i = 0; i < s->n; i++)
    {
        mp_book_drop_text(&s->v[i]);
    }
    free(s->v);
    s->v = NULL;
    s->n = s->cap = 0;
}

static int mp_book_reserve(mp_book_side_t *s, uint64_t want)
{
    if (want <= s->cap)
    {
        return 0;
    }
    if (want > MP_BOOK_MAX_LEVELS)
    {
        return MP_BOOK_ETOOBIG;
    }
    uint64_t cap = s->cap ? s->cap : 16;
    while (cap < want)
    {
        cap *= 2;
    }
    mp_book_level_t *v = realloc(s->v, (size_t)cap * sizeof(*v));
    if (v == NULL)
    {
        return MP_BOOK_ENOMEM;
    }
    s->v = v;
    s->cap = (uint32_t)cap;
    return 0;
}

/* First index whose key is >= key, galloping from the best (last) end first: updates
 * cluster near the top of the book, so this touches few entries (and cache lines). */
static inline uint32_t mp_book_lower_bound(const mp_book_side_t *s, mp_key_t key)
{
    uint32_t lo = 0, hi = s->n, step = 1;
    while (hi > 0) /* every entry at or after hi is >= key */
    {
        uint32_t probe = hi > step ? hi - step : 0;
        if (s->v[probe].key < key)
        {
            lo = probe + 1;
            break;
        }
        hi = probe;
        step *= 2;
    }
    while (lo < hi)
    {
        uint32_t mid = lo + (hi - lo) / 2;
        if (s->v[mid].key < key)
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

/* ----- public --------------------------------------------------------------------------------- */

mp_book_t *mp_book_new(void)
{
    mp_book_t *book = calloc(1, sizeof(*book));
    if (book != NULL)
    {
        book->err_off = -1;
    }
    return book;
}

void mp_book_free(mp_book_t *book)
{
    if (book == NULL)
    {
        return;
    }
    mp_book_side_free(&book->side[0]);
    mp_book_side_free(&book->side[1]);
    free(book->scratch);
    free(book);
}

void mp_book_clear(mp_book_t *book)
{
    for (int s = 0; s < 2; s++)
    {
        mp_book_side_t *side = &book->side[s];
        for (uint32_t i = 0; i < side->n; i++)
        {
            mp_book_drop_text(&side->v[i]);
        }
        side->n = 0;
    }
}

int mp_book_crossed(const mp_book_t *book)
{
    const mp_book_side_t *b = &book->side[MP_BOOK_BIDS], *a = &book->side[MP_BOOK_ASKS];
    return b->n && a->n && b->v[b->n - 1].key >= -a->v[a->n - 1].key;
}

uint32_t mp_book_len(const mp_book_t *book, int side)
{
    return (side == MP_BOOK_BIDS || side == MP_BOOK_ASKS) ? book->side[side].n : 0;
}

int64_t mp_book_error_offset(const mp_book_t *book)
{
    return book->err_off;
}

int mp_book_check(mp_book_t *book, const char *text, size_t len)
{
    int64_t count = mp_book_parse(book, text, len);
    return count < 0 ? (int)count : 0;
}

int mp_book_apply(mp_book_t *book, const char *text, size_t len)
{
    int64_t count = mp_book_parse(book, text, len);
    if (count < 0)
    {
        return (int)count;
    }
    uint32_t per_side[2] = {0, 0};
    for (int64_t k = 0; k < count; k++)
    {
        per_side[book->scratch[k].side]++;
    }
    for (int s = 0; s < 2; s++) /* room for every level to be new: no failure half way */
    {
        int rc = mp_book_reserve(&book->side[s], (uint64_t)book->side[s].n + per_side[s]);
        if (rc != 0)
        {
            return rc;
        }
    }
    for (int64_t k = 0; k < count; k++)
    {
        const mp_book_parsed_t *in = &book->scratch[k];
        mp_book_side_t *s = &book->side[in->side];
        uint32_t i = mp_book_lower_bound(s, in->key);
        int found = i < s->n && s->v[i].key == in->key;
        if (in->zero)
        {
            if (found)
            {
                mp_book_drop_text(&s->v[i]);
                memmove(&s->v[i], &s->v[i + 1], (size_t)(s->n - i - 1) * sizeof(s->v[0]));
                s->n--;
            }
            continue;
        }
        if (!found)
        {
            memmove(&s->v[i + 1], &s->v[i], (size_t)(s->n - i) * sizeof(s->v[0]));
            s->n++;
            s->v[i].key = in->key;
            s->v[i].len = 0;
        }
        if (mp_book_set_text(&s->v[i], text + in->off, in->len) != 0)
        {
            if (!found) /* keep no level without text */
            {
                memmove(&s->v[i], &s->v[i + 1], (size_t)(s->n - i - 1) * sizeof(s->v[0]));
                s->n--;
            }
            return MP_BOOK_ENOMEM;
        }
    }
    return mp_book_crossed(book);
}

static int mp_book_cmp_parsed(const void *x, const void *y)
{
    const mp_book_parsed_t *a = x, *b = y;
    if (a->side != b->side)
    {
        return a->side < b->side ? -1 : 1;
    }
    if (a->key != b->key)
    {
        return a->key < b->key ? -1 : 1;
    }
    return a->idx < b->idx ? -1 : a->idx > b->idx;
}

/* Sort parsed levels by (side, key, input order). The input lists each side in order
 * (parse fills bids then asks), and venues send snapshots best first, which is descending
 * key order here: such a run is reversed instead of sorted. Returns the sides (bit 0 bids,
 * bit 1 asks) whose levels were strictly best first (no repeated price either). */
static int mp_book_sort_side(mp_book_parsed_t *v, uint32_t n)
{
    int best_first = 0;
    for (uint32_t start = 0; start < n;)
    {
        uint32_t end = start + 1, desc = 1, asc = 1;
        for (; end < n && v[end].side == v[start].side; end++)
        {
            desc &= v[end].key < v[end - 1].key;
            asc &= v[end].key > v[end - 1].key;
        }
        if (desc)
        {
            best_first |= 1 << v[start].side;
            for (uint32_t i = start, j = end - 1; i < j; i++, j--)
            {
                mp_book_parsed_t tmp = v[i];
                v[i] = v[j];
                v[j] = tmp;
            }
        }
        else if (!asc)
        {
            qsort(v + start, end - start, sizeof(v[0]), mp_book_cmp_parsed);
        }
        start = end;
    }
    return best_first;
}

int mp_book_load(mp_book_t *book, const char *text, size_t len, int sides)
{
    int64_t count = mp_book_parse(book, text, len);
    if (count < 0)
    {
        return (int)count;
    }
    mp_book_side_t fresh[2] = {{NULL, 0, 0}, {NULL, 0, 0}};
    int rc;
    /* Zero sizes out first (a snapshot's zero level is no removal), then sort by (key,
     * input order) so the last of a repeated price is the one kept. */
    uint32_t kept = 0, given[2] = {0, 0}, kept_side[2] = {0, 0};
    for (int64_t k = 0; k < count; k++)
    {
        const mp_book_parsed_t *in = &book->scratch[k];
        given[in->side]++;
        if (!in->zero && (sides >> in->side & 1))
        {
            kept_side[in->side]++;
            book->scratch[kept++] = *in;
        }
    }
    int as_given = mp_book_sort_side(book->scratch, kept);
    for (int s = 0; s < 2; s++)
    {
        if (kept_side[s] != given[s]) /* zero sizes were dropped */
        {
            as_given &= ~(1 << s);
        }
        else if (given[s] == 0) /* empty: as given too */
        {
            as_given |= 1 << s;
        }
    }
    for (uint32_t k = 0; k < kept; k++)
    {
        const mp_book_parsed_t *in = &book->scratch[k];
        if (k + 1 < kept && book->scratch[k + 1].key == in->key && book->scratch[k + 1].side ==
            in->side)
        {
            continue; /* a later level for the same price follows */
        }
        mp_book_side_t *s = &fresh[in->side];
        rc = mp_book_reserve(s, (uint64_t)s->n + 1);
        if (rc == 0)
        {
            s->v[s->n].len = 0;
            rc = mp_book_set_text(&s->v[s->n], text + in->off, in->len);
        }
        if (rc != 0)
        {
            mp_book_side_free(&fresh[0]);
            mp_book_side_free(&fresh[1]);
            return rc;
        }
        s->v[s->n++].key = in->key;
    }
    for (int s = 0; s < 2; s++)
    {
        if (sides >> s & 1)
        {
            mp_book_side_free(&book->side[s]);
            book->side[s] = fresh[s];
        }
    }
    return mp_book_crossed(book) | (as_given & sides) << 1;
}

int64_t mp_book_top(const mp_book_t *book, int side, uint32_t n, char *out, size_t cap)
{
    if (side != MP_BOOK_BIDS && side != MP_BOOK_ASKS)
    {
        return 0;
    }
    const mp_book_side_t *s = &book->side[side];
    uint32_t take = n < s->n ? n : s->n;
    size_t need = 2 + (take ? take - 1 : 0);
    for (uint32_t k = 0; k < take; k++)
    {
        need += s->v[s->n - 1 - k].len;
    }
    if (need > cap)
    {
        return (int64_t)need;
    }
    char *w = out;
    *w++ = '[';
    for (uint32_t k = 0; k < take; k++)
    {
        const mp_book_level_t *lv = &s->v[s->n - 1 - k];
        if (k)
        {
            *w++ = ',';
        }
        memcpy(w, mp_book_text(lv), lv->len);
        w += lv->len;
    }
    *w++ = ']';
    return (int64_t)need;
}
