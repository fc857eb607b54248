"""A small shared-memory block where a daemon publishes its stats for the aggregator.

The aggregator reads every instance's block without talking to the process (a stuck or
dead process cannot stall ``/health``), and a block that is missing, stale or malformed is
itself reported. File: ``/dev/shm/marketprism-stats.<name>``. Layout, little-endian::

    0   8s   magic  b"MPSTATS1"
    8   u32  layout version (1)
    12  u32  payload capacity in bytes
    16  u64  sequence: odd while the writer is updating, even when stable (a seqlock)
    24  u64  updated: wall-clock ns of the last publish
    32  u32  writer pid
    36  u32  payload length
    64  ...  payload: one JSON object (the daemon's stats document)

One writer per block; readers retry while the sequence is odd or changed during their copy.
Each header field is written with one aligned 8- or 4-byte ``pack_into`` (a single memcpy
the CPU performs as one store on x86-64), and the sequence is bumped before and after the
payload, so a reader never accepts a half-written document.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from typing import Any

from supervisor import jsonlib

MAGIC = b"MPSTATS1"
VERSION = 1
HEADER_SIZE = 64
DEFAULT_CAPACITY = 64 * 1024
PREFIX = "/dev/shm/marketprism-stats."
_HDR = struct.Struct("<8sII")
_SEQ = struct.Struct("<Q")
_META = struct.Struct("<QII")  # updated, pid, length at offset 24


class StatsBlockError(Exception):
    """A stats block is missing, has the wrong layout, or holds no valid document."""


def block_path(name: str) -> str:
    return PREFIX + name


class StatsWriter:
    """Publishes a JSON-able dict into the block (creates or re-attaches it)."""

    def __init__(self, name: str, capacity: int = DEFAULT_CAPACITY) -> None:
        self.path = block_path(name)
        size = HEADER_SIZE + capacity
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            if os.fstat(fd).st_size != size:
                os.ftruncate(fd, size)
            self._mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self.capacity = capacity
        _HDR.pack_into(self._mm, 0, MAGIC, VERSION, capacity)
        (seq,) = _SEQ.unpack_from(self._mm, 16)
        self._seq = seq + (seq & 1)  # a writer killed mid-update left it odd
        _SEQ.pack_into(self._mm, 16, self._seq)

    def publish(self, doc: dict[str, Any]) -> None:
        data = jsonlib.dumps(doc)
        if len(data) > self.capacity:
            raise StatsBlockError(f"{self.path}: stats document of {len(data)} bytes exceeds "
                                  f"{self.capacity}")
        mm = self._mm
        self._seq += 1
        _SEQ.pack_into(mm, 16, self._seq)  # odd: readers retry
        mm[HEADER_SIZE:HEADER_SIZE + len(data)] = data
        _META.pack_into(mm, 24, time.time_ns(), os.getpid(), len(data))
        self._seq += 1
        _SEQ.pack_into(mm, 16, self._seq)  # even: stable

    def close(self, unlink: bool = False) -> None:
        self._mm.close()
        if unlink:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


def read_block(name: str, attempts: int = 50) -> tuple[dict[str, Any], int, int]:
    """(document, updated wall ns, writer pid) of a block; raises StatsBlockError."""
    path = block_path(name)
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise StatsBlockError(f"{path}: no stats block (instance never started?)") from None
    except OSError as exc:
        raise StatsBlockError(f"{path}: {exc.strerror}") from None
    for _ in range(attempts):
        if len(raw) < HEADER_SIZE:
            raise StatsBlockError(f"{path}: truncated ({len(raw)} bytes)")
        magic, version, capacity = _HDR.unpack_from(raw, 0)
        if magic != MAGIC:
            raise StatsBlockError(f"{path}: bad magic {magic!r}")
        if version != VERSION:
            raise StatsBlockError(f"{path}: layout version {version}, expected {VERSION}")
        (seq,) = _SEQ.unpack_from(raw, 16)
        updated, pid, length = _META.unpack_from(raw, 24)
        if seq & 1 == 0 and length <= capacity and HEADER_SIZE + length <= len(raw):
            payload = raw[HEADER_SIZE:HEADER_SIZE + length]
            with open(path, "rb") as fh:  # re-check the sequence after the copy
                (seq2,) = _SEQ.unpack(fh.read(24)[16:24])
            if seq2 == seq:
                if length == 0:
                    raise StatsBlockError(f"{path}: no document published yet")
                try:
                    doc = jsonlib.loads(payload)
                except jsonlib.JSONDecodeError as exc:
                    raise StatsBlockError(f"{path}: malformed document: {exc}") from None
                if not isinstance(doc, dict):
                    raise StatsBlockError(f"{path}: document is not an object")
                return doc, updated, pid
        time.sleep(0.001)
        with open(path, "rb") as fh:
            raw = fh.read()
    raise StatsBlockError(f"{path}: writer kept updating; gave up after {attempts} tries")


def list_blocks() -> list[str]:
    base = os.path.dirname(PREFIX)
    stem = os.path.basename(PREFIX)
    return sorted(f[len(stem):] for f in os.listdir(base) if f.startswith(stem))


__all__ = ["StatsWriter", "StatsBlockError", "read_block", "list_blocks", "block_path"]
