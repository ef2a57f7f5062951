"""The teacher's OUT directory: one run at a time (a lock), a machine's share of the shards (PART=i/n).

``lock_out(out, part)`` holds an ``flock`` on ``OUT/.teacher/lock`` for the whole run: exclusive for a
run over all shards, shared for a part, which also holds ``OUT/.teacher/lock.part<i>of<n>``
exclusively. So a second run writing the same OUT (or the same part, or a part of another split) is
refused at once with one line saying who holds it, while the parts of one split may share an OUT. The
kernel drops an flock with its process, so a run that was killed leaves no lock behind: the next run
just starts (the lock file stays, holding the killed run's pid, and is reused).

``my_shards(paths, part)``: shard j belongs to part i of n when ``j % n == i - 1`` (sorted shard list,
the same on every machine).

Deliberately not here: what the run writes (pipeline.py).
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

STATE_DIR = ".teacher"


class OutLocked(RuntimeError):
    """Another run is writing this OUT (or this part of it)."""


def part_suffix(part: tuple[int, int]) -> str:
    """``""`` for the whole run, ``".part<i>of<n>"`` for a part (its summary, failures, page)."""
    return "" if part[1] == 1 else f".part{part[0]}of{part[1]}"


def my_shards(paths: list[str], part: tuple[int, int]) -> list[str]:
    """The shards of ``paths`` (sorted by name) that part (i, n) fills."""
    ordered = sorted(paths, key=lambda p: Path(p).name)
    return [p for j, p in enumerate(ordered) if j % part[1] == part[0] - 1]


def _take(path: Path, exclusive: bool) -> int:
    """Open ``path`` and flock it without waiting; its fd, or OutLocked naming the holder."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "another run"
        os.close(fd)
        raise OutLocked(
            f"{path.parent.parent} is being written by {holder}: wait for it to finish, or give another OUT"
        ) from None
    return fd


def _sign(fd: int, part: tuple[int, int]) -> None:
    """Write who holds the lock into it (read by a refused run's message)."""
    what = "make memories" + (f" part={part[0]}/{part[1]}" if part[1] > 1 else "")
    since = time.strftime("%Y-%m-%d %H:%M:%S")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{what} (pid {os.getpid()} on {socket.gethostname()}, since {since})".encode(), 0)


@contextmanager
def lock_out(out: str | Path, part: tuple[int, int] = (1, 1)) -> Iterator[None]:
    """Hold OUT's lock for the block (module docstring).

    Raises:
        OutLocked: Another live run holds OUT, this part, or a part of another split of OUT.
    """
    state = Path(out) / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    whole = part[1] == 1
    fds = [_take(state / "lock", exclusive=whole)]
    try:
        if not whole:
            fds.append(_take(state / f"lock.part{part[0]}of{part[1]}", exclusive=True))
        for fd in fds:
            _sign(fd, part)
            for other in state.glob("lock.part*of*"):
                if not other.name.endswith(f"of{part[1]}"):  # another split: its shards overlap ours
                    os.close(_take(other, exclusive=True))
        yield
    finally:
        for fd in fds:
            os.close(fd)  # closing drops the flock
