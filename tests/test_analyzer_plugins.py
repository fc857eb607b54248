"""Plug-ins in-process: spec loading, failing events isolated, degraded setup, hang report."""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest

from supervisor.analyzer import example_plugin
from supervisor.analyzer.output import status_line
from supervisor.analyzer.plugins import (
    DEGRADED,
    OK,
    HangWatch,
    Plugin,
    PluginBatch,
    PluginContext,
    PluginEventError,
    PluginRunner,
    PluginSpecError,
    load_plugin,
)
from supervisor.events import Kind, Trade

LOG = logging.getLogger("test.plugins")


def trades(n, bad=()):
    return [Trade("X", i, 0, 0, 0, str(i), "buy", "bad" if i in bad else "1", "1")
            for i in range(n)], list(range(1000, 1000 + n))


def ctx(**options):
    return PluginContext("test", options, "/tmp", "ring", LOG)


# ----- loading ---------------------------------------------------------------------------
def test_specs_resolve_module_functions_and_files(tmp_path):
    assert load_plugin("") is None
    p = load_plugin("supervisor.analyzer.example_plugin:analyze")
    assert p.analyze is example_plugin.analyze and p.setup is example_plugin.setup
    assert p.kinds == {int(Kind.TRADE)}
    f = tmp_path / "mine.py"
    f.write_text("def analyze(batch):\n    return None\ndef other(batch):\n    return []\n")
    assert load_plugin(str(f)).analyze.__name__ == "analyze"
    assert load_plugin(f"{f}:other").analyze.__name__ == "other"
    assert load_plugin(str(f)).kinds == {int(k) for k in Kind}


@pytest.mark.parametrize("spec, message", [
    ("no_such_module_xyz:analyze", "no module named 'no_such_module_xyz'"),
    ("supervisor.analyzer.example_plugin:nope", "has no 'nope'"),
    ("supervisor.analyzer.example_plugin", "expected 'package.module:function'"),
    ("/nonexistent/plugin.py", "does not exist"),
    ("supervisor.analyzer.example_plugin:KINDS", "is not callable"),
])
def test_specs_naming_nothing_are_configuration_errors(spec, message):
    with pytest.raises(PluginSpecError, match=message):
        load_plugin(spec)


def test_a_module_that_fails_while_importing_is_not_a_spec_error(tmp_path):
    f = tmp_path / "broken.py"
    f.write_text("import no_such_dependency_xyz\ndef analyze(batch):\n    pass\n")
    with pytest.raises(ModuleNotFoundError):
        load_plugin(str(f))


def test_bad_kinds_are_a_spec_error(tmp_path):
    f = tmp_path / "kinds.py"
    f.write_text("KINDS = {'trades'}\ndef analyze(batch):\n    pass\n")
    with pytest.raises(PluginSpecError, match="bad KINDS"):
        load_plugin(str(f))


# ----- failing events --------------------------------------------------------------------
def test_plugin_event_error_skips_that_event_and_delivers_the_rest():
    seen: list[int] = []

    def analyze(batch: PluginBatch):
        for ev, seq in zip(batch.events, batch.seqs, strict=True):
            if ev.price == "bad":
                raise PluginEventError(ev)
            seen.append(seq)
        return [{"symbol": "X", "n": len(batch.events)}]

    runner = PluginRunner(Plugin("p", analyze), "test", LOG)
    events, seqs = trades(10, bad={3, 7})
    results = runner.run(events, seqs)
    assert seen == [s for i, s in enumerate(seqs) if i not in (3, 7)]
    assert runner.errors == 2 and runner.calls == 3
    assert [r["ring_seq"] for r in results] == [1009]  # the last call's last seq


def test_other_exceptions_are_bisected_to_the_offending_events(caplog):
    delivered: list[int] = []

    def analyze(batch: PluginBatch):
        if any(ev.price == "bad" for ev in batch.events):
            raise ValueError("cannot parse")
        delivered.extend(batch.seqs)

    runner = PluginRunner(Plugin("p", analyze), "test", LOG, error_log_interval=0)
    events, seqs = trades(64, bad={5, 40})
    runner.run(events, seqs)
    assert delivered == [s for i, s in enumerate(seqs) if i not in (5, 40)]  # order kept
    assert runner.errors == 2
    assert runner.calls <= 2 * 2 * 6 + 1  # two paths of depth log2(64)
    skipped = [r.message for r in caplog.records if "event skipped" in r.message]
    assert len(skipped) == 2 and "ring seq 1005" in skipped[0] and "price='bad'" in skipped[0]


def test_error_logs_are_rate_limited_but_every_skip_is_counted(caplog):
    def analyze(batch):
        raise RuntimeError("always")

    runner = PluginRunner(Plugin("p", analyze), "test", LOG, error_log_interval=60)
    runner.run(*trades(32))
    assert runner.errors == 32
    assert len([r for r in caplog.records if "event skipped" in r.message]) == 1


def test_memory_errors_are_not_blamed_on_an_event_they_end_the_process():
    def analyze(batch):
        raise MemoryError

    runner = PluginRunner(Plugin("p", analyze), "test", LOG)
    with pytest.raises(MemoryError):
        runner.run(*trades(8))
    assert runner.errors == 0


# ----- setup and degraded mode -----------------------------------------------------------
def test_a_failing_setup_degrades_and_the_plugin_gets_no_batches(caplog):
    calls = []

    def setup(_ctx):
        raise FileNotFoundError("model.onnx")

    runner = PluginRunner(Plugin("p", lambda b: calls.append(b), setup=setup), "test", LOG)
    runner.start(ctx(), 0)
    assert runner.state == DEGRADED and "setup failed: FileNotFoundError" in runner.reason
    assert runner.run(*trades(3)) == [] and calls == []
    assert "running the built-in analysis only (degraded)" in caplog.text
    assert status_line("ring", 0, 12000.0, 0, runner.state, 0) == \
        "lag 0, 12,000 ev/s, 0 gaps, 0 quality, plugin degraded"


def test_on_start_gets_the_last_commit_and_its_failure_degrades_too():
    got = []
    runner = PluginRunner(Plugin("p", lambda b: None, on_start=got.append), "test", LOG)
    runner.start(ctx(), 41)
    assert got == [41] and runner.state == OK

    def bad(_seq):
        raise OSError("journal unwritable")

    runner = PluginRunner(Plugin("p", lambda b: None, on_start=bad), "test", LOG)
    runner.start(ctx(), 41)
    assert runner.state == DEGRADED and "on_start failed" in runner.reason


# ----- hangs -----------------------------------------------------------------------------
def test_a_plugin_call_running_too_long_has_its_stack_logged(caplog):
    release = threading.Event()

    def analyze_slowly(batch):
        release.wait(10)

    runner = PluginRunner(Plugin("slow", analyze_slowly), "test", LOG)
    watch = HangWatch(runner, 0.2, LOG)
    watch.start()
    # HangWatch inspects the main thread, so the call runs here; a helper thread lets it
    # return once the report is in the log (or after a deadline).
    deadline = time.monotonic() + 5
    helper = threading.Thread(target=lambda: (_wait_for(caplog, "has been running", deadline),
                                              release.set()))
    helper.start()
    try:
        runner.run(*trades(4))
    finally:
        release.set()
        helper.join()
        watch.stop()
    line = next(r.message for r in caplog.records if "has been running" in r.message)
    assert "plugin slow has been running for more than 0.2s on ring seq 1000..1003" in line
    assert "analyze_slowly" in line  # the stack shows where it is stuck


def _wait_for(caplog, text, deadline):
    while time.monotonic() < deadline:
        if any(text in r.message for r in caplog.records):
            return
        time.sleep(0.01)


# ----- the example plug-in ---------------------------------------------------------------
def test_example_plugin_reports_one_sided_taker_flow(tmp_path):
    model = tmp_path / "model.json"
    model.write_text(json.dumps({"threshold": 0.5, "min_trades": 3}))
    example_plugin.setup(ctx(model=str(model)))
    events = [Trade("X", 0, 0, 0, 0, str(i), "buy" if i else "sell", "10", "1")
              for i in range(4)]
    events += [Trade("Y", 0, 0, 0, 0, str(i), "buy" if i % 2 else "sell", "10", "1")
               for i in range(4)]
    out = list(example_plugin.analyze(PluginBatch("test", events, list(range(1, 9)))))
    assert out == [{"symbol": "X", "flow_imbalance": 0.5, "trades": 4, "buy_volume": 3.0,
                    "sell_volume": 1.0, "ring_seq": 4}]


def test_example_plugin_setup_fails_on_a_missing_model(tmp_path):
    runner = PluginRunner(load_plugin("supervisor.analyzer.example_plugin:analyze"), "test",
                          LOG)
    runner.start(ctx(model=str(tmp_path / "missing.json")), None)
    assert runner.state == DEGRADED and "FileNotFoundError" in runner.reason
