"""How a ring record travels on NATS: subject, de-duplication id, payload.

One JetStream message per ring record::

    subject      <prefix>.<instance>.<type>.<symbol>
                 e.g. marketprism.okx_spot.book_delta.BTC-USDT
    Nats-Msg-Id  <instance>:<ring epoch>:<ring seq>
                 e.g. okx_spot:1795000000123456789:42
    payload      encoding "binary": the ring record's payload, byte for byte
                 (:mod:`supervisor.codec` layout; the kind is the subject's <type> token)
                 encoding "json": the collector's ZeroMQ document, ``{"type", "instance",
                 <the event's fields>, "ring_seq"}`` with decimals as the venue's strings

The id is what makes a bridge restart lossless and duplicate-free: the bridge re-publishes
everything after its last ring commit, and JetStream drops a message whose id it stored
within the stream's duplicate window. The ring epoch (the segment's creation time) keeps a
re-created ring, whose sequences start again at 1, from colliding with ids still in that
window (its records would be dropped as duplicates).

Consumers read the ring sequence from the id (:func:`parse_msg_id`): it grows by one per
record, so a jump is an exact count of records that never reached the stream.
"""

from __future__ import annotations

import struct

from supervisor import codec, jsonlib
from supervisor.events import Kind

MSG_ID = "Nats-Msg-Id"
KIND_TOKENS = {int(kind): codec.KIND_NAMES[kind] for kind in Kind}  # 2 -> "book_delta"
KIND_OF_TOKEN = {token: kind for kind, token in KIND_TOKENS.items()}
_SYMBOL_LEN = 32  # codec header: uint8 symbol length
_SYMBOL = 40  # codec header: symbol bytes start
_RECV_MONO = struct.Struct("<q")  # codec header: ts_recv_mono at offset 24


def filter_subject(prefix: str, instance: str) -> str:
    """Every subject of one instance: ``<prefix>.<instance>.>`` (the stream's subject)."""
    return f"{prefix}.{instance}.>"


def msg_id_prefix(instance: str, epoch: int) -> str:
    """The id of ring record ``seq`` is this prefix followed by ``seq``."""
    return f"{instance}:{epoch}:"


def parse_msg_id(value: str) -> tuple[str, int]:
    """``("<instance>:<epoch>", seq)`` of a message id; raises ValueError if not ours."""
    source, sep, seq = value.rpartition(":")
    if not sep or source.count(":") != 1 or not seq.isdigit():
        raise ValueError(f"not a marketprism message id: {value!r}")
    return source, int(seq)


def recv_mono(payload: memoryview | bytes) -> int:
    """The record's collector receive time (``CLOCK_MONOTONIC`` ns), from its header."""
    return _RECV_MONO.unpack_from(payload, 24)[0]


class Subjects:
    """Subject of each ring record, cached per (kind, symbol): both repeat endlessly.

    Reads the symbol straight from the record header (no decode); a record too short to
    hold one raises :class:`~supervisor.codec.CodecError`.
    """

    def __init__(self, prefix: str, instance: str) -> None:
        self._base = f"{prefix}.{instance}."
        self._cache: dict[tuple[int, bytes], str] = {}

    def __call__(self, kind: int, payload: memoryview) -> str:
        if len(payload) < _SYMBOL:
            raise codec.CodecError(f"record of {len(payload)} bytes has no header")
        symbol = bytes(payload[_SYMBOL:_SYMBOL + payload[_SYMBOL_LEN]])
        key = (kind, symbol)
        subject = self._cache.get(key)
        if subject is None:
            token = KIND_TOKENS.get(kind)
            text = symbol.decode("ascii", "replace")
            if token is None or not text or any(c in text for c in ". *>\t\r\n"):
                raise codec.CodecError(f"no subject for kind {kind} symbol {text!r}")
            subject = self._cache[key] = f"{self._base}{token}.{text}"
        return subject


def json_payload(instance: str, kind: int, payload: memoryview, seq: int) -> bytes:
    """The ZeroMQ document of one ring record (the slow, interoperable encoding)."""
    event = codec.decode(kind, payload)
    doc = event._asdict()
    doc["type"] = KIND_TOKENS[kind]
    doc["instance"] = instance
    doc["ring_seq"] = seq
    return jsonlib.dumps(doc)


__all__ = ["MSG_ID", "KIND_TOKENS", "KIND_OF_TOKEN", "Subjects", "filter_subject",
           "msg_id_prefix", "parse_msg_id", "recv_mono", "json_payload"]
