/*
 * mp_ring: single-writer, many-reader broadcast ring in a named POSIX shared-memory segment.
 *
 * This header is the one source of truth for the segment layout. shm/_layout.py mirrors the
 * offsets for Python (header peeking, docs) and tests/test_ring_layout.py checks the mirror
 * against ffi.offsetof/ffi.sizeof.
 *
 * Segment layout (all integers little-endian, offsets in bytes):
 *
 *   0     mp_ring_header_t          128  magic, layout version, capacity, ... (written once)
 *   128   mp_ring_writer_counters_t 128  tail_intent, tail, oldest, latest, next_seq, bytes,
 *                                        futex word: written by the writer on every record
 *   256   mp_ring_writer_info_t     128  writer state, pid, heartbeat: written rarely
 *   384   mp_ring_sleepers_t        128  "a reader sleeps" flag: written by readers
 *   512   mp_ring_reader_slot_t[max_readers], 256 each: durable named cursors
 *   data_offset (page aligned)           capacity bytes of records
 *
 * Record framing (8-byte aligned, never split across the end of the data region):
 *
 *    0                   1                   2                   3
 *    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *   +---------------------------------------------------------------+
 *   |R|                       record length                         |  int32, incl. header;
 *   +-+-------------------------------------------------------------+  <= 0 while being written
 *   |                            type                               |  int32, > 0; -1 = padding
 *   +---------------------------------------------------------------+
 *   |                          sequence                             |  int64, first record = 1
 *   |                                                               |
 *   +---------------------------------------------------------------+
 *   |                       payload (0..capacity/8)                ...
 *   +---------------------------------------------------------------+
 *
 * A padding record (type -1) fills the room left before the end of the data region when the
 * next record does not fit; it has only the length and type fields (the room may be 8
 * bytes) and is published together with the record that follows it at index 0.
 *
 * Positions are 64-bit byte counts that only grow; index = position & (capacity - 1).
 * Publication: the writer stores tail_intent (how far it is about to overwrite), writes the
 * record (length stored as -length first, +length last with a release store), then
 * release-stores tail. Readers acquire tail, copy records out, then re-check tail_intent:
 * if the writer claimed past their start position + capacity, the copy may be torn and is
 * dropped (the reader was lapped). A writer killed mid-record never advanced tail, so the
 * half-written record is never visible.
 *
 * The writer never waits for readers. It keeps oldest_position: the first (non-padding) record
 * that is still intact; a lapped reader jumps there and is told exactly how many records it lost (the
 * difference of sequence numbers).
 *
 * Thread safety: one mp_ring_writer_t per segment (enforced by an OFD lock in the Python
 * layer); a mp_ring_reader_t is used by one thread at a time. Stats reads never write.
 */
#ifndef MP_RING_H
#define MP_RING_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define MP_RING_MAGIC UINT64_C(0x31474E4952504D4D) /* "MMPRING1" read as little-endian bytes */

enum
{
    MP_RING_LAYOUT_VERSION = 1,
    MP_RING_CACHE_LINE_LENGTH = 64,
    MP_RING_RECORD_ALIGNMENT = 8,
    MP_RING_RECORD_HEADER_LENGTH = 16,
    MP_RING_PADDING_TYPE = -1,
    MP_RING_FIRST_SEQ = 1,
    MP_RING_NAME_LENGTH = 32,
    MP_RING_SLOT_LENGTH = 256,
    MP_RING_DESCRIPTOR_LENGTH = 512,
    MP_RING_PAGE_LENGTH = 4096,
    MP_RING_FORMAT_ITEM = 24, /* mp_ring_batch_format: a gap and a length, 11 characters each */
    MP_RING_MIN_CAPACITY = 4096,
    MP_RING_MAX_CAPACITY = 1 << 30,
    MP_RING_MAX_READERS = 1024,
    MP_RING_LOCK_WRITER = 0,
    MP_RING_LOCK_SLOTS = 1,
    MP_RING_LOCK_FIRST_SLOT = 2
};

/* Results. Negative values only; reads return a record count (>= 0) on success. */
typedef enum mp_ring_result_en
{
    MP_RING_SUCCESS = 0,
    MP_RING_TIMEOUT = -1,        /* wait: nothing arrived before the deadline (normal) */
    MP_RING_INTERRUPTED = -2,    /* wait: a signal arrived (normal, the caller re-checks) */
    MP_RING_ERROR_ARGUMENT = -3, /* bad type id, length, capacity, name, buffer */
    MP_RING_ERROR_CORRUPT = -4,  /* validated data breaks a framing invariant */
    MP_RING_ERROR_MAGIC = -5,    /* not a marketprism ring */
    MP_RING_ERROR_VERSION = -6,  /* another layout version */
    MP_RING_ERROR_LAYOUT = -7,   /* size/capacity/offsets disagree with the file */
    MP_RING_ERROR_NO_SLOT = -8,  /* every reader slot is taken */
    MP_RING_ERROR_SYSTEM = -9    /* a system call failed, errno is set */
} mp_ring_result_t;

typedef enum mp_ring_writer_state_en
{
    MP_RING_WRITER_NEVER = 0,
    MP_RING_WRITER_RUNNING = 1,
    MP_RING_WRITER_STOPPED = 2
} mp_ring_writer_state_t;

typedef enum mp_ring_start_en
{
    MP_RING_START_LATEST = 0, /* only records written after the reader attached */
    MP_RING_START_OLDEST = 1  /* every record still in the ring */
} mp_ring_start_t;

/* ---- shared-memory layout ------------------------------------------------------------- */

typedef struct mp_ring_header_stct
{
    _Atomic uint64_t magic;      /* stored last by mp_ring_create (release) */
    uint32_t layout_version;
    uint32_t record_alignment;
    uint64_t capacity;           /* data bytes, power of two */
    uint32_t max_readers;
    uint32_t max_message_length; /* capacity / 8 */
    uint64_t data_offset;
    uint64_t segment_length;
    uint64_t slots_offset;
    uint32_t slot_length;
    uint32_t record_header_length;
    int64_t created_ns;          /* CLOCK_REALTIME */
    uint8_t pad[(2 * MP_RING_CACHE_LINE_LENGTH) - 72];
} mp_ring_header_t;

typedef struct mp_ring_writer_counters_stct
{
    _Atomic int64_t tail_intent;     /* writer may be overwriting up to here */
    _Atomic int64_t tail;            /* records below this position are published */
    _Atomic int64_t oldest_position; /* first record still intact */
    _Atomic int64_t latest_position; /* start of the newest complete record, -1 if none */
    _Atomic int64_t next_seq;        /* advisory (stats); the records hold the truth */
    _Atomic uint64_t bytes_written;  /* payload bytes */
    _Atomic uint32_t futex_word;     /* bumped before FUTEX_WAKE */
    uint8_t pad[(2 * MP_RING_CACHE_LINE_LENGTH) - 52];
} mp_ring_writer_counters_t;

typedef struct mp_ring_writer_info_stct
{
    _Atomic uint32_t state;          /* mp_ring_writer_state_t */
    _Atomic int32_t pid;
    _Atomic int64_t heartbeat_ns;    /* CLOCK_REALTIME, on attach/close and every 1024 writes */
    _Atomic int64_t started_ns;
    _Atomic uint64_t attach_count;
    uint8_t pad[(2 * MP_RING_CACHE_LINE_LENGTH) - 32];
} mp_ring_writer_info_t;

typedef struct mp_ring_sleepers_stct
{
    _Atomic uint32_t flag;           /* 1: some reader may sleep on futex_word */
    uint8_t pad[(2 * MP_RING_CACHE_LINE_LENGTH) - 4];
} mp_ring_sleepers_t;

typedef struct mp_ring_descriptor_stct
{
    mp_ring_header_t header;
    mp_ring_writer_counters_t writer;
    mp_ring_writer_info_t writer_info;
    mp_ring_sleepers_t sleepers;
} mp_ring_descriptor_t;

typedef struct mp_ring_commit_stct
{
    int64_t position;
    int64_t next_seq;
    int64_t lost;
    int64_t overruns;
    int64_t time_ns;                 /* CLOCK_REALTIME */
} mp_ring_commit_t;

/* One durable reader cursor. Written only by the reader attached to it. */
typedef struct mp_ring_reader_slot_stct
{
    char name[MP_RING_NAME_LENGTH];  /* NUL padded */
    _Atomic uint32_t in_use;
    _Atomic int32_t pid;             /* 0 when detached */
    _Atomic uint64_t commit_gen;     /* commits[commit_gen & 1] is the committed cursor */
    mp_ring_commit_t commits[2];
    /* reader-hot: the live cursor, updated on every read that makes progress */
    _Atomic int64_t position;
    _Atomic int64_t next_seq;
    _Atomic int64_t lost;
    _Atomic int64_t overruns;
    _Atomic int64_t attached_ns;
    uint8_t pad[(2 * MP_RING_CACHE_LINE_LENGTH) - 40];
} mp_ring_reader_slot_t;

typedef struct mp_ring_record_header_stct
{
    _Atomic int32_t length;          /* record length incl. header; <= 0 while being written */
    int32_t type;
    int64_t seq;
} mp_ring_record_header_t;

_Static_assert(sizeof(mp_ring_header_t) == 128, "header is two cache lines");
_Static_assert(offsetof(mp_ring_header_t, magic) == 0, "magic at 0");
_Static_assert(offsetof(mp_ring_header_t, layout_version) == 8, "version at 8");
_Static_assert(offsetof(mp_ring_header_t, record_alignment) == 12, "alignment at 12");
_Static_assert(offsetof(mp_ring_header_t, capacity) == 16, "capacity at 16");
_Static_assert(offsetof(mp_ring_header_t, max_readers) == 24, "max_readers at 24");
_Static_assert(offsetof(mp_ring_header_t, max_message_length) == 28, "max length at 28");
_Static_assert(offsetof(mp_ring_header_t, data_offset) == 32, "data_offset at 32");
_Static_assert(offsetof(mp_ring_header_t, segment_length) == 40, "segment_length at 40");
_Static_assert(offsetof(mp_ring_header_t, slots_offset) == 48, "slots_offset at 48");
_Static_assert(offsetof(mp_ring_header_t, slot_length) == 56, "slot_length at 56");
_Static_assert(offsetof(mp_ring_header_t, record_header_length) == 60, "record hdr len at 60");
_Static_assert(offsetof(mp_ring_header_t, created_ns) == 64, "created_ns at 64");
_Static_assert(sizeof(mp_ring_writer_counters_t) == 128, "writer counters: two cache lines");
_Static_assert(offsetof(mp_ring_writer_counters_t, tail_intent) == 0, "tail_intent at 0");
_Static_assert(offsetof(mp_ring_writer_counters_t, tail) == 8, "tail at 8");
_Static_assert(offsetof(mp_ring_writer_counters_t, oldest_position) == 16, "oldest at 16");
_Static_assert(offsetof(mp_ring_writer_counters_t, latest_position) == 24, "latest at 24");
_Static_assert(offsetof(mp_ring_writer_counters_t, next_seq) == 32, "next_seq at 32");
_Static_assert(offsetof(mp_ring_writer_counters_t, bytes_written) == 40, "bytes at 40");
_Static_assert(offsetof(mp_ring_writer_counters_t, futex_word) == 48, "futex at 48");
_Static_assert(sizeof(mp_ring_writer_info_t) == 128, "writer info: two cache lines");
_Static_assert(offsetof(mp_ring_writer_info_t, state) == 0, "state at 0");
_Static_assert(offsetof(mp_ring_writer_info_t, pid) == 4, "pid at 4");
_Static_assert(offsetof(mp_ring_writer_info_t, heartbeat_ns) == 8, "heartbeat at 8");
_Static_assert(offsetof(mp_ring_writer_info_t, started_ns) == 16, "started at 16");
_Static_assert(offsetof(mp_ring_writer_info_t, attach_count) == 24, "attach_count at 24");
_Static_assert(sizeof(mp_ring_sleepers_t) == 128, "sleepers: two cache lines");
_Static_assert(offsetof(mp_ring_descriptor_t, header) == 0, "header at 0");
_Static_assert(offsetof(mp_ring_descriptor_t, writer) == 128, "writer counters at 128");
_Static_assert(offsetof(mp_ring_descriptor_t, writer_info) == 256, "writer info at 256");
_Static_assert(offsetof(mp_ring_descriptor_t, sleepers) == 384, "sleepers at 384");
_Static_assert(sizeof(mp_ring_descriptor_t) == MP_RING_DESCRIPTOR_LENGTH, "descriptor 512");
_Static_assert(sizeof(mp_ring_commit_t) == 40, "commit entry 40");
_Static_assert(sizeof(mp_ring_reader_slot_t) == MP_RING_SLOT_LENGTH, "slot 256");
_Static_assert(offsetof(mp_ring_reader_slot_t, name) == 0, "slot name at 0");
_Static_assert(offsetof(mp_ring_reader_slot_t, in_use) == 32, "slot in_use at 32");
_Static_assert(offsetof(mp_ring_reader_slot_t, pid) == 36, "slot pid at 36");
_Static_assert(offsetof(mp_ring_reader_slot_t, commit_gen) == 40, "slot commit_gen at 40");
_Static_assert(offsetof(mp_ring_reader_slot_t, commits) == 48, "slot commits at 48");
_Static_assert(offsetof(mp_ring_reader_slot_t, position) == 128, "live cursor: own lines");
_Static_assert(offsetof(mp_ring_reader_slot_t, next_seq) == 136, "slot next_seq at 136");
_Static_assert(offsetof(mp_ring_reader_slot_t, lost) == 144, "slot lost at 144");
_Static_assert(offsetof(mp_ring_reader_slot_t, overruns) == 152, "slot overruns at 152");
_Static_assert(offsetof(mp_ring_reader_slot_t, attached_ns) == 160, "slot attached at 160");
_Static_assert(sizeof(mp_ring_record_header_t) == MP_RING_RECORD_HEADER_LENGTH, "record hdr 16");
_Static_assert(offsetof(mp_ring_record_header_t, type) == 4, "record type at 4");
_Static_assert(offsetof(mp_ring_record_header_t, seq) == 8, "record seq at 8");

/* ---- process-local handles (never in shared memory) ----------------------------------- */

typedef struct mp_ring_stct
{
    uint8_t *base;
    uint64_t length;
    mp_ring_descriptor_t *descriptor;
    mp_ring_reader_slot_t *slots;
    uint8_t *data;
    int64_t capacity;
    int64_t mask;
    int32_t max_message_length;
    uint32_t max_readers;
} mp_ring_t;

typedef struct mp_ring_writer_stct
{
    mp_ring_t *ring;
    int64_t tail;
    int64_t oldest;
    int64_t next_seq;
    int64_t intent_floor; /* tail_intent left by a writer that died mid-record */
    int64_t latest;       /* start of the newest record put */
    uint64_t bytes_written;
    uint32_t since_heartbeat;
} mp_ring_writer_t;

typedef struct mp_ring_reader_stct
{
    mp_ring_t *ring;
    mp_ring_reader_slot_t *slot; /* NULL for an anonymous reader */
    int64_t position;
    int64_t next_seq;
    int64_t lost;
    int64_t overruns;
    uint64_t commit_gen;
} mp_ring_reader_t;

/* A batch read into caller-owned memory: payloads are packed into data (each at an 8-byte
 * aligned offset), their offsets/lengths/types go into the three arrays, and ends[i] is the
 * ring position just after record i (for mp_ring_reader_commit_at). */
typedef struct mp_ring_batch_stct
{
    uint8_t *data;
    int64_t data_capacity;
    int32_t *offsets;
    int32_t *lengths;
    int32_t *types;
    int64_t *ends;
    int32_t max_records;
    int32_t count;      /* out: records in this batch */
    int64_t first_seq;  /* out: seq of record 0; the others follow without gaps */
    int64_t lost;       /* out: records lost (lapped) just before first_seq */
    int64_t data_length;/* out: bytes of data used */
} mp_ring_batch_t;

typedef struct mp_ring_stats_stct
{
    int64_t capacity;
    int64_t segment_length;
    int32_t max_message_length;
    uint32_t max_readers;
    int64_t created_ns;
    int64_t tail;
    int64_t tail_intent;
    int64_t oldest_position;
    int64_t oldest_seq;
    int64_t next_seq;
    uint64_t bytes_written;
    uint32_t writer_state;
    int32_t writer_pid;
    int64_t writer_heartbeat_ns;
    int64_t writer_started_ns;
    uint64_t writer_attach_count;
} mp_ring_stats_t;

typedef struct mp_ring_slot_stats_stct
{
    char name[MP_RING_NAME_LENGTH + 1];
    int32_t pid;
    int64_t position;
    int64_t next_seq;
    int64_t lost;
    int64_t overruns;
    int64_t attached_ns;
    mp_ring_commit_t committed;
} mp_ring_slot_stats_t;

/* ---- small helpers -------------------------------------------------------------------- */

static inline int64_t mp_ring_align(int64_t value)
{
    return (value + (MP_RING_RECORD_ALIGNMENT - 1)) & ~((int64_t)MP_RING_RECORD_ALIGNMENT - 1);
}

static inline int mp_ring_is_power_of_two(uint64_t value)
{
    return value > 0 && (value & (value - 1)) == 0;
}

static inline mp_ring_record_header_t *mp_ring_record_at(const mp_ring_t *ring, int64_t position)
{
    return (mp_ring_record_header_t *)(ring->data + (position & ring->mask));
}

/* ---- API ------------------------------------------------------------------------------ */

const char *mp_ring_last_error(void);
int64_t mp_ring_now_ns(void);          /* CLOCK_REALTIME */
int64_t mp_ring_monotonic_ns(void);    /* CLOCK_MONOTONIC, same clock as time.perf_counter_ns */
int mp_ring_segment_length(uint64_t capacity, uint32_t max_readers, uint64_t *length);
int mp_ring_create(mp_ring_t *ring, int fd, uint64_t capacity, uint32_t max_readers);
int mp_ring_open(mp_ring_t *ring, int fd, uint64_t file_length, int writable);
void mp_ring_close(mp_ring_t *ring);
int mp_ring_lock(int fd, int32_t which, int exclusive, int wait);
int mp_ring_unlock(int fd, int32_t which);
int mp_ring_lock_held(int fd, int32_t which);

int mp_ring_writer_attach(mp_ring_writer_t *writer, mp_ring_t *ring, int32_t pid);
/* Returns the record's seq (>= 1), or an MP_RING_ERROR_* result (< 0). */
int64_t mp_ring_write(mp_ring_writer_t *writer, int32_t type, const void *payload,
    int32_t length);
int mp_ring_write_batch(mp_ring_writer_t *writer, int32_t type, const void *data,
    int64_t data_length, const int32_t *lengths, int32_t count);
void mp_ring_writer_heartbeat(mp_ring_writer_t *writer);
void mp_ring_writer_close(mp_ring_writer_t *writer);
int64_t mp_ring_writer_max_lag(const mp_ring_writer_t *writer);

int32_t mp_ring_slot_find(const mp_ring_t *ring, const char *name);
int32_t mp_ring_slot_claim(mp_ring_t *ring, const char *name, int32_t start);
int mp_ring_slot_release(mp_ring_t *ring, int32_t index);
int mp_ring_reader_init(mp_ring_reader_t *reader, mp_ring_t *ring, int32_t slot, int32_t start,
    int32_t pid);
int32_t mp_ring_reader_read(mp_ring_reader_t *reader, mp_ring_batch_t *batch);
/* The struct format ("64s70s2x...") that unpacks a batch's payloads from its data as
 * bytes objects, skipping the alignment padding: RingReader.read() cuts a whole batch into
 * payloads with one struct call instead of a slice per record. Returns the format's length,
 * or -1 when `capacity` (MP_RING_FORMAT_ITEM per record is enough) is too small. */
int32_t mp_ring_batch_format(const mp_ring_batch_t *batch, char *out, int32_t capacity);
int mp_ring_reader_wait(mp_ring_reader_t *reader, int64_t timeout_ns, int64_t spin_ns);
int32_t mp_ring_reader_wait_read(mp_ring_reader_t *reader, mp_ring_batch_t *batch,
    int64_t timeout_ns, int64_t spin_ns);
int mp_ring_reader_available(const mp_ring_reader_t *reader);
void mp_ring_reader_commit(mp_ring_reader_t *reader);
int mp_ring_reader_commit_at(mp_ring_reader_t *reader, int64_t position, int64_t next_seq);
void mp_ring_reader_close(mp_ring_reader_t *reader);

void mp_ring_stats_read(const mp_ring_t *ring, mp_ring_stats_t *stats);
int mp_ring_slot_stats_read(const mp_ring_t *ring, uint32_t index, mp_ring_slot_stats_t *stats);

/* ---- benchmark loops (bench/ring.py): the C-level rate, no Python per record ---------- */

int64_t mp_ring_bench_write(mp_ring_writer_t *writer, int32_t size, int64_t count,
    int32_t batch, int64_t max_lag);
int64_t mp_ring_bench_write_paced(mp_ring_writer_t *writer, int32_t size, int64_t count,
    int64_t interval_ns);
int64_t mp_ring_bench_read(mp_ring_reader_t *reader, mp_ring_batch_t *batch, int64_t count,
    int64_t spin_ns, int64_t *latencies, int64_t *lost);
int64_t mp_ring_bench_stalls(int64_t duration_ns, int64_t threshold_ns, int64_t *gaps,
    int64_t max_gaps);

#endif /* MP_RING_H */
