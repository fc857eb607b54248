"""The NATS bridge's stats block (``<instance>.nats``) as metric families.

The bridge (``supervisor/nats_bridge``) publishes its session state and its counters
(``BridgeStats``); the per-process fields (RSS, CPU, readiness) are exported with the other
roles by :mod:`.metrics`. Every numeric field not named below is still exported, as
``marketprism_nats_bridge_<key>`` (the rule of :func:`.families.add_fields`), so a new
bridge counter shows up unchanged.
"""

from __future__ import annotations

from supervisor.aggregator.families import BASE, Families, add_fields, cumulative_buckets
from supervisor.aggregator.sources import InstanceSample

PREFIX = "nats_bridge_"
# key -> (kind, help); the name is nats_bridge_<key> (+ _records for record counts).
KNOWN: dict[str, tuple[str, str, str]] = {
    "lag": ("lag_records", "gauge", "Ring records written but not yet published to JetStream."),
    "in_flight": ("in_flight", "gauge", "Publishes awaiting their JetStream ack."),
    "max_in_flight": ("max_in_flight", "gauge", "Configured limit of publishes in flight."),
    "in_flight_max": ("in_flight_peak", "gauge", "Most publishes ever in flight at once."),
    "acked_seq": ("acked_sequence", "gauge", "Ring sequence of the last acked record."),
    "committed_seq": ("committed_sequence", "gauge",
                      "Ring sequence the bridge committed (a restart resumes after it)."),
    "ring_seq": ("ring_sequence", "gauge", "The ring's last written sequence."),
    "backoff_seconds": ("backoff_seconds", "gauge", "Seconds left before the next connect."),
    "published": ("published", "counter", "Messages sent to JetStream (re-sends included)."),
    "acked": ("acked", "counter", "Positive acks (duplicates included)."),
    "duplicates": ("duplicates", "counter", "Acks saying the stream already had the message."),
    "skipped": ("skipped_records", "counter",
                "Records not re-sent because the stream already holds them."),
    "lost": ("lost_records", "counter", "Records a ring lap took before they were published."),
    "overruns": ("overruns", "counter", "Times the ring's writer lapped the bridge."),
    "oversize": ("oversize_records", "counter", "Records larger than the server's max_payload."),
    "malformed": ("malformed_records", "counter", "Records without a valid header."),
    "ack_errors": ("ack_errors", "counter", "Error acks (JetStream refused a message)."),
    "ack_timeouts": ("ack_timeouts", "counter", "Sessions ended by a late ack."),
    "connects": ("connects", "counter", "Sessions started."),
    "connect_failures": ("connect_failures", "counter",
                         "Connection attempts that did not give a working session."),
    "sessions_ended": ("sessions_ended", "counter", "Sessions that ended on a failure."),
    "commits": ("commits", "counter", "Ring cursor commits."),
}
# Identity, text and per-process fields (exported by .metrics for every role).
SKIP = frozenset({"role", "instance", "pid", "started", "status", "ready", "loop_lag",
                  "loop_lag_max", "rss", "cpu_seconds", "connected", "publish_to_ack"})


def export_bridge(f: Families, base: tuple[str, ...], inst: InstanceSample) -> None:
    block = inst.bridge
    if block is None or block.doc is None:
        return
    doc = block.doc
    connected = doc.get("connected")
    if isinstance(connected, bool):
        f.add("gauge", PREFIX + "connected", "1 while the bridge has a JetStream session.",
              BASE, base, 1 if connected else 0)
    hist = cumulative_buckets(doc.get("publish_to_ack"))
    if hist is not None:
        f.histogram(PREFIX + "publish_to_ack_seconds", "Publish to JetStream ack latency.",
                    BASE, base, *hist)
    add_fields(f, base, doc, PREFIX, KNOWN, SKIP, "NATS bridge")
