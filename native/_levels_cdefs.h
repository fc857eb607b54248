/* cffi cdef for supervisor._levels (kept in sync with mp_levels.h: the build includes the
 * header, so a mismatch fails to compile). */
enum mp_levels_result_enum
{
    MP_LEVELS_ENOMEM = -1,
    MP_LEVELS_EINVAL = -2
};

typedef struct mp_levels_side_stct
{
    double *keys;
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
int32_t mp_levels_apply(mp_levels_book_t *book, const int64_t *vals, int32_t n_bids,
                        int32_t n_asks, int32_t price_exp, int32_t size_exp, int32_t load);
int32_t mp_levels_apply_f(mp_levels_book_t *book, const double *vals, int32_t n_bids,
                          int32_t n_asks, int32_t load);
int32_t mp_levels_top(const mp_levels_book_t *book, double *out);
double mp_levels_depth(const mp_levels_book_t *book, int32_t side, int32_t n);
int32_t mp_levels_copy(const mp_levels_book_t *book, int32_t side, double *out, int32_t max);
