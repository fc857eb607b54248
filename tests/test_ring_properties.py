"""Property tests: framing across the wrap point against a model of the layout.

The model re-derives, from positions alone, where each record lands (8-byte alignment,
padding at the end of the data region) and which records a reader still finds or has lost.
The ring must agree exactly: same records, same sequence numbers, same lost counts.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shm

CAPACITY = 4096
MAX = CAPACITY // 8


def align(n: int) -> int:
    return (n + 7) & ~7


@dataclass
class Model:
    """Where records land, from the layout rules alone."""

    tail: int = 0
    starts: list[int] = field(default_factory=list)  # start position of record seq = i + 1
    payloads: list[bytes] = field(default_factory=list)
    types: list[int] = field(default_factory=list)

    def write(self, payload: bytes, type_id: int = 1) -> None:
        aligned = align(16 + len(payload))
        room = CAPACITY - self.tail % CAPACITY
        start = self.tail + (room if aligned > room else 0)
        self.starts.append(start)
        self.payloads.append(payload)
        self.types.append(type_id)
        self.tail = start + aligned

    def end(self, seq: int) -> int:
        return self.starts[seq - 1] + align(16 + len(self.payloads[seq - 1]))

    def oldest_seq(self) -> int:
        """First record that starts within one capacity of the tail."""
        limit = self.tail - CAPACITY
        return next(seq for seq, start in enumerate(self.starts, 1) if start >= limit)

    def read(self, next_seq: int, position: int, limit: int) -> tuple[int, int]:
        """(lost, first seq delivered) for a reader at ``position`` expecting ``next_seq``."""
        if position + CAPACITY < self.tail:
            oldest = self.oldest_seq()
            return oldest - next_seq, oldest
        return 0, next_seq


sizes = st.one_of(st.integers(0, MAX), st.sampled_from([0, 1, 7, 8, 9, MAX - 1, MAX]))
ops = st.lists(st.one_of(st.tuples(st.just("write"), st.lists(sizes, min_size=1, max_size=40)),
                         st.tuples(st.just("write_batch"), st.lists(sizes, max_size=40)),
                         st.tuples(st.just("read"), st.integers(1, 64))),
               min_size=1, max_size=60)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops)
def test_framing_matches_the_model_across_wraps(ops: list) -> None:
    name = f"prop-{uuid.uuid4().hex[:12]}"
    model = Model()
    try:
        with shm.RingWriter(name, capacity=CAPACITY) as writer, \
                shm.RingReader(name, reader="prop", start="oldest") as reader:
            next_seq, position = 1, 0
            for op, arg in ops:
                if op == "write":
                    for size in arg:
                        payload = bytes([len(model.payloads) % 251]) * size
                        model.write(payload, 1 + size % 5)
                        assert writer.write(payload, type_id=1 + size % 5) == len(model.payloads)
                    assert writer.stats().tail == model.tail
                    continue
                if op == "write_batch":  # one C call, claimed and published chunk by chunk
                    batch_payloads = [bytes([(len(model.payloads) + i) % 251]) * size
                                      for i, size in enumerate(arg)]
                    first_seq = len(model.payloads) + 1
                    for payload in batch_payloads:
                        model.write(payload, 6)
                    assert writer.write_many(batch_payloads, type_id=6) == first_seq
                    assert writer.stats().tail == model.tail
                    continue
                reader._batch.max_records = arg  # vary the batch size per read
                batch = reader.read_batch()
                if next_seq > len(model.payloads):
                    assert batch.count == 0
                    continue
                lost, first = model.read(next_seq, position, arg)
                assert (batch.lost, batch.first_seq) == (lost, first)
                assert batch.count == min(arg, len(model.payloads) - first + 1)
                for i, record in enumerate(batch):
                    seq = first + i
                    assert record.seq == seq
                    assert record.type_id == model.types[seq - 1]
                    assert bytes(record.payload) == model.payloads[seq - 1]
                next_seq = first + batch.count
                position = model.end(next_seq - 1)
    finally:
        shm.remove_ring(name, force=True)


@settings(max_examples=60, deadline=None)
@given(payloads=st.lists(st.binary(min_size=0, max_size=MAX), min_size=1, max_size=300),
       skip=st.integers(0, 300))
def test_restarted_writer_frames_the_same_records(payloads: list[bytes], skip: int) -> None:
    """A writer re-attached at any point (after a wrap too) continues the framing exactly."""
    name = f"prop-{uuid.uuid4().hex[:12]}"
    model = Model()
    try:
        split = min(skip, len(payloads))
        for part in (payloads[:split], payloads[split:]):
            with shm.RingWriter(name, capacity=CAPACITY) as writer:
                for payload in part:
                    model.write(payload)
                    assert writer.write(payload) == len(model.payloads)
        with shm.RingReader(name, start="oldest") as reader:
            records = list(iter(reader.read, None))
        first = model.oldest_seq()
        assert [r.seq for r in records] == list(range(first, len(payloads) + 1))
        assert [r.payload for r in records] == payloads[first - 1:]
    finally:
        shm.remove_ring(name, force=True)


reader_ops = st.lists(st.one_of(st.tuples(st.just("write"), st.integers(1, 30)),
                                st.tuples(st.just("read"), st.integers(1, 12)),
                                st.tuples(st.just("read_batch"), st.integers(1, 12)),
                                st.tuples(st.just("commit"), st.just(0)),
                                st.tuples(st.just("reopen"), st.just(0))),
                      min_size=1, max_size=50)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=reader_ops)
def test_read_and_read_batch_interleave_with_commits_and_restarts(ops: list) -> None:
    """read() hands records out of a read-ahead batch; whatever mix of read(), read_batch(),
    commit() and re-attaching under the same name, each record comes out once, in order, and
    a re-attached reader resumes right after the last committed record handed out."""
    name = f"prop-{uuid.uuid4().hex[:12]}"
    written = 0
    delivered = 0  # records handed out since the last (re)attach, counted from `resume`
    committed = 0  # seq of the last committed record
    try:
        with shm.RingWriter(name, capacity=1 << 16) as writer:  # never laps here
            reader = shm.RingReader(name, reader="mix", start="oldest", batch_records=5)
            try:
                for op, arg in ops:
                    if op == "write":
                        for _ in range(arg):
                            written += 1
                            writer.write(written.to_bytes(4, "little"), type_id=2)
                    elif op == "read":
                        for _ in range(arg):
                            record = reader.read()
                            if delivered == written:
                                assert record is None
                                break
                            delivered += 1
                            assert record == (delivered, 2, delivered.to_bytes(4, "little"), 0)
                    elif op == "read_batch":
                        batch = reader.read_batch()
                        assert batch.count <= 5 and batch.lost == 0
                        assert batch.first_seq == delivered + 1 or batch.count == 0
                        for record in batch:
                            delivered += 1
                            assert (record.seq, bytes(record.payload)) == \
                                (delivered, delivered.to_bytes(4, "little"))
                    elif op == "commit":
                        reader.commit()
                        committed = delivered
                    else:
                        reader.close()
                        reader = shm.RingReader(name, reader="mix", batch_records=5)
                        delivered = committed
                    assert reader.next_seq == delivered + 1
                    assert reader.wait(0) == (delivered < written)
            finally:
                reader.close()
    finally:
        shm.remove_ring(name, force=True)
