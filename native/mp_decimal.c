#include "mp_decimal.h"
#include "mp_text.h"

#include <string.h>

/* One field's digits. The text's value is mantissa * 10^(zeros - decimals): `decimals` is the
 * number of decimals the text writes (may be < 0 with an exponent), `zeros` the trailing zero
 * digits left out of `mantissa` when the digits as written exceed int64 (padding such as
 * "922337204.0000000000"; 0 otherwise). The scale step decides what fits (mp_decimal_rows). */
typedef struct mp_decimal_field_stct
{
    int64_t mantissa;
    int decimals;
    int zeros;
}
mp_decimal_field_t;

/* |INT64_MIN|: the largest magnitude a mantissa may reach while it is parsed. */
#define MP_DECIMAL_MAG_MAX (UINT64_C(1) << 63)

static const int64_t MP_POW10[19] = {
    1LL, 10LL, 100LL, 1000LL, 10000LL, 100000LL, 1000000LL, 10000000LL, 100000000LL,
    1000000000LL, 10000000000LL, 100000000000LL, 1000000000000LL, 10000000000000LL,
    100000000000000LL, 1000000000000000LL, 10000000000000000LL, 100000000000000000LL,
    1000000000000000000LL
};

/* The optional exponent after the digits at p[*i], and the end of the field. */
static inline int mp_decimal_parse_tail(const char *p, size_t n, size_t i, int *decimals)
{
    int e;
    int rc = mp_text_exponent(p, n, &i, 400, &e);
    if (rc != MP_TEXT_OK)
    {
        return rc == MP_TEXT_ERANGE ? MP_DECIMAL_EOVERFLOW : MP_DECIMAL_EINVAL;
    }
    *decimals -= e;
    return i == n ? 0 : MP_DECIMAL_EINVAL;
}

/* Store |m| <= 2^63 with its sign: 2^63 fits int64 only as a negative value. */
static inline int mp_decimal_signed(uint64_t m, int neg, int64_t *out)
{
    if (m > MP_DECIMAL_MAG_MAX || (!neg && m == MP_DECIMAL_MAG_MAX))
    {
        return MP_DECIMAL_EOVERFLOW;
    }
    *out = neg ? (int64_t)(0 - m) : (int64_t)m; /* 0 - 2^63 wraps to INT64_MIN */
    return 0;
}

/* The slow path of mp_decimal_parse_field, for digits beyond int64 as written: zero digits
 * are multiplied in only when a nonzero digit follows, so trailing ones are left out. */
__attribute__((cold, noinline))
static int mp_decimal_parse_wide(const char *p, size_t n, mp_decimal_field_t *f)
{
    size_t i = 0;
    int neg = 0, decimals = 0, seen_dot = 0, zeros = 0;
    uint64_t m = 0; /* the digits before the last `zeros` zero digits */

    if (i < n && (p[i] == '-' || p[i] == '+'))
    {
        neg = p[i] == '-';
        i++;
    }
    for (; i < n; i++)
    {
        char c = p[i];
        if (c == '0')
        {
            zeros++;
            decimals += seen_dot;
        }
        else if (c >= '1' && c <= '9')
        {
            if (m != 0 && zeros != 0
                && (zeros > 18 || __builtin_mul_overflow(m, (uint64_t)MP_POW10[zeros], &m)))
            {
                return MP_DECIMAL_EOVERFLOW;
            }
            if (m > MP_DECIMAL_MAG_MAX / 10)
            {
                return MP_DECIMAL_EOVERFLOW;
            }
            m = m * 10 + (uint64_t)(c - '0'); /* < 2^64: no wrap; range checked at the end */
            zeros = 0;
            decimals += seen_dot;
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
    int rc = mp_decimal_parse_tail(p, n, i, &decimals);
    if (rc == 0)
    {
        rc = mp_decimal_signed(m, neg, &f->mantissa);
    }
    f->decimals = decimals;
    f->zeros = zeros;
    return rc;
}

/* Parse [-]digits[.digits][e[+-]digits] in p[0..n). Returns 0 or MP_DECIMAL_E*. */
static int mp_decimal_parse_field(const char *p, size_t n, mp_decimal_field_t *f)
{
    size_t i = 0;
    int neg = 0, digits = 0, decimals = 0, seen_dot = 0;
    uint64_t m = 0;

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
            if (m > MP_DECIMAL_MAG_MAX / 10)
            {
                return mp_decimal_parse_wide(p, n, f); /* e.g. padded with zeros */
            }
            m = m * 10 + (uint64_t)(c - '0'); /* <= 2^63 + 9: no wrap */
            digits++;
            decimals += seen_dot;
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
        return MP_DECIMAL_EINVAL;
    }
    if (m > MP_DECIMAL_MAG_MAX)
    {
        return mp_decimal_parse_wide(p, n, f);
    }
    int rc = mp_decimal_parse_tail(p, n, i, &decimals);
    if (rc == 0)
    {
        rc = mp_decimal_signed(m, neg, &f->mantissa);
    }
    f->decimals = decimals;
    f->zeros = 0;
    return rc;
}

/* The fewest decimals that write the field exactly (trailing zeros stripped; 0 for a zero).
 * May be < 0: the column exponent is never above 0. */
static int mp_decimal_shortest(const mp_decimal_field_t *f)
{
    int64_t m = f->mantissa;
    int d = f->decimals - f->zeros;
    if (m == 0)
    {
        return 0;
    }
    while (m % 10 == 0)
    {
        m /= 10;
        d--;
    }
    return d;
}

/* Scale m by 10^k with overflow check. k < 0 only at a column's fallback scale, which is
 * never below a value's shortest form: the division drops trailing zeros, exactly. */
static int mp_decimal_scale(int64_t m, int k, int64_t *out)
{
    if ((unsigned)k > 18)
    {
        if (k < 0 && k >= -18)
        {
            *out = m / MP_POW10[-k];
            return 0;
        }
        if (m != 0)
        {
            return MP_DECIMAL_EOVERFLOW;
        }
        *out = 0;
        return 0;
    }
    int64_t r;
    if (__builtin_mul_overflow(m, MP_POW10[k], &r))
    {
        return MP_DECIMAL_EOVERFLOW;
    }
    *out = r;
    return 0;
}

/* Separators between fields: spaces and JSON punctuation, so the input may be plain
 * space-separated text or the JSON text of nested arrays (orjson.dumps of levels). */
static inline int mp_decimal_is_sep(char c)
{
    return c == ' ' || c == ',' || c == '[' || c == ']';
}

/* Next field in buf[*pos..len): the contents of a JSON string (so "" is an empty field and
 * " 5" or "5,1" stay one field, which then fails to parse), or a bare run up to a separator
 * (plain text, JSON numbers). Sets *start and *n; returns 1, 0 at the end of input, or
 * MP_DECIMAL_EINVAL for a string with an escape or no closing quote (never a decimal, and
 * skipping it could misalign the fields after it). */
static inline int mp_decimal_next_token(const char *buf, size_t len, size_t *pos,
                                        const char **start, size_t *n)
{
    size_t i = *pos;
    while (i < len && mp_decimal_is_sep(buf[i]))
    {
        i++;
    }
    if (i >= len)
    {
        *pos = i;
        return 0;
    }
    size_t j = i;
    if (buf[i] == '"')
    {
        for (j = ++i; j < len && buf[j] != '"'; j++)
        {
            if (buf[j] == '\\')
            {
                return MP_DECIMAL_EINVAL;
            }
        }
        if (j >= len)
        {
            return MP_DECIMAL_EINVAL;
        }
        *pos = j + 1;
    }
    else
    {
        while (j < len && !mp_decimal_is_sep(buf[j]) && buf[j] != '"')
        {
            j++;
        }
        *pos = j;
    }
    *start = buf + i;
    *n = j - i;
    return 1;
}

/* Pass 2 of mp_decimal_rows: scale every converted field to its column's decimals. Returns 0,
 * or MP_DECIMAL_EOVERFLOW with *bad_col set to the column of the first value that does not
 * fit. Fields were all parsed once already, so parsing cannot fail here. */
static int mp_decimal_scale_rows(const char *buf, size_t len, int stride, int cols,
                                 int64_t *out, const int *dec_of, int *bad_col)
{
    size_t field = 0, row = 0, pos = 0, n = 0;
    const char *start = NULL;

    while (mp_decimal_next_token(buf, len, &pos, &start, &n) > 0)
    {
        int col = (int)(field % (size_t)stride);
        if (col < cols)
        {
            mp_decimal_field_t f;
            int rc = mp_decimal_parse_field(start, n, &f);
            if (rc == 0)
            {
                rc = mp_decimal_scale(f.mantissa, dec_of[col] - f.decimals + f.zeros,
                                      &out[row * (size_t)cols + (size_t)col]);
            }
            if (rc != 0)
            {
                *bad_col = col;
                return rc;
            }
        }
        field++;
        if (col == stride - 1)
        {
            row++;
        }
    }
    return 0;
}

/* The fewest decimals (>= 0) that write every value of column `col` exactly. */
__attribute__((cold, noinline))
static int mp_decimal_column_shortest(const char *buf, size_t len, int stride, int col)
{
    size_t field = 0, pos = 0, n = 0;
    const char *start = NULL;
    int best = 0;

    while (mp_decimal_next_token(buf, len, &pos, &start, &n) > 0)
    {
        mp_decimal_field_t f;
        if ((int)(field % (size_t)stride) == col && mp_decimal_parse_field(start, n, &f) == 0
            && mp_decimal_shortest(&f) > best)
        {
            best = mp_decimal_shortest(&f);
        }
        field++;
    }
    return best;
}

int mp_decimal_rows(const char *buf, size_t len, int stride, int cols,
                    int64_t *out, size_t max_rows, int8_t *exps)
{
    int max_dec[MP_DECIMAL_MAX_COLS] = {-1000, -1000, -1000, -1000};
    int dec_of[MP_DECIMAL_MAX_COLS];
    int shortest[MP_DECIMAL_MAX_COLS] = {0, 0, 0, 0};
    size_t field = 0, row = 0, pos = 0, n = 0;
    const char *start = NULL;
    int token;

    if (cols < 1 || cols > MP_DECIMAL_MAX_COLS || stride < cols)
    {
        return MP_DECIMAL_ESHAPE;
    }
    /* Pass 1: parse every converted field and find each column's largest decimals count.
     * Pass 2 re-parses to scale, which keeps this allocation-free; fields are short, so the
     * second parse is cheap. */
    while ((token = mp_decimal_next_token(buf, len, &pos, &start, &n)) > 0)
    {
        int col = (int)(field % (size_t)stride);
        if (col < cols)
        {
            mp_decimal_field_t f;
            int rc;
            if (row >= max_rows)
            {
                return MP_DECIMAL_ETOOMANY;
            }
            if ((rc = mp_decimal_parse_field(start, n, &f)) != 0)
            {
                return rc;
            }
            if (f.decimals > max_dec[col])
            {
                max_dec[col] = f.decimals;
            }
        }
        field++;
        if (col == stride - 1)
        {
            row++;
        }
    }
    if (token < 0)
    {
        return token;
    }
    if (field % (size_t)stride != 0)
    {
        return MP_DECIMAL_ESHAPE;
    }
    /* A column's exponent is minus its largest written decimals count (never above 0:
     * integers with trailing zeros, decimals < 0, are scaled up instead). When a value does
     * not fit int64 at that scale (or the count int8), the column falls back to the fewest
     * decimals that write all its values exactly ("922337204.0000000000" is 922337204e0);
     * if that does not fit either, nothing does. */
    for (int c = 0; c < cols; c++)
    {
        dec_of[c] = max_dec[c] < 0 ? 0 : max_dec[c];
        if (dec_of[c] > 127)
        {
            shortest[c] = 1;
            dec_of[c] = mp_decimal_column_shortest(buf, len, stride, c);
            if (dec_of[c] > 127)
            {
                return MP_DECIMAL_EOVERFLOW;
            }
        }
    }
    /* Pass 2: scale each mantissa to its column's exponent; again after a fallback. */
    for (;;)
    {
        int bad_col = 0;
        int rc = mp_decimal_scale_rows(buf, len, stride, cols, out, dec_of, &bad_col);
        if (rc == 0)
        {
            break;
        }
        if (rc != MP_DECIMAL_EOVERFLOW || shortest[bad_col])
        {
            return rc;
        }
        shortest[bad_col] = 1;
        dec_of[bad_col] = mp_decimal_column_shortest(buf, len, stride, bad_col);
    }
    for (int c = 0; c < cols; c++)
    {
        exps[c] = (int8_t)(-dec_of[c]);
    }
    return (int)row;
}

int64_t mp_book_body_encode(const char *text, size_t len, int stride, uint32_t n_bids,
                            uint32_t n_asks, uint8_t *out, size_t off, size_t cap)
{
    size_t rows = (size_t)n_bids + (size_t)n_asks;
    size_t end = off + 16 + 16 * rows;
    int8_t exps[2] = {0, 0};
    int n = 0;

    if (end > cap || (off & 7) != 0)
    {
        return MP_DECIMAL_ETOOMANY;
    }
    if (rows > 0)
    {
        n = mp_decimal_rows(text, len, stride, 2, (int64_t *)(out + off + 16), rows, exps);
        if (n < 0)
        {
            return n;
        }
        if ((size_t)n != rows)
        {
            return MP_DECIMAL_ESHAPE;
        }
    }
    memcpy(out + off, &n_bids, 4);
    memcpy(out + off + 4, &n_asks, 4);
    out[off + 8] = (uint8_t)exps[0];
    out[off + 9] = (uint8_t)exps[1];
    memset(out + off + 10, 0, 6);
    return (int64_t)end;
}
