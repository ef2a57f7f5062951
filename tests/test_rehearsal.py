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
