/*
 * mp_ring readers: durable named slots, batched copy-then-validate reads, the futex wait, and
 * the stats snapshots. See mp_ring.h for the protocol.
 */
#define _GNU_SOURCE
#include "mp_ring_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <linux/futex.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

enum
{
    MP_RING_READ_ATTEMPTS = 16,   /* lapped again while catching up: give up for this call */
    MP_RING_LATEST_ATTEMPTS = 4096,
    MP_RING_SNAPSHOT_ATTEMPTS = 64
};

/*
 * True when nothing the caller read at or after `position` can have been overwritten: the
 * writer stores tail_intent before it overwrites anything, so if the intent it announced
 * stays within one capacity of `position`, the bytes read before this call are intact.
 */
static inline int mp_ring_reader_validate(const mp_ring_t *ring, int64_t position)
{
    /* pairs with: the release fence after the tail_intent store in mp_ring_writer_claim */
    atomic_thread_fence(memory_order_acquire);
    /* pairs with: the release store of tail_intent in mp_ring_writer_claim */
    int64_t intent =
        atomic_load_explicit(&ring->descriptor->writer.tail_intent, memory_order_acquire);
    return position + ring->capacity >= intent;
}

/* Position and seq of the first intact record, read consistently. */
static int mp_ring_start_oldest(const mp_ring_t *ring, int64_t *position, int64_t *seq)
{
    const mp_ring_writer_counters_t *counters = &ring->descriptor->writer;
    for (;;)
    {
        /* pairs with: mp_ring_writer_publish (release store of tail) */
        int64_t tail = atomic_load_explicit(&counters->tail, memory_order_acquire);
        /* pairs with: mp_ring_writer_reclaim (release store of oldest_position) */
        int64_t oldest = atomic_load_explicit(&counters->oldest_position, memory_order_acquire);
        if (oldest >= tail)
        {
            if (tail != 0)
            {
                return mp_ring_fail(MP_RING_ERROR_CORRUPT,
                    "oldest %" PRId64 " >= tail %" PRId64, oldest, tail);
            }
            *position = 0;
            *seq = MP_RING_FIRST_SEQ;
            return MP_RING_SUCCESS;
        }
        int64_t oldest_seq = mp_ring_record_at(ring, oldest)->seq;
        if (mp_ring_reader_validate(ring, oldest))
        {
            *position = oldest;
            *seq = oldest_seq;
            return MP_RING_SUCCESS;
        }
    }
}

/* Position just after the newest published record, and the seq the next record gets. */
static int mp_ring_start_latest(const mp_ring_t *ring, int64_t *position, int64_t *seq)
{
    const mp_ring_writer_counters_t *counters = &ring->descriptor->writer;
    for (int attempt = 0; attempt < MP_RING_LATEST_ATTEMPTS; attempt++)
    {
        /* pairs with: mp_ring_writer_publish (release store of tail) */
        int64_t tail = atomic_load_explicit(&counters->tail, memory_order_acquire);
        if (tail == 0)
        {
            *position = 0;
            *seq = MP_RING_FIRST_SEQ;
            return MP_RING_SUCCESS;
        }
        /* pairs with: mp_ring_writer_publish, mp_ring_writer_attach (release store of latest) */
        int64_t latest = atomic_load_explicit(&counters->latest_position, memory_order_acquire);
        if (latest < 0 || latest >= tail)
        {
            continue;
        }
        const mp_ring_record_header_t *record = mp_ring_record_at(ring, latest);
        int32_t length = atomic_load_explicit(&record->length, memory_order_relaxed);
        int64_t latest_seq = record->seq;
        if (mp_ring_reader_validate(ring, latest) && length >= MP_RING_RECORD_HEADER_LENGTH &&
            latest + mp_ring_align(length) == tail)
        {
            *position = tail;
            *seq = latest_seq + 1;
            return MP_RING_SUCCESS;
        }
    }
    /* latest and tail never matched (e.g. a writer died between the two stores): walk. */
    for (;;)
    {
        int64_t oldest, oldest_seq, next_seq, latest;
        int result = mp_ring_start_oldest(ring, &oldest, &oldest_seq);
        if (result != MP_RING_SUCCESS)
        {
            return result;
        }
        /* pairs with: mp_ring_writer_publish (release store of tail) */
        int64_t tail = atomic_load_explicit(&counters->tail, memory_order_acquire);
        result = oldest < tail ? mp_ring_walk(ring, oldest, tail, &next_seq, &latest)
                               : MP_RING_SUCCESS;
        if (mp_ring_reader_validate(ring, oldest))
        {
            if (result != MP_RING_SUCCESS)
            {
                return result;
            }
            *position = tail;
            *seq = oldest < tail ? next_seq : oldest_seq;
            return MP_RING_SUCCESS;
        }
    }
}

static int mp_ring_start(const mp_ring_t *ring, int32_t start, int64_t *position, int64_t *seq)
{
    if (start == MP_RING_START_OLDEST)
    {
        return mp_ring_start_oldest(ring, position, seq);
    }
    if (start == MP_RING_START_LATEST)
    {
        return mp_ring_start_latest(ring, position, seq);
    }
    return mp_ring_fail(MP_RING_ERROR_ARGUMENT, "unknown start mode %" PRId32, start);
}

/* ---- durable slots (the caller holds the MP_RING_LOCK_SLOTS lock) --------------------- */

int32_t mp_ring_slot_find(const mp_ring_t *ring, const char *name)
{
    for (uint32_t i = 0; i < ring->max_readers; i++)
    {
        const mp_ring_reader_slot_t *slot = &ring->slots[i];
        /* pairs with: mp_ring_slot_claim (release store of in_use) */
        if (atomic_load_explicit(&slot->in_use, memory_order_acquire) != 0 &&
            strncmp(slot->name, name, MP_RING_NAME_LENGTH) == 0)
        {
            return (int32_t)i;
        }
    }
    return -1;
}

int32_t mp_ring_slot_claim(mp_ring_t *ring, const char *name, int32_t start)
{
    size_t name_length = strlen(name);
    if (name_length < 1 || name_length >= MP_RING_NAME_LENGTH)
    {
        return mp_ring_fail(MP_RING_ERROR_ARGUMENT, "reader name must be 1..%d bytes",
            MP_RING_NAME_LENGTH - 1);
    }
    for (uint32_t i = 0; i < ring->max_readers; i++)
    {
        mp_ring_reader_slot_t *slot = &ring->slots[i];
        /* pairs with: mp_ring_slot_release (release store of in_use) */
        if (atomic_load_explicit(&slot->in_use, memory_order_acquire) != 0)
        {
            continue;
        }
        int64_t position, seq;
        int result = mp_ring_start(ring, start, &position, &seq);
        if (result != MP_RING_SUCCESS)
        {
            return result;
        }
        memset(slot->name, 0, sizeof(slot->name));
        memcpy(slot->name, name, name_length);
        memset(slot->commits, 0, sizeof(slot->commits));
        slot->commits[0].position = position;
        slot->commits[0].next_seq = seq;
        slot->commits[0].time_ns = mp_ring_now_ns();
        atomic_store_explicit(&slot->commit_gen, 0, memory_order_relaxed);
        atomic_store_explicit(&slot->pid, 0, memory_order_relaxed);
        atomic_store_explicit(&slot->position, position, memory_order_relaxed);
        atomic_store_explicit(&slot->next_seq, seq, memory_order_relaxed);
        atomic_store_explicit(&slot->lost, 0, memory_order_relaxed);
        atomic_store_explicit(&slot->overruns, 0, memory_order_relaxed);
        /* pairs with: mp_ring_slot_find, mp_ring_slot_stats_read (acquire) */
        atomic_store_explicit(&slot->in_use, 1, memory_order_release);
        return (int32_t)i;
    }
    return mp_ring_fail(MP_RING_ERROR_NO_SLOT, "all %" PRIu32 " reader slots are taken",
        ring->max_readers);
}

int mp_ring_slot_release(mp_ring_t *ring, int32_t index)
{
    if (index < 0 || (uint32_t)index >= ring->max_readers)
    {
        return mp_ring_fail(MP_RING_ERROR_ARGUMENT, "no reader slot %" PRId32, index);
    }
    mp_ring_reader_slot_t *slot = &ring->slots[index];
    /* pairs with: mp_ring_slot_claim, mp_ring_slot_find (acquire load of in_use) */
    atomic_store_explicit(&slot->in_use, 0, memory_order_release);
    atomic_store_explicit(&slot->pid, 0, memory_order_relaxed);
    memset(slot->name, 0, sizeof(slot->name));
    return MP_RING_SUCCESS;
}

/* ---- reader --------------------------------------------------------------------------- */

static inline void mp_ring_reader_publish_cursor(mp_ring_reader_t *reader)
{
    mp_ring_reader_slot_t *slot = reader->slot;
    if (slot != NULL)
    {
        /* Stats and the bench's lag check only: relaxed is enough. */
        atomic_store_explicit(&slot->position, reader->position, memory_order_relaxed);
        atomic_store_explicit(&slot->next_seq, reader->next_seq, memory_order_relaxed);
    }
}

int mp_ring_reader_init(mp_ring_reader_t *reader, mp_ring_t *ring, int32_t slot_index,
    int32_t start, int32_t pid)
{
    reader->ring = ring;
    reader->slot = NULL;
    reader->lost = 0;
    reader->overruns = 0;
    reader->commit_gen = 0;
    if (slot_index < 0)
    {
        return mp_ring_start(ring, start, &reader->position, &reader->next_seq);
    }
    if ((uint32_t)slot_index >= ring->max_readers)
    {
        return mp_ring_fail(MP_RING_ERROR_ARGUMENT, "no reader slot %" PRId32, slot_index);
    }
    mp_ring_reader_slot_t *slot = &ring->slots[slot_index];
    /* pairs with: mp_ring_reader_commit (release store of commit_gen) */
    uint64_t gen = atomic_load_explicit(&slot->commit_gen, memory_order_acquire);
    const mp_ring_commit_t *commit = &slot->commits[gen & 1];
    int64_t tail = atomic_load_explicit(&ring->descriptor->writer.tail, memory_order_acquire);
    if (commit->position < 0 || commit->position > tail || commit->next_seq < MP_RING_FIRST_SEQ)
    {
        return mp_ring_fail(MP_RING_ERROR_CORRUPT,
            "reader %.32s: committed position %" PRId64 " beyond tail %" PRId64, slot->name,
            commit->position, tail);
    }
    reader->slot = slot;
    reader->position = commit->position;
    reader->next_seq = commit->next_seq;
    reader->lost = commit->lost;
    reader->overruns = commit->overruns;
    reader->commit_gen = gen;
    mp_ring_reader_publish_cursor(reader);
    atomic_store_explicit(&slot->lost, reader->lost, memory_order_relaxed);
    atomic_store_explicit(&slot->overruns, reader->overruns, memory_order_relaxed);
    atomic_store_explicit(&slot->attached_ns, mp_ring_now_ns(), memory_order_relaxed);
    atomic_store_explicit(&slot->pid, pid, memory_order_relaxed);
    return MP_RING_SUCCESS;
}

/* We were lapped: jump to the first intact record and count exactly what we missed. */
static int64_t mp_ring_reader_jump_to_oldest(mp_ring_reader_t *reader)
{
    const mp_ring_t *ring = reader->ring;
    for (;;)
    {
        /* pairs with: mp_ring_writer_reclaim (release store of oldest_position) */
        int64_t oldest = atomic_load_explicit(
            &ring->descriptor->writer.oldest_position, memory_order_acquire);
        int64_t seq = mp_ring_record_at(ring, oldest)->seq;
        if (!mp_ring_reader_validate(ring, oldest))
        {
            continue; /* lapped again while reading the oldest header */
        }
        if (oldest <= reader->position)
        {
            return 0; /* nothing to skip: the caller re-reads from its position */
        }
        {
            int64_t missed = seq - reader->next_seq;
            reader->position = oldest;
            reader->next_seq = seq;
            if (missed > 0)
            {
                reader->lost += missed;
                reader->overruns++;
                if (reader->slot != NULL)
                {
                    atomic_store_explicit(&reader->slot->lost, reader->lost, memory_order_relaxed);
                    atomic_store_explicit(
                        &reader->slot->overruns, reader->overruns, memory_order_relaxed);
                }
            }
            mp_ring_reader_publish_cursor(reader);
            return missed > 0 ? missed : 0;
        }
    }
}

int32_t mp_ring_reader_read(mp_ring_reader_t *reader, mp_ring_batch_t *batch)
{
    const mp_ring_t *ring = reader->ring;
    if (ring == NULL)
    {
        return mp_ring_fail(MP_RING_ERROR_ARGUMENT, "the reader is closed");
    }
    const mp_ring_writer_counters_t *counters = &ring->descriptor->writer;
    const int32_t max_record_length = mp_ring_max_record_length(ring);
    batch->count = 0;
    batch->lost = 0;
    batch->data_length = 0;
    batch->first_seq = reader->next_seq;
    if (batch->max_records < 1)
    {
        return mp_ring_fail(MP_RING_ERROR_ARGUMENT, "batch max_records must be >= 1");
    }

    for (int attempt = 0; attempt < MP_RING_READ_ATTEMPTS; attempt++)
    {
        /* pairs with: mp_ring_writer_publish (release store of tail) */
        int64_t tail = atomic_load_explicit(&counters->tail, memory_order_acquire);
        int64_t start = reader->position;
        if (tail <= start)
        {
            return 0;
        }
        int64_t position = start;
        int64_t seq = reader->next_seq;
        int64_t used = 0;
        int32_t count = 0;
        int bad = 0;
        /* Locals: the payload copies may alias anything a pointer reaches, so fields read
         * through ring or batch would be re-read after every copy. */
        const int64_t capacity = ring->capacity;
        const int64_t mask = ring->mask;
        const int32_t max_records = batch->max_records;
        const int64_t data_capacity = batch->data_capacity;
        uint8_t *const data = batch->data;
        int32_t *const offsets = batch->offsets;
        int32_t *const lengths = batch->lengths;
        int32_t *const types = batch->types;
        int64_t *const ends = batch->ends;
        while (position < tail && count < max_records)
        {
            const mp_ring_record_header_t *record = mp_ring_record_at(ring, position);
            int32_t length = atomic_load_explicit(&record->length, memory_order_relaxed);
            int32_t type = record->type;
            int64_t room = capacity - (position & mask);
            int64_t aligned = mp_ring_align(length);
            if (type == MP_RING_PADDING_TYPE)
            {
                if (length < MP_RING_RECORD_ALIGNMENT || length != room)
                {
                    bad = 1;
                    break;
                }
                position += aligned;
                continue;
            }
            int32_t payload = length - MP_RING_RECORD_HEADER_LENGTH;
            if (length < MP_RING_RECORD_HEADER_LENGTH || aligned > room ||
                length > max_record_length || record->seq != seq || type <= 0)
            {
                bad = 1;
                break;
            }
            if (used + payload > data_capacity)
            {
                break;
            }
            memcpy(data + used, (const uint8_t *)record + MP_RING_RECORD_HEADER_LENGTH,
                (size_t)payload);
            offsets[count] = (int32_t)used;
            lengths[count] = payload;
            types[count] = type;
            used += mp_ring_align(payload);
            seq++;
            position += aligned;
            ends[count] = position;
            count++;
        }

        if (!mp_ring_reader_validate(ring, start))
        {
            /* The copy may be torn: drop it, jump ahead, count the loss, try again. */
            batch->lost += mp_ring_reader_jump_to_oldest(reader);
            batch->first_seq = reader->next_seq;
            continue;
        }
        if (bad)
        {
            return mp_ring_fail(MP_RING_ERROR_CORRUPT,
                "bad record at position %" PRId64 " (expected seq %" PRId64 ")", position, seq);
        }
        if (count == 0 && position < tail && position == start)
        {
            return mp_ring_fail(MP_RING_ERROR_ARGUMENT,
                "batch buffer of %" PRId64 " bytes cannot hold a %" PRId32 "-byte message",
                batch->data_capacity, ring->max_message_length);
        }
        reader->position = position;
        reader->next_seq = seq;
        mp_ring_reader_publish_cursor(reader);
        batch->count = count;
        batch->data_length = used;
        return count;
    }
    return 0; /* lapped on every attempt; batch->lost says how much went by */
}

/* Writes the decimal digits of v >= 0 at out; returns how many. */
static inline int32_t mp_ring_put_decimal(char *out, int32_t v)
{
    char tmp[10];
    int32_t n = 0;
    do
    {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    for (int32_t i = 0; i < n; i++)
    {
        out[i] = tmp[n - 1 - i];
    }
    return n;
}

int32_t mp_ring_batch_format(const mp_ring_batch_t *batch, char *out, int32_t capacity)
{
    int64_t end = 0; /* where the previous payload ended in batch->data */
    int32_t used = 0;
    for (int32_t i = 0; i < batch->count; i++)
    {
        int32_t gap = (int32_t)(batch->offsets[i] - end);
        if (used + MP_RING_FORMAT_ITEM > capacity)
        {
            return -1;
        }
        if (gap > 0)
        {
            used += mp_ring_put_decimal(out + used, gap);
            out[used++] = 'x';
        }
        used += mp_ring_put_decimal(out + used, batch->lengths[i]);
        out[used++] = 's';
        end = batch->offsets[i] + batch->lengths[i];
    }
    return used;
}

int mp_ring_reader_available(const mp_ring_reader_t *reader)
{
    if (reader->ring == NULL)
    {
        return 0;
    }
    /* pairs with: mp_ring_writer_publish (release store of tail) */
    return atomic_load_explicit(&reader->ring->descriptor->writer.tail, memory_order_acquire) >
        reader->position;
}

int mp_ring_reader_wait(mp_ring_reader_t *reader, int64_t timeout_ns, int64_t spin_ns)
{
    if (reader->ring == NULL)
    {
        return mp_ring_fail(MP_RING_ERROR_ARGUMENT, "the reader is closed");
    }
    mp_ring_descriptor_t *descriptor = reader->ring->descriptor;
    if (mp_ring_reader_available(reader))
    {
        return MP_RING_SUCCESS;
    }
    int64_t now = mp_ring_monotonic_ns();
    if (spin_ns > 0)
    {
        int64_t spin_deadline = now + spin_ns;
        do
        {
            for (int i = 0; i < 64; i++)
            {
                mp_ring_cpu_relax();
                if (mp_ring_reader_available(reader))
                {
                    return MP_RING_SUCCESS;
                }
            }
            now = mp_ring_monotonic_ns();
        } while (now < spin_deadline);
    }
    int64_t deadline = timeout_ns < 0 ? INT64_MAX : now + timeout_ns;
    for (;;)
    {
        /* pairs with: the seq_cst fence in mp_ring_writer_signal */
        atomic_store_explicit(&descriptor->sleepers.flag, 1, memory_order_seq_cst);
        /* pairs with: mp_ring_wake (release increment of futex_word) */
        uint32_t word = atomic_load_explicit(&descriptor->writer.futex_word, memory_order_acquire);
        if (mp_ring_reader_available(reader))
        {
            return MP_RING_SUCCESS;
        }
        struct timespec timeout;
        struct timespec *timeout_ptr = NULL;
        if (timeout_ns >= 0)
        {
            int64_t remaining = deadline - mp_ring_monotonic_ns();
            if (remaining <= 0)
            {
                return MP_RING_TIMEOUT;
            }
            timeout.tv_sec = remaining / 1000000000;
            timeout.tv_nsec = remaining % 1000000000;
            timeout_ptr = &timeout;
        }
        /* Not FUTEX_PRIVATE: the word lives in a segment shared by several processes. */
        long rc = syscall(SYS_futex, (uint32_t *)&descriptor->writer.futex_word, FUTEX_WAIT,
            word, timeout_ptr, NULL, 0);
        int error = rc == -1 ? errno : 0;
        if (mp_ring_reader_available(reader))
        {
            return MP_RING_SUCCESS;
        }
        if (error == EINTR)
        {
            return MP_RING_INTERRUPTED;
        }
        if (error == ETIMEDOUT)
        {
            return MP_RING_TIMEOUT;
        }
        /* pairs with: mp_ring_writer_close (release store of state) */
        if (rc == 0 &&
            atomic_load_explicit(&descriptor->writer_info.state, memory_order_acquire) ==
                MP_RING_WRITER_STOPPED)
        {
            return MP_RING_TIMEOUT; /* woken by mp_ring_writer_close: let the caller look */
        }
    }
}

/* mp_ring_reader_wait, then mp_ring_reader_read into batch: one call from "nothing yet" to a
 * filled batch, for a caller that wants the next record as soon as it exists. Returns the
 * record count or the wait's / read's negative result (batch then holds count 0, lost 0). */
int32_t mp_ring_reader_wait_read(mp_ring_reader_t *reader, mp_ring_batch_t *batch,
    int64_t timeout_ns, int64_t spin_ns)
{
    batch->count = 0;
    batch->lost = 0;
    int rc = mp_ring_reader_wait(reader, timeout_ns, spin_ns);
    if (rc != MP_RING_SUCCESS)
    {
        return rc;
    }
    return mp_ring_reader_read(reader, batch);
}

void mp_ring_reader_commit(mp_ring_reader_t *reader)
{
    mp_ring_reader_commit_at(reader, reader->position, reader->next_seq);
}

/* Commit a cursor at or behind the reader's: a caller that buffers records commits only
 * up to the last one it handed out. */
int mp_ring_reader_commit_at(mp_ring_reader_t *reader, int64_t position, int64_t next_seq)
{
    mp_ring_reader_slot_t *slot = reader->slot;
    if (slot == NULL)
    {
        return MP_RING_SUCCESS;
    }
    if (position > reader->position || next_seq > reader->next_seq)
    {
        return mp_ring_fail(MP_RING_ERROR_ARGUMENT,
            "commit at %" PRId64 " (seq %" PRId64 ") is ahead of the reader", position, next_seq);
    }
    uint64_t gen = reader->commit_gen + 1;
    /* The previous commit_gen store is visible before we overwrite the entry it retired.
     * pairs with: the acquire fence in mp_ring_slot_stats_read */
    atomic_thread_fence(memory_order_release);
    mp_ring_commit_t *commit = &slot->commits[gen & 1];
    commit->position = position;
    commit->next_seq = next_seq;
    commit->lost = reader->lost;
    commit->overruns = reader->overruns;
    commit->time_ns = mp_ring_now_ns();
    /* A kill -9 before this store leaves the previous entry in force.
     * pairs with: mp_ring_reader_init, mp_ring_slot_stats_read (acquire) */
    atomic_store_explicit(&slot->commit_gen, gen, memory_order_release);
    reader->commit_gen = gen;
    return MP_RING_SUCCESS;
}

void mp_ring_reader_close(mp_ring_reader_t *reader)
{
    if (reader->slot != NULL)
    {
        atomic_store_explicit(&reader->slot->pid, 0, memory_order_relaxed);
        reader->slot = NULL;
    }
    reader->ring = NULL;
}

/* ---- stats (read-only: never writes to the segment) ----------------------------------- */

void mp_ring_stats_read(const mp_ring_t *ring, mp_ring_stats_t *stats)
{
    const mp_ring_descriptor_t *descriptor = ring->descriptor;
    const mp_ring_writer_counters_t *counters = &descriptor->writer;
    const mp_ring_writer_info_t *info = &descriptor->writer_info;
    stats->capacity = ring->capacity;
    stats->segment_length = (int64_t)ring->length;
    stats->max_message_length = ring->max_message_length;
    stats->max_readers = ring->max_readers;
    stats->created_ns = descriptor->header.created_ns;
    /* pairs with: mp_ring_writer_publish (release store of tail) */
    stats->tail = atomic_load_explicit(&counters->tail, memory_order_acquire);
    stats->tail_intent = atomic_load_explicit(&counters->tail_intent, memory_order_relaxed);
    int64_t oldest_position = 0, oldest_seq = MP_RING_FIRST_SEQ;
    if (mp_ring_start_oldest(ring, &oldest_position, &oldest_seq) != MP_RING_SUCCESS)
    {
        oldest_position = atomic_load_explicit(&counters->oldest_position, memory_order_relaxed);
        oldest_seq = -1; /* unknown: the counters are inconsistent */
    }
    stats->oldest_position = oldest_position;
    stats->oldest_seq = oldest_seq;
    stats->next_seq = atomic_load_explicit(&counters->next_seq, memory_order_relaxed);
    stats->bytes_written = atomic_load_explicit(&counters->bytes_written, memory_order_relaxed);
    /* pairs with: mp_ring_writer_attach, mp_ring_writer_close (release store of state) */
    stats->writer_state = atomic_load_explicit(&info->state, memory_order_acquire);
    stats->writer_pid = atomic_load_explicit(&info->pid, memory_order_relaxed);
    stats->writer_heartbeat_ns = atomic_load_explicit(&info->heartbeat_ns, memory_order_relaxed);
    stats->writer_started_ns = atomic_load_explicit(&info->started_ns, memory_order_relaxed);
    stats->writer_attach_count = atomic_load_explicit(&info->attach_count, memory_order_relaxed);
}

int mp_ring_slot_stats_read(const mp_ring_t *ring, uint32_t index, mp_ring_slot_stats_t *stats)
{
    if (index >= ring->max_readers)
    {
        return mp_ring_fail(MP_RING_ERROR_ARGUMENT, "no reader slot %" PRIu32, index);
    }
    const mp_ring_reader_slot_t *slot = &ring->slots[index];
    /* pairs with: mp_ring_slot_claim (release store of in_use) */
    if (atomic_load_explicit(&slot->in_use, memory_order_acquire) == 0)
    {
        return 0;
    }
    memcpy(stats->name, slot->name, MP_RING_NAME_LENGTH);
    stats->name[MP_RING_NAME_LENGTH] = '\0';
    stats->pid = atomic_load_explicit(&slot->pid, memory_order_relaxed);
    stats->position = atomic_load_explicit(&slot->position, memory_order_relaxed);
    stats->next_seq = atomic_load_explicit(&slot->next_seq, memory_order_relaxed);
    stats->lost = atomic_load_explicit(&slot->lost, memory_order_relaxed);
    stats->overruns = atomic_load_explicit(&slot->overruns, memory_order_relaxed);
    stats->attached_ns = atomic_load_explicit(&slot->attached_ns, memory_order_relaxed);
    for (int attempt = 0; attempt < MP_RING_SNAPSHOT_ATTEMPTS; attempt++)
    {
        /* pairs with: mp_ring_reader_commit (release store of commit_gen) */
        uint64_t before = atomic_load_explicit(&slot->commit_gen, memory_order_acquire);
        stats->committed = slot->commits[before & 1];
        /* pairs with: the release fence at the top of mp_ring_reader_commit */
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&slot->commit_gen, memory_order_relaxed) == before)
        {
            break;
        }
    }
    return 1;
}
