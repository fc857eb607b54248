"""``python -m shm ls | inspect | rm`` in a subprocess, as an operator runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import shm
import shm.cli
from shm import _layout


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shm", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ})


def test_ls_lists_the_ring_with_capacity_write_seq_and_writer(ring_name: str) -> None:
    with shm.RingWriter(ring_name, capacity=1 << 16) as writer:
        writer.write_many([b"x"] * 42)
        result = cli("ls")
        assert result.returncode == 0, result.stderr
        line = next(ln for ln in result.stdout.splitlines() if ln.startswith(ring_name))
        assert line.split()[1:4] == ["64.0KiB", "42", "0"]
        assert f"running (pid {os.getpid()})" in line
        rows = json.loads(cli("ls", "--json").stdout)
        mine = next(row for row in rows if row["name"] == ring_name)
        assert (mine["capacity"], mine["last_seq"], mine["writer_state"]) == (
            1 << 16, 42, "running")
    assert f"{ring_name} " in cli("ls").stdout and "stopped" in cli("ls").stdout


def test_inspect_shows_each_readers_lag_and_loss(ring_name: str) -> None:
    with shm.RingWriter(ring_name, capacity=4096) as writer, \
            shm.RingReader(ring_name, reader="keeps-up") as fast, \
            shm.RingReader(ring_name, reader="lapped") as slow:
        writer.write(b"1")
        slow.read()
        slow.commit()
        list(iter(fast.read, None))
        for _ in range(20):  # 20 x 10 records: "keeps-up" reads as they come
            writer.write_many([bytes(100)] * 10)
            list(iter(fast.read, None))
        fast.commit()
        result = cli("inspect", ring_name)
        assert result.returncode == 0, result.stderr
        assert "capacity            4.0KiB (4096 bytes), max message 512 bytes" in result.stdout
        assert "records written     201" in result.stdout
        rows = {ln.split()[0]: ln.split() for ln in result.stdout.splitlines()
                if ln.startswith("    ") and "NAME" not in ln}
        assert rows["keeps-up"][3:7] == ["202", "0", "0", "0"]  # next seq, lag, lost, overruns
        assert rows["lapped"][3] == "2" and rows["lapped"][4] == "200"
        data = json.loads(cli("inspect", ring_name, "--json").stdout)
        assert [r["name"] for r in data["readers"]] == ["keeps-up", "lapped"]


def test_inspect_names_the_problem_with_an_unusable_segment(ring_name: str) -> None:
    shm.RingWriter(ring_name, capacity=4096).close()
    with open(shm.segment_path(ring_name), "r+b") as file:
        file.seek(_layout.HEADER_OFFSETS["layout_version"])
        file.write((7).to_bytes(4, "little"))
    result = cli("inspect", ring_name)
    assert result.returncode == 1
    assert "layout version 7, expected 1" in result.stderr
    assert shm.segment_path(ring_name) in result.stderr
    assert "capacity               4096" in result.stdout  # the raw header, still readable


def test_rm_refuses_a_running_writer_then_removes(ring_name: str) -> None:
    writer = shm.RingWriter(ring_name, capacity=4096)
    result = cli("rm", ring_name)
    assert result.returncode == 1 and "running writer" in result.stderr
    writer.close()
    result = cli("rm", ring_name)
    assert result.returncode == 0, result.stderr
    assert not os.path.exists(shm.segment_path(ring_name))
    result = cli("rm", ring_name)
    assert result.returncode == 1 and "does not exist" in result.stderr


def test_rm_reader_frees_its_slot(ring_name: str) -> None:
    with shm.RingWriter(ring_name, capacity=4096):
        shm.RingReader(ring_name, reader="gone").close()
        assert cli("rm", ring_name, "--reader", "gone").returncode == 0
        assert shm.ring_stats(ring_name).readers == ()
        result = cli("rm", ring_name, "--reader", "gone")
        assert result.returncode == 1 and "no reader 'gone'" in result.stderr


def test_cli_reports_bad_names_and_missing_rings(ring_name: str) -> None:
    result = cli("inspect", "bad/name")
    assert result.returncode == 1 and "bad ring name 'bad/name'" in result.stderr
    result = cli("inspect", ring_name)
    assert result.returncode == 1 and "does not exist" in result.stderr
    assert shm.cli.main(["ls"]) == 0  # importable entry point for `marketprism ring`
