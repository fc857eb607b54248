/* cffi cdef for supervisor._kernels (kept in sync with mp_decimal.h and mp_book.h). */
int mp_decimal_rows(const char *buf, size_t len, int stride, int cols,
                    int64_t *out, size_t max_rows, int8_t *exps);
int64_t mp_book_body_encode(const char *text, size_t len, int stride, uint32_t n_bids,
                            uint32_t n_asks, uint8_t *out, size_t off, size_t cap);

/* mp_book.h */
enum mp_book_result_enum
{
    MP_BOOK_ESHAPE = -1,
    MP_BOOK_EPRICE = -2,
    MP_BOOK_ENONFINITE = -3,
    MP_BOOK_ERANGE = -4,
    MP_BOOK_ESIZE = -5,
    MP_BOOK_ENOMEM = -6,
    MP_BOOK_ETOOBIG = -7
};
#define MP_BOOK_MAX_LEVELS 4000000
#define MP_BOOK_BIDS 0
#define MP_BOOK_ASKS 1
typedef struct mp_book_stct mp_book_t;
mp_book_t *mp_book_new(void);
void mp_book_free(mp_book_t *book);
void mp_book_clear(mp_book_t *book);
int mp_book_load(mp_book_t *book, const char *text, size_t len, int sides);
int mp_book_apply(mp_book_t *book, const char *text, size_t len);
int mp_book_check(mp_book_t *book, const char *text, size_t len);
int64_t mp_book_error_offset(const mp_book_t *book);
int mp_book_crossed(const mp_book_t *book);
uint32_t mp_book_len(const mp_book_t *book, int side);
int64_t mp_book_top(const mp_book_t *book, int side, uint32_t n, char *out, size_t cap);
