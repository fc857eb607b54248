"""The JetStream side the bridge checks on every connection: the stream and its last message.

- :func:`ensure_stream`: the stream exists and captures ``<prefix>.<instance>.>``; created
  from the config (file storage, limits retention, discard old) when ``create_stream`` is
  on. An existing stream is never modified: it may be the operator's.
- :func:`last_stored`: the ring seq of the newest message the stream holds from this
  instance's ring (the resume point that does not depend on the duplicate window).
"""

from __future__ import annotations

import logging

from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from supervisor.config import NatsConfig
from supervisor.nats_bridge.wire import MSG_ID, filter_subject, parse_msg_id


class StreamMismatch(Exception):
    """The stream is missing (and may not be created) or does not capture our subjects."""


def covers(pattern: str, subject: str) -> bool:
    """Whether stream subject ``pattern`` captures every subject matching ``subject``.

    In ``pattern``, ``*`` matches one token and ``>`` the rest; in ``subject``, ``*`` stands
    for any one token. Our subjects are ``<prefix>.<instance>.*.*``: captured by
    ``<prefix>.<instance>.>``, ``<prefix>.>`` or ``>``, not by ``<prefix>.*.trade.>``.
    """
    want = subject.split(".")
    have = pattern.split(".")
    for i, token in enumerate(have):
        if token == ">":
            return i < len(want)
        if i >= len(want) or (token != "*" and token != want[i]):
            return False
    return len(have) == len(want)


async def ensure_stream(js: JetStreamContext, cfg: NatsConfig, instance: str,
                        log: logging.Logger) -> None:
    """Check (or create) ``cfg.stream``; raises :class:`StreamMismatch`."""
    subject = filter_subject(cfg.subject_prefix, instance)
    try:
        info = await js.stream_info(cfg.stream)
    except NotFoundError:
        if not cfg.create_stream:
            raise StreamMismatch(f"stream {cfg.stream} does not exist and create_stream is "
                                 "false") from None
        await js.add_stream(api.StreamConfig(
            name=cfg.stream, subjects=[subject], retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType.FILE, discard=api.DiscardPolicy.OLD,
            max_age=cfg.max_age, max_bytes=cfg.max_bytes,
            duplicate_window=cfg.duplicate_window, num_replicas=cfg.replicas,
            description=f"marketprism events of {instance}"))
        log.info("created stream %s for %s (max_age %gs, max_bytes %d, duplicate window %gs)",
                 cfg.stream, subject, cfg.max_age, cfg.max_bytes, cfg.duplicate_window)
        return
    subjects = info.config.subjects or []
    if not any(covers(p, f"{cfg.subject_prefix}.{instance}.*.*") for p in subjects):
        raise StreamMismatch(f"stream {cfg.stream} captures {', '.join(subjects) or 'nothing'}"
                             f", not {subject}")


async def last_stored(js: JetStreamContext, cfg: NatsConfig, instance: str,
                      source: str) -> int:
    """Ring seq of the newest message in the stream from ``source`` (0: none, or another
    ring's: then only the duplicate window protects the first re-sent records)."""
    try:
        msg = await js.get_last_msg(cfg.stream, filter_subject(cfg.subject_prefix, instance))
    except NotFoundError:
        return 0
    try:
        origin, seq = parse_msg_id((msg.headers or {}).get(MSG_ID, ""))
    except ValueError:
        return 0
    return seq if origin == source else 0


__all__ = ["StreamMismatch", "covers", "ensure_stream", "last_stored"]
