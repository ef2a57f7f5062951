"""Processes of the dress rehearsal (``videomem.rehearsal``): free ports, process trees, peak memory, node loss.

Linux only: everything is read from ``/proc`` (a process's parent, its ``RANK``, its peak resident set
``VmHWM``). ``probe_load`` is one rank of the rehearsal's load stage, run by torchrun.

``wait_for`` waits for a stage's processes and stops the rest when one fails; ``log_tail`` reads the
end of a failed process's log.

Deliberately not here: which stages run and what they check (``rehearsal/stages.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path


def free_port() -> int:
    """A TCP port nobody listens on now (bound to 0, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """Every living process started (directly or not) by ``pid``, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def status_kb(pid: int, field: str) -> int | None:
    """A ``/proc/<pid>/status`` memory field in kB (VmHWM: peak resident set, VmRSS: now); None if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def rank_of(pid: int) -> int | None:
    """The ``RANK`` torchrun gave process ``pid`` (None: a launcher or another helper process)."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    return next((int(e[5:]) for e in env if e.startswith(b"RANK=")), None)


class PeakMemory(threading.Thread):
    """Polls the processes under ``roots`` every 0.2 s; keeps each rank's peak resident memory (MB).

    A process without ``RANK`` in its environment counts as rank 0 when it is a root itself (a
    single-process stage); launchers are left out.
    """

    def __init__(self, roots: list[int]) -> None:
        super().__init__(daemon=True)
        self.roots, self.peak_mb, self._done = roots, {}, threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.2):
            self.poll()

    def poll(self) -> None:
        for root in self.roots:
            for pid in [root, *descendants(root)]:
                rank = rank_of(pid)
                rank = 0 if rank is None and pid == root and len(self.roots) == 1 else rank
                kb = status_kb(pid, "VmHWM")
                if rank is not None and kb is not None:
                    self.peak_mb[rank] = max(self.peak_mb.get(rank, 0.0), kb / 1024)

    def stop(self) -> dict[int, float]:
        self._done.set()
        if self.ident is not None:  # started
            self.join()
        self.poll()  # the last word: a process still alive now
        return dict(sorted(self.peak_mb.items()))


def kill_node(launcher: subprocess.Popen) -> None:
    """``kill -9`` of a node: the launcher's process group and every process it started (torchrun starts
    its ranks in sessions of their own, which the group alone would miss)."""
    pids = descendants(launcher.pid)
    with contextlib.suppress(ProcessLookupError):  # gone already
        os.killpg(launcher.pid, signal.SIGKILL)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def wait_for(
    procs: list[subprocess.Popen], timeout: float, grace: float
) -> tuple[list[subprocess.Popen], bool]:
    """Wait for every process. Once one has failed, the others get ``grace`` seconds, then are killed
    (``kill_node``): a node whose ranks finished would otherwise sit in torchrun's exit barrier for 300 s
    waiting for the failed node's launcher. All are killed at ``timeout`` seconds.

    Returns:
        (the processes that failed, in the order they were seen to fail; whether the timeout struck)
    """
    deadline, failed, failed_at = time.monotonic() + timeout, [], None
    timed_out = False
    while None in [p.poll() for p in procs]:  # a list: every process polled, not up to the first
        failed += [p for p in procs if p.returncode not in (None, 0) and p not in failed]
        now = time.monotonic()
        if failed and failed_at is None:
            failed_at = now
        if now > deadline or (failed_at is not None and now - failed_at > grace):
            timed_out = not failed
            for p in procs:
                kill_node(p)
            for p in procs:
                p.wait()
        else:
            time.sleep(0.2)
    if not timed_out:
        failed += [p for p in procs if p.returncode != 0 and p not in failed]
    return failed, timed_out


# where a failed process's story starts in its log: Python's, Hydra's and a crash's (PYTHONFAULTHANDLER)
TRACEBACK_STARTS = ("Traceback (most recent call last)", "Error executing job", "Fatal Python error")


def log_tail(logs: list[Path], lines: int = 40) -> str:
    """The end of each log: from its last traceback on, or its last ``lines`` lines when it has none
    (or a longer one)."""
    tails = []
    for f in logs:
        text = f.read_text(errors="replace").splitlines()
        starts = [i for i, line in enumerate(text) if line.lstrip().startswith(TRACEBACK_STARTS)]
        first = starts[-1] if starts and len(text) - starts[-1] <= 3 * lines else len(text) - lines
        tail = text[max(first, 0) :]
        tails.append(f"--- {f.name}, last {len(tail)} lines\n" + "\n".join(tail))
    return "\n".join(tails)


def probe_load(ckpt: Path, out: Path) -> None:
    """One rank of the load stage, writing ``out/rank<r>.json``.

    1. The training modules' sharded loader on ``ckpt``: this rank's peak resident memory while loading
       (the kernel's VmHWM, reset first), against the bytes of the shards it holds.
    2. One AdamW step of the sharded model on a short text: the bytes per parameter this rank then
       holds in weights, gradients and optimizer states (its tensors' own sizes, over its share of the
       parameters): the per-parameter cost docs/performance.md multiplies up to 8B.
    """
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    from videomem.data.distributed import rank_and_world
    from videomem.data.types import VideoQA
    from videomem.memory.loop import step_messages
    from videomem.model.policy import build_policy
    from videomem.train.parallel import sharded_policy

    dist.init_process_group("gloo")
    rank, world = rank_and_world()
    mesh = init_device_mesh("cpu", (world,))
    dist.barrier()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS now
    before = status_kb(os.getpid(), "VmRSS")
    policy = sharded_policy(
        build_policy("qwen3_vl", path=str(ckpt), weights=False, liger_kernels=False), mesh, "cpu"
    )
    peak = status_kb(os.getpid(), "VmHWM")
    params = list(policy.parameters())
    local = sum(p.to_local().numel() for p in params)
    result = {"rank": rank, "growth_mb": (peak - before) / 1024, "shard_mb": 4 * local / 2**20,
              "params": sum(p.numel() for p in params)}  # fmt: skip

    optimizer = torch.optim.AdamW(params, lr=1e-5)
    frames = torch.zeros(2, 64, 64, 3, dtype=torch.uint8)  # [F, H, W, 3]: one clip
    qa = VideoQA("v", "q", "What?", ["a", "b"], "A", "c", [frames], [(0.0, 1.0)])
    inputs = policy.build_inputs([step_messages(qa, 0, "", "")], [frames], completions=["<answer>A</answer>"])
    policy.train()
    policy(inputs).loss.backward()  # through FSDP2's gathers and reduce-scatters
    optimizer.step()
    state = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t) and t.dim()]
    tensors = [*params, *(p.grad for p in params if p.grad is not None), *state]
    held = sum(
        t.to_local().numel() * t.element_size() if hasattr(t, "to_local") else t.nbytes for t in tensors
    )
    result["train_bytes_per_param"] = held / local
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()
