/*
 * cffi declarations for shm._native (API mode). Mirrors mp_ring.h; cffi checks every field
 * and constant against the real header at build time, and `...;` lets the compiler place
 * padding. Atomic fields are declared with their plain type: Python never touches them, the
 * declarations exist for ffi.offsetof/ffi.sizeof (tests/test_ring_layout.py).
 */

#define MP_RING_MAGIC ...

#define MP_RING_LAYOUT_VERSION ...
#define MP_RING_CACHE_LINE_LENGTH ...
#define MP_RING_RECORD_ALIGNMENT ...
#define MP_RING_FORMAT_ITEM ...
#define MP_RING_RECORD_HEADER_LENGTH ...
#define MP_RING_PADDING_TYPE ...
#define MP_RING_FIRST_SEQ ...
#define MP_RING_NAME_LENGTH ...
#define MP_RING_SLOT_LENGTH ...
#define MP_RING_DESCRIPTOR_LENGTH ...
#define MP_RING_PAGE_LENGTH ...
#define MP_RING_MIN_CAPACITY ...
#define MP_RING_MAX_CAPACITY ...
#define MP_RING_MAX_READERS ...
#define MP_RING_LOCK_WRITER ...
#define MP_RING_LOCK_SLOTS ...
#define MP_RING_LOCK_FIRST_SLOT ...

typedef enum mp_ring_result_en
{
    MP_RING_SUCCESS = 0,
    MP_RING_TIMEOUT = -1,
    MP_RING_INTERRUPTED = -2,
    MP_RING_ERROR_ARGUMENT = -3,
    MP_RING_ERROR_CORRUPT = -4,
    MP_RING_ERROR_MAGIC = -5,
    MP_RING_ERROR_VERSION = -6,
    MP_RING_ERROR_LAYOUT = -7,
    MP_RING_ERROR_NO_SLOT = -8,
    MP_RING_ERROR_SYSTEM = -9
} mp_ring_result_t;

typedef enum mp_ring_writer_state_en
{
    MP_RING_WRITER_NEVER = 0,
    MP_RING_WRITER_RUNNING = 1,
    MP_RING_WRITER_STOPPED = 2
} mp_ring_writer_state_t;

typedef enum mp_ring_start_en
{
    MP_RING_START_LATEST = 0,
    MP_RING_START_OLDEST = 1
} mp_ring_start_t;

typedef struct mp_ring_header_stct
{
    uint64_t magic;
    uint32_t layout_version;
    uint32_t record_alignment;
    uint64_t capacity;
    uint32_t max_readers;
    uint32_t max_message_length;
    uint64_t data_offset;
    uint64_t segment_length;
    uint64_t slots_offset;
    uint32_t slot_length;
    uint32_t record_header_length;
    int64_t created_ns;
    ...;
} mp_ring_header_t;

typedef struct mp_ring_writer_counters_stct
{
    int64_t tail_intent;
    int64_t tail;
    int64_t oldest_position;
    int64_t latest_position;
    int64_t next_seq;
    uint64_t bytes_written;
    uint32_t futex_word;
    ...;
} mp_ring_writer_counters_t;

typedef struct mp_ring_writer_info_stct
{
    uint32_t state;
    int32_t pid;
    int64_t heartbeat_ns;
    int64_t started_ns;
    uint64_t attach_count;
    ...;
} mp_ring_writer_info_t;

typedef struct mp_ring_sleepers_stct
{
    uint32_t flag;
    ...;
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
    int64_t time_ns;
} mp_ring_commit_t;

typedef struct mp_ring_reader_slot_stct
{
    char name[32];
    uint32_t in_use;
    int32_t pid;
    uint64_t commit_gen;
    mp_ring_commit_t commits[2];
    int64_t position;
    int64_t next_seq;
    int64_t lost;
    int64_t overruns;
    int64_t attached_ns;
    ...;
} mp_ring_reader_slot_t;

typedef struct mp_ring_record_header_stct
{
    int32_t length;
    int32_t type;
    int64_t seq;
} mp_ring_record_header_t;

typedef struct mp_ring_stct
{
    int64_t capacity;
    int32_t max_message_length;
    uint32_t max_readers;
    uint64_t length;
    ...;
} mp_ring_t;

typedef struct mp_ring_writer_stct
{
    int64_t tail;
    int64_t next_seq;
    ...;
} mp_ring_writer_t;

typedef struct mp_ring_reader_stct
{
    int64_t position;
    int64_t next_seq;
    int64_t lost;
    int64_t overruns;
    ...;
} mp_ring_reader_t;

typedef struct mp_ring_batch_stct
{
    uint8_t *data;
    int64_t data_capacity;
    int32_t *offsets;
    int32_t *lengths;
    int32_t *types;
    int64_t *ends;
    int32_t max_records;
    int32_t count;
    int64_t first_seq;
    int64_t lost;
    int64_t data_length;
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
    char name[33];
    int32_t pid;
    int64_t position;
    int64_t next_seq;
    int64_t lost;
    int64_t overruns;
    int64_t attached_ns;
    mp_ring_commit_t committed;
} mp_ring_slot_stats_t;

const char *mp_ring_last_error(void);
int64_t mp_ring_now_ns(void);
int64_t mp_ring_monotonic_ns(void);
int mp_ring_segment_length(uint64_t capacity, uint32_t max_readers, uint64_t *length);
int mp_ring_create(mp_ring_t *ring, int fd, uint64_t capacity, uint32_t max_readers);
int mp_ring_open(mp_ring_t *ring, int fd, uint64_t file_length, int writable);
void mp_ring_close(mp_ring_t *ring);
int mp_ring_lock(int fd, int32_t which, int exclusive, int wait);
int mp_ring_unlock(int fd, int32_t which);
int mp_ring_lock_held(int fd, int32_t which);

int mp_ring_writer_attach(mp_ring_writer_t *writer, mp_ring_t *ring, int32_t pid);
int64_t mp_ring_write(mp_ring_writer_t *writer, int32_t type, const char *payload,
    int32_t length);
int mp_ring_write_batch(mp_ring_writer_t *writer, int32_t type, const char *data,
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

int64_t mp_ring_bench_write(mp_ring_writer_t *writer, int32_t size, int64_t count,
    int32_t batch, int64_t max_lag);
int64_t mp_ring_bench_write_paced(mp_ring_writer_t *writer, int32_t size, int64_t count,
    int64_t interval_ns);
int64_t mp_ring_bench_read(mp_ring_reader_t *reader, mp_ring_batch_t *batch, int64_t count,
    int64_t spin_ns, int64_t *latencies, int64_t *lost);
int64_t mp_ring_bench_stalls(int64_t duration_ns, int64_t threshold_ns, int64_t *gaps,
    int64_t max_gaps);
