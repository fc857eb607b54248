/*
 * Benchmark loops for bench/ring.py: the ring's C-level rate and latency with no Python per
 * record. They use only the public API, so they measure what a C caller would get.
 */
#define _GNU_SOURCE
#include "mp_ring_internal.h"

#include <stdlib.h>
#include <string.h>

enum
{
    MP_RING_BENCH_MAX_BATCH = 1024
};

static const int64_t mp_ring_bench_idle_limit_ns = INT64_C(5000000000);

/* Write `count` records of `size` bytes in batches; if max_lag > 0, pause while the slowest
 * attached reader is more than max_lag bytes behind (bench flow control, never in production).
 * Payload bytes 0..7 carry the record's index. Returns records written or a negative result. */
int64_t mp_ring_bench_write(mp_ring_writer_t *writer, int32_t size, int64_t count,
    int32_t batch, int64_t max_lag)
{
    if (size < 8 || size > writer->ring->max_message_length || batch < 1 ||
        batch > MP_RING_BENCH_MAX_BATCH)
    {
        return mp_ring_fail(MP_RING_ERROR_ARGUMENT, "bench: bad size or batch");
    }
    uint8_t *data = calloc((size_t)batch, (size_t)size);
    int32_t lengths[MP_RING_BENCH_MAX_BATCH];
    if (data == NULL)
    {
        return MP_RING_ERROR_SYSTEM;
    }
    for (int32_t i = 0; i < batch; i++)
    {
        lengths[i] = size;
    }
    int64_t written = 0;
    int64_t next_check = 0;
    while (written < count)
    {
        int32_t n = count - written < batch ? (int32_t)(count - written) : batch;
        if (max_lag > 0 && written >= next_check)
        {
            /* Not every batch: reading the reader's cursor pulls its cache line over. */
            next_check = written + 1024;
            while (mp_ring_writer_max_lag(writer) > max_lag)
            {
                mp_ring_cpu_relax();
            }
        }
        for (int32_t i = 0; i < n; i++)
        {
            int64_t index = written + i;
            memcpy(data + (size_t)i * (size_t)size, &index, sizeof(index));
        }
        int result = n == 1 ? mp_ring_write(writer, 1, data, size)
                            : mp_ring_write_batch(
                                  writer, 1, data, (int64_t)n * size, lengths, n);
        if (result != MP_RING_SUCCESS)
        {
            free(data);
            return result;
        }
        written += n;
    }
    free(data);
    return written;
}

/* One record every interval_ns, each carrying CLOCK_MONOTONIC at send time in bytes 0..7. */
int64_t mp_ring_bench_write_paced(mp_ring_writer_t *writer, int32_t size, int64_t count,
    int64_t interval_ns)
{
    if (size < 8 || size > writer->ring->max_message_length)
    {
        return mp_ring_fail(MP_RING_ERROR_ARGUMENT, "bench: bad size");
    }
    uint8_t *data = calloc(1, (size_t)size);
    if (data == NULL)
    {
        return MP_RING_ERROR_SYSTEM;
    }
    int64_t next = mp_ring_monotonic_ns();
    for (int64_t i = 0; i < count; i++)
    {
        int64_t now;
        while ((now = mp_ring_monotonic_ns()) < next)
        {
            mp_ring_cpu_relax();
        }
        next += interval_ns;
        memcpy(data, &now, sizeof(now));
        mp_ring_write(writer, 1, data, size);
    }
    free(data);
    return count;
}

/* Read until `count` records arrived (or 5 s without any). If latencies is not NULL, store
 * now - bytes 0..7 of each record (needs a paced writer). Returns records read. */
int64_t mp_ring_bench_read(mp_ring_reader_t *reader, mp_ring_batch_t *batch, int64_t count,
    int64_t spin_ns, int64_t *latencies, int64_t *lost)
{
    int64_t seen = 0;
    int64_t idle_since = mp_ring_monotonic_ns();
    *lost = 0;
    while (seen < count)
    {
        int32_t n = mp_ring_reader_read(reader, batch);
        if (n < 0)
        {
            return n;
        }
        *lost += batch->lost;
        if (n == 0)
        {
            int64_t now = mp_ring_monotonic_ns();
            if (now - idle_since > mp_ring_bench_idle_limit_ns)
            {
                break;
            }
            mp_ring_reader_wait(reader, 100 * 1000 * 1000, spin_ns);
            continue;
        }
        if (latencies != NULL)
        {
            int64_t now = mp_ring_monotonic_ns();
            for (int32_t i = 0; i < n && seen + i < count; i++)
            {
                int64_t sent;
                memcpy(&sent, batch->data + batch->offsets[i], sizeof(sent));
                latencies[seen + i] = now - sent;
            }
        }
        seen += n;
        idle_since = mp_ring_monotonic_ns();
    }
    return seen;
}

/* Spin on CLOCK_MONOTONIC for duration_ns and store every gap longer than threshold_ns
 * between two consecutive reads (the CPU was taken away: an interrupt, the hypervisor), up
 * to max_gaps of them. Returns the number stored; with the duration, it bounds the latency
 * any reader on this CPU can show at that moment. */
int64_t mp_ring_bench_stalls(int64_t duration_ns, int64_t threshold_ns, int64_t *gaps,
    int64_t max_gaps)
{
    int64_t count = 0;
    int64_t previous = mp_ring_monotonic_ns();
    const int64_t end = previous + duration_ns;
    while (previous < end)
    {
        int64_t now = mp_ring_monotonic_ns();
        if (now - previous > threshold_ns && count < max_gaps)
        {
            gaps[count++] = now - previous;
        }
        previous = now;
    }
    return count;
}
