#include "mp_decimal.h"
#include "mp_text.h"

#include <string.h>

/* One field's digits: mantissa before scaling and its number of decimals (may be < 0). */
typedef struct mp_decimal_field_stct
{
    int64_t mantissa;
    int decimals;
}
mp_decimal_field_t;

static const int64_t MP_POW10[19] = {
    1LL, 10LL, 100LL, 1000LL, 10000LL, 100000LL, 1000000LL, 10000000LL, 100000000LL,
    1000000000LL, 10000000000LL, 100000000000LL, 1000000000000LL, 10000000000000LL,
    100000000000000LL, 1000000000000000LL, 10000000000000000LL, 100000000000000000LL,
    1000000000000000000LL
};

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
            if (m > (UINT64_C(1) << 62) / 10)
            {
                return MP_DECIMAL_EOVERFLOW;
            }
            m = m * 10 + (uint64_t)(c - '0');
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
    int e;
    int rc = mp_text_exponent(p, n, &i, 400, &e);
    if (rc != MP_TEXT_OK)
    {
        return rc == MP_TEXT_ERANGE ? MP_DECIMAL_EOVERFLOW : MP_DECIMAL_EINVAL;
    }
    decimals -= e;
    if (i != n)
    {
        return MP_DECIMAL_EINVAL;
    }
    f->mantissa = neg ? -(int64_t)m : (int64_t)m;
    f->decimals = decimals;
    return 0;
}

/* Scale m by 10^k (k >= 0) with overflow check. */
static int mp_decimal_scale(int64_t m, int k, int64_t *out)
{
    if (k > 18)
    {
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
 * space-separated text or the JSON text of nested string arrays (orjson.dumps of levels). */
static inline int mp_decimal_is_sep(char c)
{
    return c == ' ' || c == '"' || c == ',' || c == '[' || c == ']';
}

/* Next token in buf[*pos..len): sets *start and *n, returns 0 at the end of input. */
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
    while (j < len && !mp_decimal_is_sep(buf[j]))
    {
        j++;
    }
    *start = buf + i;
    *n = j - i;
    *pos = j;
    return 1;
}

int mp_decimal_rows(const char *buf, size_t len, int stride, int cols,
                    int64_t *out, size_t max_rows, int8_t *exps)
{
    int max_dec[MP_DECIMAL_MAX_COLS] = {-1000, -1000, -1000, -1000};
    int dec_of[MP_DECIMAL_MAX_COLS];
    size_t field = 0, row = 0, pos = 0, n = 0;
    const char *start = NULL;

    if (cols < 1 || cols > MP_DECIMAL_MAX_COLS || stride < cols)
    {
        return MP_DECIMAL_ESHAPE;
    }
    /* Pass 1: parse every converted field into out (unscaled) and find each column's
     * largest decimals count. Pass 2 re-parses to scale, which keeps this allocation-free;
     * fields are short, so the second parse is cheap. */
    while (mp_decimal_next_token(buf, len, &pos, &start, &n))
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
    if (field % (size_t)stride != 0)
    {
        return MP_DECIMAL_ESHAPE;
    }
    for (int c = 0; c < cols; c++)
    {
        /* Exponent <= 0: integers with trailing zeros (decimals < 0) are scaled up instead. */
        dec_of[c] = max_dec[c] < 0 ? 0 : max_dec[c];
        if (dec_of[c] > 127)
        {
            return MP_DECIMAL_EOVERFLOW;
        }
        exps[c] = (int8_t)(-dec_of[c]);
    }
    /* Pass 2: scale each mantissa to its column's exponent. */
    pos = 0;
    field = 0;
    row = 0;
    while (mp_decimal_next_token(buf, len, &pos, &start, &n))
    {
        int col = (int)(field % (size_t)stride);
        if (col < cols)
        {
            mp_decimal_field_t f;
            int rc = mp_decimal_parse_field(start, n, &f);
            if (rc == 0)
            {
                rc = mp_decimal_scale(f.mantissa, dec_of[col] - f.decimals,
                                      &out[row * (size_t)cols + (size_t)col]);
            }
            if (rc != 0)
            {
                return rc;
            }
        }
        field++;
        if (col == stride - 1)
        {
            row++;
        }
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
