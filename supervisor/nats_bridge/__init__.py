"""NATS JetStream bridge: one instance's ring published to JetStream, losslessly.

``marketprism-nats-bridge INSTANCE`` (unit ``nats-bridge@INSTANCE``) reads the instance's
ring under its own durable reader name and publishes every record to
``<prefix>.<instance>.<type>.<symbol>`` with publish acks, a bounded in-flight window and
``Nats-Msg-Id`` de-duplication ids (:mod:`.wire`), so a bridge restart neither loses nor
duplicates. Modules:

- :mod:`.wire`: subjects, message ids, payload encodings (shared with consumers);
- :mod:`.window`: the sequencing rule (ack window, resume point, lap accounting);
- :mod:`.stream`: the stream check/creation and the last stored record;
- :mod:`.bridge`: sessions, the pump, backoff, counters;
- :mod:`.main`: the systemd daemon.
"""

from supervisor.nats_bridge.wire import filter_subject, msg_id_prefix, parse_msg_id

__all__ = ["filter_subject", "msg_id_prefix", "parse_msg_id"]
