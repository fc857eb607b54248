/*
 * mp_text: text scanning shared by the decimal kernels (mp_decimal.c, mp_book.c).
 */
#ifndef MP_TEXT_H
#define MP_TEXT_H

#include <stddef.h>

enum mp_text_result_enum
{
    MP_TEXT_OK = 0,
    MP_TEXT_EINVAL = -1, /* an 'e' with no digits after it */
    MP_TEXT_ERANGE = -2  /* an exponent beyond the caller's limit */
};

/*
 * An optional exponent at p[*i]: 'e' or 'E', an optional sign, digits. Sets *exp10 to its
 * value (0 when there is none) and moves *i past it. A magnitude above `limit` (checked
 * digit by digit, so it never overflows) is MP_TEXT_ERANGE.
 */
static inline int mp_text_exponent(const char *p, size_t n, size_t *i, int limit, int *exp10)
{
    size_t j = *i;
    int neg = 0, e = 0, digits = 0;
    *exp10 = 0;
    if (j >= n || (p[j] != 'e' && p[j] != 'E'))
    {
        return MP_TEXT_OK;
    }
    j++;
    if (j < n && (p[j] == '-' || p[j] == '+'))
    {
        neg = p[j] == '-';
        j++;
    }
    for (; j < n && p[j] >= '0' && p[j] <= '9'; j++)
    {
        if (e > limit)
        {
            return MP_TEXT_ERANGE;
        }
        e = e * 10 + (p[j] - '0');
        digits++;
    }
    if (digits == 0)
    {
        return MP_TEXT_EINVAL;
    }
    *exp10 = neg ? -e : e;
    *i = j;
    return MP_TEXT_OK;
}

#endif
