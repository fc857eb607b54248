/* Helpers shared by the mp_ring translation units; not part of the cffi surface. */
#ifndef MP_RING_INTERNAL_H
#define MP_RING_INTERNAL_H

#include "mp_ring.h"

#if defined(__GNUC__)
#define MP_RING_PRINTF_FORMAT __attribute__((format(printf, 2, 3)))
#else
#define MP_RING_PRINTF_FORMAT
#endif

/* Record a message for mp_ring_last_error() and return result. */
int mp_ring_fail(int result, const char *format, ...) MP_RING_PRINTF_FORMAT;

/* Check the framing of [from, to); see mp_ring.c. */
int mp_ring_walk(const mp_ring_t *ring, int64_t from, int64_t to, int64_t *next_seq,
    int64_t *latest);

/* Bump the futex word and wake every sleeper if the sleepers flag is set. */
void mp_ring_wake(mp_ring_t *ring);

static inline int32_t mp_ring_max_record_length(const mp_ring_t *ring)
{
    return ring->max_message_length + MP_RING_RECORD_HEADER_LENGTH;
}

static inline void mp_ring_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

#endif /* MP_RING_INTERNAL_H */
