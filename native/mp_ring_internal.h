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

/*
 * Body of a bounded spin-wait. Deliberately not PAUSE: under KVM, a loop of PAUSEs triggers
 * pause-loop exiting and the host deschedules the spinning vCPU. Measured on the 2-vCPU KVM
 * guest this was built on, a 1 ms spin with PAUSE gave a 0.6-1.9 ms median latency, without
 * it 0.2-30 us. Spins are bounded by the caller's spin_ns, and these machines have no SMT
 * sibling to yield to. The barrier keeps the compiler from hoisting the polled load.
 */
static inline void mp_ring_cpu_relax(void)
{
    __asm__ __volatile__("" ::: "memory");
}

#endif /* MP_RING_INTERNAL_H */
