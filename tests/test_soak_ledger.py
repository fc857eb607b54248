"""The soak's accounting: the journaling plug-in, rollback, and the ledger that balances it.

Pure and fast: hand-written batches and journals, no processes.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from soak import ledger, plugin
from supervisor.analyzer.engine import Engine
from supervisor.analyzer.settings import Settings
from supervisor.events import BookDelta, BookSnapshot, Gap, Trade


def delta(symbol: str, prev: int, seq: int) -> BookDelta:
    return BookDelta(symbol, seq, 0, 1_000, 0, prev, [["1", "1"]], [])


def snap(symbol: str, seq: int, ts: int = 2_000) -> BookSnapshot:
    return BookSnapshot(symbol, seq, 0, ts, 0, [["1", "1"]], [["2", "1"]])


def gap(symbol: str, ts: int = 3_000, reason: str = "sequence_gap") -> Gap:
    return Gap(symbol, 7, 0, ts, 0, reason, "")


def trade(symbol: str = "BTC-USDT") -> Trade:
    return Trade(symbol, 1, 0, 1_000, 0, "1", "buy", "1", "1")


# ----- the plug-in's journal lines -----------------------------------------------------------
def lines(events, seqs, chains=None):
    return (chains or plugin.Chains()).lines(events, seqs)


def test_a_contiguous_batch_is_one_range_line():
    assert lines([trade()] * 3, [5, 6, 7]) == ["R 5 7"]


def test_a_batch_with_a_hole_is_two_range_lines():
    assert lines([trade()] * 3, [5, 6, 9]) == ["R 5 6", "R 9 9"]


def test_gaps_and_snapshots_are_journaled_with_ring_seq_symbol_and_time():
    assert lines([gap("BTC-USDT", 44, "disconnect"), snap("BTC-USDT", 10, 55)], [1, 2]) == [
        "G 1 BTC-USDT disconnect 44", "S 2 BTC-USDT 55", "R 1 2"]


def test_a_chained_delta_writes_nothing_but_its_range():
    chains = plugin.Chains()
    assert lines([snap("X", 10), delta("X", 10, 11), delta("X", 11, 14)], [1, 2, 3],
                 chains) == ["S 1 X 2000", "R 1 3"]
    assert chains.heads == {"X": 14}


def test_the_chain_is_followed_across_batches():
    chains = plugin.Chains()
    lines([snap("X", 10)], [1], chains)
    assert lines([delta("X", 9, 12)], [2], chains) == ["B 2 X 9 10", "R 2 2"]


def test_a_delta_after_a_gap_without_a_snapshot_is_a_silent_break():
    assert "B 3 X 10 -1" in lines([snap("X", 10), gap("X"), delta("X", 10, 11)], [1, 2, 3])


def test_the_first_delta_after_a_start_is_taken_as_the_head():
    chains = plugin.Chains()
    assert lines([delta("X", 500, 501)], [9], chains) == ["R 9 9"]
    assert chains.heads == {"X": 501}


def test_symbols_are_chained_independently():
    out = lines([snap("X", 10), snap("Y", 70), delta("Y", 70, 71), delta("X", 10, 11)],
                [1, 2, 3, 4])
    assert not [ln for ln in out if ln.startswith("B")]


def test_a_lap_between_batches_forgets_the_chains_instead_of_reporting_a_break():
    chains = plugin.Chains()
    lines([snap("X", 10), delta("X", 10, 11)], [1, 2], chains)
    # seqs 3..99 were lapped (announced by the analyzer): X's deltas in them never came
    assert lines([delta("X", 40, 41)], [100], chains) == ["R 100 100"]
    assert lines([delta("X", 41, 42), delta("X", 50, 51)], [101, 102], chains)[0] == \
        "B 102 X 50 42"


def test_a_lap_inside_a_batch_forgets_the_chains_too():
    assert lines([snap("X", 10), delta("X", 40, 41)], [1, 50]) == ["S 1 X 2000", "R 1 1",
                                                                    "R 50 50"]


def test_after_a_restart_a_lap_before_the_first_batch_is_noticed():
    chains = plugin.Chains()
    lines([snap("X", 10)], [1], chains)
    chains.reset(next_seq=6)  # on_start(5)
    assert lines([delta("X", 3, 4)], [6], chains) == ["R 6 6"]
    chains.heads["X"] = 4
    assert lines([delta("X", 90, 91)], [80], chains) == ["R 80 80"]


# ----- rollback --------------------------------------------------------------------------------
@pytest.fixture
def journal(tmp_path):
    path = tmp_path / "j"
    plugin.setup(SimpleNamespace(options={"journal": str(path)}, state_dir=str(tmp_path),
                                 instance="t"))
    yield path
    plugin.close()


def test_rollback_drops_lines_past_the_commit_and_cuts_a_straddling_range(journal):
    journal.write_bytes(b"R 1 10\nS 4 X 1\nR 11 20\nG 16 X gap 2\nR 21 30\n")
    assert plugin.rollback(str(journal), 15) == 3
    assert journal.read_bytes() == b"R 1 10\nS 4 X 1\nR 11 15\n"


def test_rollback_drops_a_line_a_kill_cut_short(journal):
    journal.write_bytes(b"R 1 10\nR 11 2")
    plugin.rollback(str(journal), 100)
    assert journal.read_bytes() == b"R 1 10\n"


def test_rollback_at_the_commit_changes_nothing(journal):
    journal.write_bytes(b"R 1 10\n")
    assert plugin.rollback(str(journal), 10) == 0
    assert journal.read_bytes() == b"R 1 10\n"


def test_after_on_start_the_plugin_appends_to_the_rolled_back_journal(journal):
    plugin.analyze(SimpleNamespace(events=[trade()] * 2, seqs=[1, 2]))
    plugin.analyze(SimpleNamespace(events=[trade()] * 2, seqs=[3, 4]))
    plugin.on_start(2)  # the second batch was never committed: it comes again
    plugin.analyze(SimpleNamespace(events=[trade()] * 2, seqs=[3, 4]))
    assert journal.read_bytes() == b"R 1 2\nR 3 4\n"


# ----- parsing ---------------------------------------------------------------------------------
def test_parse_journal_reads_every_line_kind_and_counts_garbage():
    j = ledger.parse_journal("R 1 5\nG 3 X disconnect 99\nS 4 X 100\nB 5 X 8 9\nnonsense\n"
                             "R 6 x\nR 7 8")  # the unterminated last line is ignored
    assert j.ranges == [(1, 5)]
    assert j.gaps == [ledger.Mark(3, "X", 99, "disconnect")]
    assert j.snapshots == [ledger.Mark(4, "X", 100)]
    assert j.breaks == [ledger.Break(5, "X", 8, 9)]
    assert j.bad_lines == 2


def test_the_lap_line_the_analyzer_logs_is_parsed(caplog):
    engine = Engine("t", Settings(), logging.getLogger("soak-test"))
    with caplog.at_level(logging.ERROR, "soak-test"):
        engine.note_lost(250, 1_001)
    assert ledger.parse_laps(caplog.text) == [(751, 1_000)]


def test_merge_counts_overlaps_and_joins_adjacent_ranges():
    assert ledger.merge([(5, 9), (1, 4), (8, 12), (20, 20)]) == ([(1, 12), (20, 20)], 2)


def test_subtract_leaves_what_the_holes_do_not_cover():
    assert ledger.subtract([(1, 100)], [(1, 9), (50, 60), (99, 120)]) == [(10, 49), (61, 98)]


# ----- the account -----------------------------------------------------------------------------
def test_everything_delivered_once_balances():
    acc = ledger.account("i", ledger.parse_journal("R 1 50\nR 51 100\n"), 100, 0, [])
    assert (acc.produced, acc.consumed, acc.lost_outside_gaps, acc.duplicates) == (100, 100, 0, 0)
    assert acc.ok and acc.problems() == []


def test_seqs_inside_an_announced_lap_counted_by_the_ring_are_not_loss():
    acc = ledger.account("i", ledger.parse_journal("R 1 40\nR 61 100\n"), 100, 20, [(41, 60)])
    assert (acc.consumed, acc.lapped, acc.lost_outside_gaps) == (80, 20, 0)
    assert acc.ok


def test_a_lap_logged_twice_by_restarts_is_counted_once():
    acc = ledger.account("i", ledger.parse_journal("R 1 40\nR 61 100\n"), 100, 20,
                         [(41, 60), (45, 60)])
    assert acc.ok and acc.lapped == 20


def test_missing_seqs_nobody_announced_are_loss_outside_gaps():
    acc = ledger.account("i", ledger.parse_journal("R 1 40\nR 44 100\n"), 100, 0, [])
    assert acc.lost_outside_gaps == 3 and acc.unexplained == [(41, 43)]
    assert not acc.ok and "3 ring seqs lost outside announced gaps" in acc.problems()[0]


def test_an_undelivered_tail_is_loss():
    acc = ledger.account("i", ledger.parse_journal("R 1 90\n"), 100, 0, [])
    assert acc.unexplained == [(91, 100)] and not acc.ok


def test_a_lap_the_ring_did_not_count_breaks_the_balance():
    acc = ledger.account("i", ledger.parse_journal("R 1 40\nR 61 100\n"), 100, 0, [(41, 60)])
    assert acc.lost_outside_gaps == 0 and not acc.ok
    assert "reader counted 0 lost" in acc.problems()[0]


def test_a_seq_delivered_twice_breaks_exactly_once():
    acc = ledger.account("i", ledger.parse_journal("R 1 60\nR 50 100\n"), 100, 0, [])
    assert acc.duplicates == 11 and acc.consumed == 100 and not acc.ok


def test_seqs_beyond_the_rings_end_are_flagged():
    acc = ledger.account("i", ledger.parse_journal("R 1 105\n"), 100, 0, [])
    assert acc.beyond_end == 5 and acc.consumed == 100 and not acc.ok


def test_a_silent_break_fails_the_account():
    acc = ledger.account("i", ledger.parse_journal("R 1 10\nB 5 X 3 4\n"), 10, 0, [])
    assert acc.silent_breaks == 1 and not acc.ok
    assert "(first: ring seq 5 X prev_seq 3, book at 4)" in acc.problems()[0]


def test_gaps_are_counted_by_reason():
    acc = ledger.account("i", ledger.parse_journal(
        "R 1 3\nG 1 X disconnect 1\nG 2 Y disconnect 1\nG 3 X checksum_mismatch 2\n"), 3, 0, [])
    assert acc.gaps_by_reason == {"disconnect": 2, "checksum_mismatch": 1}


# ----- faults -> Gap events ---------------------------------------------------------------------
S = 10**9


def applied(at: int, symbol: str = "X", instance: str = "i") -> ledger.Applied:
    return ledger.Applied(instance, symbol, "drop", at * S, (at + 1) * S)


def test_a_fault_followed_by_a_gap_on_its_symbol_is_announced():
    m = ledger.match_faults([applied(100)], {"i": [ledger.Mark(1, "X", 103 * S, "gap")]}, {})
    assert (m["announced"], m["unannounced"]) == (1, 0)


def test_a_gap_on_another_symbol_or_instance_does_not_count():
    gaps = {"i": [ledger.Mark(1, "Y", 103 * S, "gap")], "j": [ledger.Mark(1, "X", 103 * S)]}
    m = ledger.match_faults([applied(100)], gaps, {})
    assert m["unannounced"] == 1 and m["unannounced_faults"][0]["symbol"] == "X"


def test_a_gap_shortly_before_arming_covers_a_fault_on_a_book_still_resyncing():
    m = ledger.match_faults([applied(100)], {"i": [ledger.Mark(1, "X", 95 * S, "gap")]}, {})
    assert m["announced"] == 1
    m = ledger.match_faults([applied(100)], {"i": [ledger.Mark(1, "X", 50 * S, "gap")]}, {})
    assert m["unannounced"] == 1


def test_a_collector_restart_absorbs_a_fault():
    m = ledger.match_faults([applied(100)], {}, {"i": [120 * S]})
    assert (m["absorbed"], m["unannounced"]) == (1, 0)
