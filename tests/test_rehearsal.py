"""The dress rehearsal's machinery (videomem/rehearsal): process trees, peak memory per rank, node loss,
stage outcomes and the table. The rehearsal itself runs as ``make rehearse`` (its own CI step)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from videomem.rehearsal.procs import PeakMemory, descendants, free_port, kill_node, rank_of, status_kb
from videomem.rehearsal.stages import Rehearsal, Stage, StageFailed, table

# a "launcher" that starts a "rank" in a session of its own (as torchrun does) holding ~40 MB, then waits
LAUNCHER = (
    "import subprocess, sys, time\n"
    "subprocess.Popen([sys.executable, '-c', 'import time; x = bytearray(40 * 2**20); time.sleep(60)'],"
    " start_new_session=True)\n"
    "time.sleep(60)\n"
)


@pytest.fixture
def node():
    env = {**os.environ, "RANK": "3"}
    proc = subprocess.Popen([sys.executable, "-c", LAUNCHER], env=env, start_new_session=True)
    deadline = time.monotonic() + 20
    while not descendants(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    yield proc
    kill_node(proc)
    proc.wait()


def test_a_free_port_can_be_bound():
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_peak_memory_per_rank_and_the_loss_of_a_node(node):
    (rank,) = descendants(node.pid)
    assert rank_of(rank) == 3 and status_kb(rank, "VmRSS") is not None
    time.sleep(0.5)  # the 40 MB are allocated
    watch = PeakMemory([node.pid])
    watch.poll()
    assert watch.stop()[3] > 40  # MB, the rank's peak (the launcher has a RANK too here: same rank)
    kill_node(node)  # the launcher's group and the rank in its own session
    node.wait()
    deadline = time.monotonic() + 10
    while status_kb(rank, "VmRSS") is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert status_kb(rank, "VmRSS") is None


def test_a_failed_stage_is_reported_and_fails_the_rehearsal(tmp_path):
    rehearsal = Rehearsal(tmp_path)

    def fails() -> str:
        raise StageFailed("resumed weights differ")

    def crashes() -> str:
        raise KeyError("a bug")

    ok = rehearsal.stage("ok", lambda: "fine")
    bad = rehearsal.stage("resume", fails)
    bug = rehearsal.stage("export", crashes)
    assert ok.ok and ok.outcome == "fine"
    assert not bad.ok and bad.outcome == "FAILED: resumed weights differ"
    assert not bug.ok and bug.outcome.startswith("FAILED: KeyError")
    text = table([Stage("sft", 44.2, {0: 594.4, 1: 590.0}, "4 steps", True)])
    assert text.splitlines()[-1] == "| sft | 44 s | 594/590 | 4 steps |"


def test_a_failed_node_stops_the_stage_and_its_log_says_why(tmp_path):
    """One node fails while the other would wait on (as torchrun's exit barrier waits 300 s for a lost
    node): the survivor is killed after the grace period and the failure carries the failed node's log."""
    rehearsal = Rehearsal(tmp_path)
    fails = (
        "import sys; print('Traceback (most recent call last):'); print('ValueError: the cause');"
        "print('\\n'.join(f'noise {i}' for i in range(60))); sys.exit(3)"
    )
    procs = [
        rehearsal._launch(
            [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "logs" / "x.node0.log"
        ),
        rehearsal._launch([sys.executable, "-c", fails], tmp_path / "logs" / "x.node1.log"),
    ]
    start = time.monotonic()
    with pytest.raises(StageFailed) as failed:
        rehearsal.wait(procs, "x", grace=1.0)
    assert time.monotonic() - start < 20
    assert str(failed.value).startswith("exit status 3")
    detail = failed.value.detail  # from the traceback on, though 60 lines followed it
    assert "x.node1.log" in detail and "ValueError: the cause" in detail and "noise 59" in detail
    assert procs[0].returncode == -9  # the survivor was killed, not waited for


def test_a_stage_that_runs_too_long_is_killed_with_every_log(tmp_path):
    rehearsal = Rehearsal(tmp_path)
    sleeps = [sys.executable, "-c", "print('still going', flush=True); import time; time.sleep(60)"]
    procs = [rehearsal._launch(sleeps, tmp_path / "logs" / f"y.node{n}.log") for n in range(2)]
    with pytest.raises(StageFailed, match="timed out after 2 s") as failed:
        rehearsal.wait(procs, "y", timeout=2)
    assert failed.value.detail.count("still going") == 2
    assert all(p.returncode == -9 for p in procs)
