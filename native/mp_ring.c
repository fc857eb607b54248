/*
 * mp_ring: see mp_ring.h for the layout, the publication protocol and the thread-safety rules.
 *
 * Copying a record out while the writer may be overwriting it is a data race in the C11 sense
 * (as in Aeron's broadcast receiver and every seqlock): the copy is only trusted after the
 * acquire fence + tail_intent check in mp_ring_reader_validate says the writer never claimed
 * that region. The framing fields that steer the copy are atomics, so a torn value can only
 * produce a bounded, discarded copy.
 */
#define _GNU_SOURCE
#include "mp_ring_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static _Thread_local char mp_ring_error[256];

int mp_ring_fail(int result, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    vsnprintf(mp_ring_error, sizeof(mp_ring_error), format, args);
    va_end(args);
    return result;
}

const char *mp_ring_last_error(void)
{
    return mp_ring_error;
}

int64_t mp_ring_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t mp_ring_monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline uint64_t mp_ring_data_offset(uint32_t max_readers)
{
    uint64_t end = MP_RING_DESCRIPTOR_LENGTH + (uint64_t)max_readers * MP_RING_SLOT_LENGTH;
    return (end + MP_RING_PAGE_LENGTH - 1) & ~(uint64_t)(MP_RING_PAGE_LENGTH - 1);
}

/* ---- segment ------------------------------------------------------------------------- */

int mp_ring_segment_length(uint64_t capacity, uint32_t max_readers, uint64_t *length)
{
    if (!mp_ring_is_power_of_two(capacity))
    {
        return mp_ring_fail(
            MP_RING_ERROR_ARGUMENT, "capacity %" PRIu64 " is not a power of two", capacity);
    }
    if (capacity < MP_RING_MIN_CAPACITY || capacity > MP_RING_MAX_CAPACITY)
    {
        return mp_ring_fail(MP_RING_ERROR_ARGUMENT,
            "capacity %" PRIu64 " outside [%d, %d]", capacity, MP_RING_MIN_CAPACITY,
            MP_RING_MAX_CAPACITY);
    }
    if (max_readers < 1 || max_readers > MP_RING_MAX_READERS)
    {
        return mp_ring_fail(MP_RING_ERROR_ARGUMENT,
            "max_readers %" PRIu32 " outside [1, %d]", max_readers, MP_RING_MAX_READERS);
    }
    *length = mp_ring_data_offset(max_readers) + capacity;
    return MP_RING_SUCCESS;
}

static void mp_ring_fill(mp_ring_t *ring, uint8_t *base, uint64_t length)
{
    mp_ring_descriptor_t *descriptor = (mp_ring_descriptor_t *)base;
    ring->base = base;
    ring->length = length;
    ring->descriptor = descriptor;
    ring->slots = (mp_ring_reader_slot_t *)(base + descriptor->header.slots_offset);
    ring->data = base + descriptor->header.data_offset;
    ring->capacity = (int64_t)descriptor->header.capacity;
    ring->mask = ring->capacity - 1;
    ring->max_message_length = (int32_t)descriptor->header.max_message_length;
    ring->max_readers = descriptor->header.max_readers;
}

int mp_ring_create(mp_ring_t *ring, int fd, uint64_t capacity, uint32_t max_readers)
{
    uint64_t length;
    int result = mp_ring_segment_length(capacity, max_readers, &length);
    if (result != MP_RING_SUCCESS)
    {
        return result;
    }
    /* Allocate every page now: a full /dev/shm fails here with ENOSPC instead of killing
     * the writer with SIGBUS mid-record later, and the first lap takes no page faults. */
    int error = posix_fallocate(fd, 0, (off_t)length);
    if (error != 0)
    {
        errno = error;
        return mp_ring_fail(MP_RING_ERROR_SYSTEM, "allocating %" PRIu64 " bytes: %s", length,
            strerror(error));
    }
    uint8_t *base =
        mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
    if (base == MAP_FAILED)
    {
        return mp_ring_fail(MP_RING_ERROR_SYSTEM, "mmap: %s", strerror(errno));
    }

    mp_ring_descriptor_t *descriptor = (mp_ring_descriptor_t *)base;
    mp_ring_header_t *header = &descriptor->header;
    header->layout_version = MP_RING_LAYOUT_VERSION;
    header->record_alignment = MP_RING_RECORD_ALIGNMENT;
    header->capacity = capacity;
    header->max_readers = max_readers;
    header->max_message_length = (uint32_t)(capacity / 8);
    header->data_offset = mp_ring_data_offset(max_readers);
    header->segment_length = length;
    header->slots_offset = MP_RING_DESCRIPTOR_LENGTH;
    header->slot_length = MP_RING_SLOT_LENGTH;
    header->record_header_length = MP_RING_RECORD_HEADER_LENGTH;
    header->created_ns = mp_ring_now_ns();
    atomic_store_explicit(&descriptor->writer.latest_position, -1, memory_order_relaxed);
    atomic_store_explicit(&descriptor->writer.next_seq, MP_RING_FIRST_SEQ, memory_order_relaxed);
    /* pairs with: mp_ring_open (acquire load of magic) */
    atomic_store_explicit(&header->magic, MP_RING_MAGIC, memory_order_release);

    mp_ring_fill(ring, base, length);
    return MP_RING_SUCCESS;
}

static int mp_ring_check_header(const mp_ring_header_t *header, uint64_t file_length)
{
    /* pairs with: mp_ring_create (release store of magic) */
    uint64_t magic = atomic_load_explicit(&header->magic, memory_order_acquire);
    if (magic != MP_RING_MAGIC)
    {
        return mp_ring_fail(MP_RING_ERROR_MAGIC,
            "bad magic 0x%016" PRIx64 " (expected 0x%016" PRIx64 ")", magic, MP_RING_MAGIC);
    }
    if (header->layout_version != MP_RING_LAYOUT_VERSION)
    {
        return mp_ring_fail(MP_RING_ERROR_VERSION, "layout version %" PRIu32 ", expected %d",
            header->layout_version, MP_RING_LAYOUT_VERSION);
    }
    uint64_t length;
    if (mp_ring_segment_length(header->capacity, header->max_readers, &length) != 0)
    {
        return MP_RING_ERROR_LAYOUT; /* message set by mp_ring_segment_length */
    }
    if (header->record_alignment != MP_RING_RECORD_ALIGNMENT ||
        header->record_header_length != MP_RING_RECORD_HEADER_LENGTH ||
        header->slot_length != MP_RING_SLOT_LENGTH ||
        header->slots_offset != MP_RING_DESCRIPTOR_LENGTH ||
        header->max_message_length != header->capacity / 8 ||
        header->data_offset != mp_ring_data_offset(header->max_readers))
    {
        return mp_ring_fail(MP_RING_ERROR_LAYOUT, "header fields disagree with layout %d",
            MP_RING_LAYOUT_VERSION);
    }
    if (header->segment_length != length || file_length != length)
    {
        return mp_ring_fail(MP_RING_ERROR_LAYOUT,
            "size mismatch: file %" PRIu64 " bytes, header says %" PRIu64
            ", capacity %" PRIu64 " needs %" PRIu64,
            file_length, header->segment_length, header->capacity, length);
    }
    return MP_RING_SUCCESS;
}

int mp_ring_open(mp_ring_t *ring, int fd, uint64_t file_length, int writable)
{
    if (file_length < sizeof(mp_ring_descriptor_t))
    {
        return mp_ring_fail(MP_RING_ERROR_LAYOUT,
            "file is %" PRIu64 " bytes, smaller than the %d-byte descriptor", file_length,
            MP_RING_DESCRIPTOR_LENGTH);
    }
    /* Writers and readers map every page up front (no faults on the hot path); a read-only
     * stats mapping touches only what it reads. */
    int protection = writable ? (PROT_READ | PROT_WRITE) : PROT_READ;
    int flags = writable ? (MAP_SHARED | MAP_POPULATE) : MAP_SHARED;
    uint8_t *base = mmap(NULL, file_length, protection, flags, fd, 0);
    if (base == MAP_FAILED)
    {
        return mp_ring_fail(MP_RING_ERROR_SYSTEM, "mmap: %s", strerror(errno));
    }
    int result = mp_ring_check_header(&((mp_ring_descriptor_t *)base)->header, file_length);
    if (result != MP_RING_SUCCESS)
    {
        munmap(base, file_length);
        return result;
    }
    mp_ring_fill(ring, base, file_length);
    return MP_RING_SUCCESS;
}

void mp_ring_close(mp_ring_t *ring)
{
    if (ring->base != NULL)
    {
        munmap(ring->base, ring->length);
        ring->base = NULL;
    }
}

/* OFD locks on single bytes: released by the kernel when the process dies. */
int mp_ring_lock(int fd, int32_t which, int exclusive, int wait)
{
    struct flock lock = { 0 };
    lock.l_type = exclusive ? F_WRLCK : F_RDLCK;
    lock.l_whence = SEEK_SET;
    lock.l_start = which;
    lock.l_len = 1;
    if (fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &lock) == 0)
    {
        return MP_RING_SUCCESS;
    }
    if (errno == EAGAIN || errno == EACCES)
    {
        return 1;
    }
    return mp_ring_fail(MP_RING_ERROR_SYSTEM, "fcntl lock: %s", strerror(errno));
}

int mp_ring_unlock(int fd, int32_t which)
{
    struct flock lock = { 0 };
    lock.l_type = F_UNLCK;
    lock.l_whence = SEEK_SET;
    lock.l_start = which;
    lock.l_len = 1;
    if (fcntl(fd, F_OFD_SETLK, &lock) != 0)
    {
        return mp_ring_fail(MP_RING_ERROR_SYSTEM, "fcntl unlock: %s", strerror(errno));
    }
    return MP_RING_SUCCESS;
}

int mp_ring_lock_held(int fd, int32_t which)
{
    struct flock lock = { 0 };
    lock.l_type = F_WRLCK;
    lock.l_whence = SEEK_SET;
    lock.l_start = which;
    lock.l_len = 1;
    if (fcntl(fd, F_OFD_GETLK, &lock) != 0)
    {
        return mp_ring_fail(MP_RING_ERROR_SYSTEM, "fcntl getlk: %s", strerror(errno));
    }
    return lock.l_type != F_UNLCK;
}

/* ---- framing walk --------------------------------------------------------------------- */

/*
 * Walk the records in [from, to), checking every framing invariant. Sets *next_seq to the seq
 * the record at `to` gets and *latest to the start of the last real record (-1 if none).
 * The caller validates against tail_intent when the writer may be running.
 */
int mp_ring_walk(const mp_ring_t *ring, int64_t from, int64_t to, int64_t *next_seq,
    int64_t *latest)
{
    int64_t position = from;
    int64_t seq = -1; /* taken from the first real record */
    *latest = -1;
    while (position < to)
    {
        const mp_ring_record_header_t *record = mp_ring_record_at(ring, position);
        int32_t length = atomic_load_explicit(&record->length, memory_order_relaxed);
        int32_t type = record->type;
        int64_t room = ring->capacity - (position & ring->mask);
        int bad = type == MP_RING_PADDING_TYPE
            ? (length < MP_RING_RECORD_ALIGNMENT || length != room)
            : (type <= 0 || length < MP_RING_RECORD_HEADER_LENGTH ||
                  length > mp_ring_max_record_length(ring) || mp_ring_align(length) > room ||
                  (seq >= 0 && record->seq != seq));
        if (bad)
        {
            return mp_ring_fail(MP_RING_ERROR_CORRUPT,
                "bad record at position %" PRId64 ": length %" PRId32 " type %" PRId32
                " (expected seq %" PRId64 ")",
                position, length, type, seq);
        }
        if (type != MP_RING_PADDING_TYPE)
        {
            seq = record->seq + 1;
            *latest = position;
        }
        position += mp_ring_align(length);
    }
    if (position != to || seq < 0)
    {
        return mp_ring_fail(MP_RING_ERROR_CORRUPT,
            "records do not end at the tail: %" PRId64 " != %" PRId64, position, to);
    }
    *next_seq = seq;
    return MP_RING_SUCCESS;
}

/* ---- writer --------------------------------------------------------------------------- */

int mp_ring_writer_attach(mp_ring_writer_t *writer, mp_ring_t *ring, int32_t pid)
{
    mp_ring_writer_counters_t *counters = &ring->descriptor->writer;
    mp_ring_writer_info_t *info = &ring->descriptor->writer_info;
    /* No writer runs now (the caller holds the writer lock): relaxed loads suffice. */
    int64_t tail = atomic_load_explicit(&counters->tail, memory_order_relaxed);
    int64_t intent = atomic_load_explicit(&counters->tail_intent, memory_order_relaxed);
    int64_t oldest = atomic_load_explicit(&counters->oldest_position, memory_order_relaxed);
    if (oldest < 0 || oldest > tail || tail > intent || intent - oldest > ring->capacity ||
        (oldest & (MP_RING_RECORD_ALIGNMENT - 1)) != 0 || (tail & (MP_RING_RECORD_ALIGNMENT - 1)))
    {
        return mp_ring_fail(MP_RING_ERROR_CORRUPT,
            "inconsistent writer counters: oldest %" PRId64 " tail %" PRId64 " intent %" PRId64,
            oldest, tail, intent);
    }

    int64_t next_seq = MP_RING_FIRST_SEQ;
    int64_t latest = -1;
    if (oldest < tail)
    {
        int result = mp_ring_walk(ring, oldest, tail, &next_seq, &latest);
        if (result != MP_RING_SUCCESS)
        {
            return result;
        }
    }
    else if (tail != 0)
    {
        return mp_ring_fail(MP_RING_ERROR_CORRUPT, "empty ring with tail %" PRId64, tail);
    }

    writer->ring = ring;
    writer->tail = tail;
    writer->oldest = oldest;
    writer->next_seq = next_seq;
    writer->intent_floor = intent;
    writer->latest = latest;
    writer->bytes_written = atomic_load_explicit(&counters->bytes_written, memory_order_relaxed);
    writer->since_heartbeat = 0;

    /* pairs with: mp_ring_start_latest (acquire load of latest_position) */
    atomic_store_explicit(&counters->latest_position, latest, memory_order_release);
    atomic_store_explicit(&counters->next_seq, next_seq, memory_order_relaxed);
    int64_t now = mp_ring_now_ns();
    atomic_store_explicit(&info->pid, pid, memory_order_relaxed);
    atomic_store_explicit(&info->started_ns, now, memory_order_relaxed);
    atomic_store_explicit(&info->heartbeat_ns, now, memory_order_relaxed);
    atomic_fetch_add_explicit(&info->attach_count, 1, memory_order_relaxed);
    /* pairs with: mp_ring_stats_read (acquire load of state) */
    atomic_store_explicit(&info->state, MP_RING_WRITER_RUNNING, memory_order_release);
    return MP_RING_SUCCESS;
}

enum
{
    MP_RING_RECLAIM_PREFETCH = 1024 /* bytes; past the mapping's end a prefetch is harmless */
};

/* Move oldest_position past every record the next claim (up to new_tail) will overwrite. */
static inline void mp_ring_writer_reclaim(mp_ring_writer_t *writer, int64_t new_tail)
{
    const mp_ring_t *ring = writer->ring;
    int64_t limit = new_tail - ring->capacity;
    int64_t oldest = writer->oldest;
    if (oldest >= limit)
    {
        return;
    }
    while (oldest < limit)
    {
        /* Our own published records, checked by mp_ring_walk at attach. */
        const mp_ring_record_header_t *record = mp_ring_record_at(ring, oldest);
        /* Each step's address depends on the last load: fetch the lines ahead, which the
         * claim overwrites next, so the walk does not wait on memory one record at a time. */
        __builtin_prefetch((const uint8_t *)record + MP_RING_RECLAIM_PREFETCH, 1, 3);
        oldest += mp_ring_align(atomic_load_explicit(&record->length, memory_order_relaxed));
    }
    /* Never stop on padding: it may be too short to hold a seq, and the record after it was
     * published together with it, so that record is below the tail too. */
    const mp_ring_record_header_t *record = mp_ring_record_at(ring, oldest);
    if (oldest < writer->tail && record->type == MP_RING_PADDING_TYPE)
    {
        oldest += mp_ring_align(atomic_load_explicit(&record->length, memory_order_relaxed));
    }
    writer->oldest = oldest;
    /* pairs with: mp_ring_reader_jump_to_oldest, mp_ring_start_oldest (acquire) */
    atomic_store_explicit(
        &ring->descriptor->writer.oldest_position, oldest, memory_order_release);
}

/* Where a record of record_length starting at or after `from` ends (padding included). */
static inline int64_t mp_ring_writer_span(const mp_ring_t *ring, int64_t from,
    int32_t record_length)
{
    int64_t room = ring->capacity - (from & ring->mask);
    int64_t aligned = mp_ring_align(record_length);
    return from + (aligned > room ? room : 0) + aligned;
}

/* Announce that everything up to new_tail may be overwritten, before touching any of it. */
static inline void mp_ring_writer_claim(mp_ring_writer_t *writer, int64_t new_tail)
{
    mp_ring_writer_reclaim(writer, new_tail);
    int64_t intent = new_tail > writer->intent_floor ? new_tail : writer->intent_floor;
    /* pairs with: mp_ring_reader_validate (acquire load of tail_intent) */
    atomic_store_explicit(
        &writer->ring->descriptor->writer.tail_intent, intent, memory_order_release);
    /* StoreStore: tail_intent is visible before any byte of the claim is overwritten.
     * pairs with: the acquire fence in mp_ring_reader_validate */
    atomic_thread_fence(memory_order_release);
}

/* Write one record (and the padding before it, if it would cross the end) at the local
 * tail, inside the claimed span. Invisible to readers until mp_ring_writer_publish. */
static inline void mp_ring_writer_put(
    mp_ring_writer_t *writer, int32_t type, const void *payload, int32_t length)
{
    const mp_ring_t *ring = writer->ring;
    int32_t record_length = length + MP_RING_RECORD_HEADER_LENGTH;
    int64_t position = writer->tail;
    int64_t room = ring->capacity - (position & ring->mask);
    if (mp_ring_align(record_length) > room)
    {
        /* Only length and type: the room left may be just 8 bytes. */
        mp_ring_record_header_t *pad = mp_ring_record_at(ring, position);
        atomic_store_explicit(&pad->length, -(int32_t)room, memory_order_relaxed);
        pad->type = MP_RING_PADDING_TYPE;
        /* pairs with: the tail acquire in mp_ring_reader_read (via mp_ring_writer_publish) */
        atomic_store_explicit(&pad->length, (int32_t)room, memory_order_release);
        position += room;
    }
    mp_ring_record_header_t *record = mp_ring_record_at(ring, position);
    atomic_store_explicit(&record->length, -record_length, memory_order_relaxed);
    record->type = type;
    record->seq = writer->next_seq;
    memcpy((uint8_t *)record + MP_RING_RECORD_HEADER_LENGTH, payload, (size_t)length);
    /* pairs with: the tail acquire in mp_ring_reader_read, mp_ring_start_latest */
    atomic_store_explicit(&record->length, record_length, memory_order_release);

    writer->latest = position;
    writer->tail = position + mp_ring_align(record_length);
    writer->next_seq++;
    writer->bytes_written += (uint64_t)length;
}

/* Make every record put so far visible: the counters readers poll change once per call. */
static inline void mp_ring_writer_publish(mp_ring_writer_t *writer)
{
    mp_ring_writer_counters_t *counters = &writer->ring->descriptor->writer;
    /* pairs with: mp_ring_start_latest (acquire) */
    atomic_store_explicit(&counters->latest_position, writer->latest, memory_order_release);
    atomic_store_explicit(&counters->next_seq, writer->next_seq, memory_order_relaxed);
    atomic_store_explicit(&counters->bytes_written, writer->bytes_written, memory_order_relaxed);
    /* The records are visible from here on. pairs with: mp_ring_reader_read (acquire) */
    atomic_store_explicit(&counters->tail, writer->tail, memory_order_release);
}

void mp_ring_wake(mp_ring_t *ring)
{
    mp_ring_descriptor_t *descriptor = ring->descriptor;
    /* Clearing the flag also heals it after a sleeper was killed: at most one extra wake.
     * pairs with: the seq_cst store of sleepers.flag in mp_ring_reader_wait */
    if (atomic_exchange_explicit(&descriptor->sleepers.flag, 0, memory_order_acq_rel) != 0)
    {
        /* pairs with: mp_ring_reader_wait (acquire load of futex_word) */
        atomic_fetch_add_explicit(&descriptor->writer.futex_word, 1, memory_order_release);
        syscall(SYS_futex, (uint32_t *)&descriptor->writer.futex_word, FUTEX_WAKE, INT_MAX,
            NULL, NULL, 0);
    }
}

static inline void mp_ring_writer_signal(mp_ring_writer_t *writer)
{
    mp_ring_descriptor_t *descriptor = writer->ring->descriptor;
    /* StoreLoad: the tail store before the sleepers load.
     * pairs with: the seq_cst store of sleepers.flag in mp_ring_reader_wait */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&descriptor->sleepers.flag, memory_order_relaxed) != 0)
    {
        mp_ring_wake(writer->ring);
    }
    if (++writer->since_heartbeat >= 1024)
    {
        mp_ring_writer_heartbeat(writer);
    }
}

static inline int mp_ring_check_write(const mp_ring_writer_t *writer, int32_t type, int32_t length)
{
    if (writer->ring == NULL)
    {
        return mp_ring_fail(MP_RING_ERROR_ARGUMENT, "the writer is closed");
    }
    if (type <= 0)
    {
        return mp_ring_fail(
            MP_RING_ERROR_ARGUMENT, "type id %" PRId32 " must be > 0 (<= 0 is reserved)", type);
    }
    if (length < 0 || length > writer->ring->max_message_length)
    {
        return mp_ring_fail(MP_RING_ERROR_ARGUMENT,
            "message length %" PRId32 " outside [0, %" PRId32 "]", length,
            writer->ring->max_message_length);
    }
    return MP_RING_SUCCESS;
}

int64_t mp_ring_write(mp_ring_writer_t *writer, int32_t type, const void *payload,
    int32_t length)
{
    int result = mp_ring_check_write(writer, type, length);
    if (result != MP_RING_SUCCESS)
    {
        return result;
    }
    int32_t record_length = length + MP_RING_RECORD_HEADER_LENGTH;
    mp_ring_writer_claim(writer, mp_ring_writer_span(writer->ring, writer->tail, record_length));
    int64_t seq = writer->next_seq;
    mp_ring_writer_put(writer, type, payload, length);
    mp_ring_writer_publish(writer);
    mp_ring_writer_signal(writer);
    return seq;
}

int mp_ring_write_batch(mp_ring_writer_t *writer, int32_t type, const void *data,
    int64_t data_length, const int32_t *lengths, int32_t count)
{
    const uint8_t *payload = data;
    int64_t total = 0;
    if (writer->ring == NULL || type <= 0)
    {
        return mp_ring_check_write(writer, type, 0);
    }
    const uint32_t max_length = (uint32_t)writer->ring->max_message_length;
    for (int32_t i = 0; i < count; i++)
    {
        if ((uint32_t)lengths[i] > max_length)
        {
            return mp_ring_check_write(writer, type, lengths[i]); /* all or nothing */
        }
        total += lengths[i];
    }
    if (count < 0 || total > data_length)
    {
        return mp_ring_fail(MP_RING_ERROR_ARGUMENT,
            "batch lengths add up to %" PRId64 " bytes, data has %" PRId64, total, data_length);
    }
    /* Work on a copy the payload copies cannot alias, so the compiler keeps the cursor in
     * registers across them. */
    mp_ring_writer_t local = *writer;
    const mp_ring_t *ring = local.ring;
    /* Claim and publish up to a quarter of the ring at a time: one tail_intent store and one
     * publication per chunk instead of per record, and oldest_position never passes the
     * published tail (a chunk is far shorter than the ring). */
    const int64_t chunk = ring->capacity / 4;
    int32_t i = 0;
    while (i < count)
    {
        int64_t start = local.tail;
        int64_t end = mp_ring_writer_span(ring, start, lengths[i] + MP_RING_RECORD_HEADER_LENGTH);
        int32_t j = i + 1;
        while (j < count)
        {
            int64_t next =
                mp_ring_writer_span(ring, end, lengths[j] + MP_RING_RECORD_HEADER_LENGTH);
            if (next - start > chunk)
            {
                break;
            }
            end = next;
            j++;
        }
        mp_ring_writer_claim(&local, end);
        for (; i < j; i++)
        {
            mp_ring_writer_put(&local, type, payload, lengths[i]);
            payload += lengths[i];
        }
        mp_ring_writer_publish(&local);
    }
    *writer = local;
    mp_ring_writer_signal(writer);
    return MP_RING_SUCCESS;
}

void mp_ring_writer_heartbeat(mp_ring_writer_t *writer)
{
    if (writer->ring == NULL)
    {
        return;
    }
    writer->since_heartbeat = 0;
    atomic_store_explicit(&writer->ring->descriptor->writer_info.heartbeat_ns, mp_ring_now_ns(),
        memory_order_relaxed);
}

void mp_ring_writer_close(mp_ring_writer_t *writer)
{
    if (writer->ring == NULL)
    {
        return;
    }
    mp_ring_writer_info_t *info = &writer->ring->descriptor->writer_info;
    mp_ring_writer_heartbeat(writer);
    atomic_store_explicit(&info->pid, 0, memory_order_relaxed);
    /* pairs with: mp_ring_reader_wait, mp_ring_stats_read (acquire load of state) */
    atomic_store_explicit(&info->state, MP_RING_WRITER_STOPPED, memory_order_release);
    atomic_store_explicit(&writer->ring->descriptor->sleepers.flag, 1, memory_order_relaxed);
    mp_ring_wake(writer->ring); /* sleepers re-check the writer state */
    writer->ring = NULL;
}

int64_t mp_ring_writer_max_lag(const mp_ring_writer_t *writer)
{
    const mp_ring_t *ring = writer->ring;
    int64_t lag = 0;
    if (ring == NULL)
    {
        return 0;
    }
    for (uint32_t i = 0; i < ring->max_readers; i++)
    {
        const mp_ring_reader_slot_t *slot = &ring->slots[i];
        if (atomic_load_explicit(&slot->pid, memory_order_relaxed) != 0 &&
            atomic_load_explicit(&slot->in_use, memory_order_relaxed) != 0)
        {
            int64_t behind =
                writer->tail - atomic_load_explicit(&slot->position, memory_order_relaxed);
            lag = behind > lag ? behind : lag;
        }
    }
    return lag;
}
