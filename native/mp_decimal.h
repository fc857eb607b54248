/*
 * mp_decimal: exact decimal text -> int64 fixed point, in batches (one FFI call per event).
 *
 * Venues send prices and sizes as decimal strings. The ring carries them as int64 mantissas
 * with one exponent per column per record (value = mantissa * 10^exp), chosen as the largest
 * number of decimals in that column, so every value is exact and none goes through a float.
 * A column that does not fit int64 at that scale only because of trailing zeros after the
 * decimal point ("922337204.0000000000") gets the fewest decimals that write all its values
 * exactly instead (supervisor.codec.fixed_point is the same rule for one value).
 */
#ifndef MP_DECIMAL_H
#define MP_DECIMAL_H

#include <stddef.h>
#include <stdint.h>

enum mp_decimal_result_enum
{
    MP_DECIMAL_EINVAL = -1,   /* a field is not a decimal number */
    MP_DECIMAL_EOVERFLOW = -2,/* a scaled value does not fit int64 */
    MP_DECIMAL_ETOOMANY = -3, /* more rows than the output holds */
    MP_DECIMAL_ESHAPE = -4    /* field count is not a multiple of stride, or cols > stride */
};

#define MP_DECIMAL_MAX_COLS 4

/*
 * Parse rows of decimal fields.
 *
 * buf/len:   ASCII text whose fields are JSON strings or bare runs, separated by runs of ' ',
 *            ',', '[' or ']': plain "7.61 6 7.608 161" or the JSON of arrays
 *            [[["7.61","6"]],[]] (a string's contents are one field, "" included); rows of
 *            `stride` fields each, of which the first `cols` are converted (extra venue fields
 *            skipped).
 * out:       row-major int64 mantissas, max_rows * cols entries.
 * exps:      per column exponent (-127..0), written on success.
 * Returns the number of rows (>= 0) or a negative mp_decimal_result_enum value.
 */
int mp_decimal_rows(const char *buf, size_t len, int stride, int cols,
                    int64_t *out, size_t max_rows, int8_t *exps);

/*
 * Encode a ring book body at out + off (8-byte aligned):
 *   uint32 n_bids | uint32 n_asks | int8 price_exp | int8 size_exp | 6 bytes 0 |
 *   (n_bids + n_asks) x { int64 price, int64 size }
 * from the levels' text (rows of `stride` fields, price and size first), in one call.
 * Returns the end offset (> off) or a negative mp_decimal_result_enum value.
 */
int64_t mp_book_body_encode(const char *text, size_t len, int stride, uint32_t n_bids,
                            uint32_t n_asks, uint8_t *out, size_t off, size_t cap);

#endif
