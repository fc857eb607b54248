/* cffi cdef for supervisor._kernels (kept in sync with mp_decimal.h by tests). */
int mp_decimal_rows(const char *buf, size_t len, int stride, int cols,
                    int64_t *out, size_t max_rows, int8_t *exps);
int64_t mp_book_body_encode(const char *text, size_t len, int stride, uint32_t n_bids,
                            uint32_t n_asks, uint8_t *out, size_t off, size_t cap);
