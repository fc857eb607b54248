"""Run totals across process restarts, growth verdicts, latency percentiles, journal parsing."""

from __future__ import annotations

import socket
import time

from soak import figures, probe
from soak.run import DEMO, PLUGIN, soak_config
from supervisor.histogram import Histogram

MB = 1 << 20


def hist(*values_ns: int) -> dict:
    h = Histogram()
    for v in values_ns:
        h.observe(v)
    return h.to_dict()


# ----- histograms ----------------------------------------------------------------------------
def test_merged_histograms_add_their_buckets():
    merged = figures.merge_hist([hist(3_000, 40_000), {}, hist(40_000)])
    assert merged["count"] == 3 and sum(merged["counts"]) == 3
    assert merged["counts"][0] == 1 and merged["counts"][3] == 2


def test_percentiles_are_bucket_upper_bounds_in_ms_and_none_above_the_last():
    p = figures.percentiles(figures.merge_hist([hist(*([3_000] * 98 + [40_000, 2 * 10**9]))]))
    assert (p["p50_ms"], p["p99_ms"], p["p99.9_ms"]) == (0.005, 0.05, None)
    assert figures.percentiles(None) == {"count": 0}


# ----- banking across restarts -----------------------------------------------------------------
def sample(t: float, pid: int, messages: int, resyncs: dict, rss: int = 50 * MB,
           fds: int = 20, cw: int = 0, started: float = 0.0) -> dict:
    return {"t": t, "units": {"collector@a.service": {"ActiveState": "active"}},
            "stats": {"a": {"pid": pid, "messages": messages, "resyncs": resyncs,
                            "latency_recv_ring": hist(3_000)}},
            "procs": {"collector@a.service": {"pid": pid, "rss": rss, "fds": fds,
                                              "close_wait": cw, "cpu": 1.0,
                                              "started": started}}}


def test_totals_sum_the_last_counters_of_every_process_an_instance_had():
    bank = figures.Bank()
    bank.feed(sample(1, 10, 100, {"sequence_gap": 1}))
    bank.feed(sample(2, 10, 300, {"sequence_gap": 2}))  # same process: replaced
    bank.feed(sample(3, 11, 50, {"disconnect": 1}))  # restarted: added
    assert bank.totals("a", "messages") == 350
    assert bank.totals("a", "resyncs") == {"disconnect": 1, "sequence_gap": 2}
    assert bank.pids("a") == 2 and bank.histogram("a", "latency_recv_ring")["count"] == 2


# ----- growth ----------------------------------------------------------------------------------
def run(rss_at, fds_at=lambda t: 20, cw_at=lambda t: 0, pid_at=lambda t: 7,
        started_at=lambda t: 0.0, end: int = 600):
    return [{"t": float(t), "pid": pid_at(t), "rss": rss_at(t), "fds": fds_at(t),
             "close_wait": cw_at(t), "cpu": 1.0, "started": started_at(t)}
            for t in range(0, end + 1, 10)]


def judge(samples, **kw):
    args = {"baseline_after": 60.0, "end_after": 560.0, "warmup": 60.0, "min_span": 150.0}
    args.update(kw)
    return figures.growth(samples, **args)


def test_a_steady_process_is_ok():
    g = judge(run(lambda t: 50 * MB))
    assert g["verdict"] == "ok" and g["rss_growth_pct"] == 0 and g["span_s"] >= 490


def test_a_leak_is_caught():
    g = judge(run(lambda t: 50 * MB + t * 10_000))
    assert g["verdict"] == "grew" and g["rss_growth_pct"] > 5 and "rss +" in g["why"]


def test_growth_during_warm_up_does_not_count():
    g = judge(run(lambda t: 30 * MB + min(t, 60) * MB // 3))
    assert g["verdict"] == "ok"


def test_one_spike_at_either_end_neither_fakes_nor_hides_growth():
    g = judge(run(lambda t: 80 * MB if t in (60, 600) else 50 * MB))
    assert g["verdict"] == "ok" and g["rss_start"] == g["rss_end"] == 50 * MB


def test_leaked_descriptors_and_close_wait_sockets_are_caught():
    g = judge(run(lambda t: 50 * MB, fds_at=lambda t: 20 + t // 100))
    assert g["verdict"] == "grew" and "fds" in g["why"]
    g = judge(run(lambda t: 50 * MB, cw_at=lambda t: t // 200))
    assert g["verdict"] == "grew" and "CLOSE_WAIT" in g["why"]


def test_a_process_restarted_late_is_not_judged_but_reported():
    late = run(lambda t: 50 * MB, pid_at=lambda t: 7 if t < 550 else 8,
               started_at=lambda t: 0.0 if t < 550 else 550.0)
    g = judge(late)
    assert g["verdict"] == "not judged" and g["restarted_processes"] == 1
    assert "started too late" in g["why"] and g["rss_end"] == 50 * MB
    g = judge(late, end_after=480.0, warmup=20.0)
    assert g["verdict"] == "not judged" and g["why"].startswith("only 30s between")


def test_a_process_restarted_early_is_judged_from_its_own_warm_up():
    early = run(lambda t: 50 * MB, pid_at=lambda t: 7 if t < 100 else 8,
                started_at=lambda t: 0.0 if t < 100 else 100.0)
    g = judge(early)
    assert g["verdict"] == "ok" and g["pid"] == 8 and g["span_s"] == 440


# ----- restarts from the journal -----------------------------------------------------------
JOURNAL = """\
1795436424.100 lab systemd[1]: Starting marketprism collector a...
1795436425.200 lab systemd[1]: Started marketprism collector a.
1795436430.000 lab marketprism-collector[139]: collector[a]: resync symbol=X reason=disconnect
1795436500.000 lab systemd[1]: collector@a.service: Main process exited, code=killed, status=9/KILL
1795436500.001 lab systemd[1]: collector@a.service: Failed with result 'signal'.
1795436502.300 lab systemd[1]: Started marketprism collector a.
1795436600.000 lab systemd[1]: collector@a.service: Watchdog timeout (limit 30s)!
1795436615.000 lab systemd[1]: collector@a.service: Main process exited, code=killed, status=6/ABRT
1795436615.001 lab systemd[1]: collector@a.service: Failed with result 'watchdog'.
1795436617.000 lab systemd[1]: Started marketprism collector a.
"""


def test_the_unit_journal_gives_starts_and_failure_causes():
    j = figures.parse_unit_journal(JOURNAL)
    assert j["starts"] == [1795436425.2, 1795436502.3, 1795436617.0]
    assert j["results"] == {"signal": 1, "watchdog": 1}
    assert j["exits"] == {"killed=9/KILL": 1, "killed=6/ABRT": 1}


# ----- probe helpers -----------------------------------------------------------------------------
def test_close_wait_counts_sockets_whose_peer_closed_first():
    import psutil

    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    peer, _ = server.accept()
    try:
        me = psutil.Process()
        assert probe.close_wait(me) == 0
        peer.close()  # the peer's FIN: our client end sits in CLOSE_WAIT until closed
        deadline = time.monotonic() + 5
        while probe.close_wait(me) != 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert probe.close_wait(me) == 1
        client.close()
        assert probe.close_wait(me) == 0
    finally:
        client.close()
        server.close()


def test_systemctl_show_blocks_are_split_by_unit():
    text = ("Id=a.service\nActiveState=active\nMainPID=5\n\n"
            "Id=b.service\nActiveState=failed\nMainPID=0\n")
    assert probe.parse_show(text) == {
        "a.service": {"Id": "a.service", "ActiveState": "active", "MainPID": "5"},
        "b.service": {"Id": "b.service", "ActiveState": "failed", "MainPID": "0"}}


def test_the_soak_config_moves_every_port_and_loads_the_plugin(tmp_path):
    from supervisor import config

    path = tmp_path / "m.toml"
    path.write_text(soak_config(DEMO.read_text(), 10000, str(PLUGIN), 4 << 20))
    cfg = config.load(str(path))
    assert (cfg.aggregator.health_port, cfg.aggregator.metrics_port) == (18087, 19092)
    for inst in cfg.instances.values():
        assert inst.ws_url.startswith("ws://127.0.0.1:18090/")
        assert inst.rest_url.startswith("http://127.0.0.1:18090/")
        assert inst.zmq_pub.startswith("tcp://127.0.0.1:156")
        assert inst.analyzer.zmq_pub.startswith("tcp://127.0.0.1:156")
        assert inst.analyzer.plugin == str(PLUGIN) and inst.ring_capacity == 4 << 20


def test_a_process_that_missed_the_conditioning_round_is_not_judged():
    restarted = run(lambda t: 50 * MB, pid_at=lambda t: 7 if t < 70 else 8,
                    started_at=lambda t: 0.0 if t < 70 else 70.0)
    g = judge(restarted, started_before=5.0)
    assert g["verdict"] == "not judged" and "after the conditioning round" in g["why"]
    assert judge(run(lambda t: 50 * MB), started_before=5.0)["verdict"] == "ok"
