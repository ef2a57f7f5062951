"""Shards in, shards with teacher memories out (``make memories``): resumable, failures listed, never fatal.

For each input shard ``SHARDS/x.tar`` the output is ``OUT/x.tar``: the same videos and clip bytes with
every question's ``memories`` filled with its teacher chain M_1..M_T (chain.py). A question whose chain
failed is left out of the output shard (``make sft`` needs a chain for every question) and listed in
``OUT/failures.json``; a video left with no question is left out too. Questions that already carry
memories (a jsonl import with its own) are kept as they are.

Resuming: every finished chain is appended (and flushed) to ``OUT/.teacher/x.jsonl`` with its clip
descriptions; a rerun skips the questions found there. ``OUT/x.tar`` is written to a temporary name and
renamed once every question of the shard has been tried; a rerun skips a shard whose tar exists and
that had no failure, and retries only the failed questions of the others.

Outputs beside the shards: ``summary.json`` (counts, questions per minute), ``failures.json``,
``spot_check.html`` (spot_check.py).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tqdm import tqdm

from videomem.data.shards import (
    VideoSample,
    clip_fields,
    expand_shards,
    iter_samples,
    read_meta,
    sample_to_videoqa,
    write_shards,
)
from videomem.data.types import VideoQA
from videomem.teacher.chain import Captioner, Prompts, Writer, run_chains

STATE_DIR = ".teacher"


def read_progress(path: Path) -> dict[tuple[str, str], dict]:
    """Finished chains of a shard by (video_id, qid); a torn last line (a kill mid-write) is ignored."""
    done: dict[tuple[str, str], dict] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            done[(rec["video_id"], rec["qid"])] = rec
    return done


def _pending(
    shard: str, done: dict, frames_per_clip: int, frame_size: tuple[int, int] | None, failures: list
) -> Iterator[VideoQA]:
    """Questions of a shard still without a chain (neither in the progress file nor in the shard)."""
    for sample in iter_samples(shard):
        try:
            meta = read_meta(sample)
            todo = [
                q
                for q in meta["questions"]
                if q.get("memories") is None and (meta["video_id"], str(q["qid"])) not in done
            ]
            if not todo:
                continue
            questions = sample_to_videoqa(sample, frames_per_clip=frames_per_clip, frame_size=frame_size)
        except Exception as e:  # noqa: BLE001 - an unreadable video fails its questions only
            failures.append(
                {
                    "shard": Path(shard).name,
                    "video_id": sample.get("__key__"),
                    "qid": None,
                    "error": f"{type(e).__name__}: {e}",
                }
            )
            continue
        yield from (qa for qa in questions if (qa.video_id, qa.qid) not in done and qa.memories is None)


def write_output(shard: str, done: dict, out_path: Path) -> int:
    """Write ``out_path``: the shard's videos with chains filled, unfinished questions dropped. Returns questions kept."""
    kept = 0

    def samples() -> Iterator[VideoSample]:
        nonlocal kept
        for sample in iter_samples(shard):
            meta = read_meta(sample)
            questions = []
            for q in meta["questions"]:
                rec = done.get((meta["video_id"], str(q["qid"])))
                if q.get("memories") is None and rec is None:
                    continue
                questions.append(q if q.get("memories") is not None else {**q, "memories": rec["memories"]})
            if questions:
                kept += len(questions)
                clips = [sample[k] for k in clip_fields(sample)]
                yield VideoSample(meta["video_id"], clips, {**meta, "questions": questions})

    tmp = out_path.parent / STATE_DIR / f"tmp-{out_path.stem}"
    shutil.rmtree(tmp, ignore_errors=True)
    written = write_shards(samples(), tmp, prefix=out_path.stem, max_per_shard=1 << 30)
    if written:
        os.replace(written[0], out_path)
    shutil.rmtree(tmp, ignore_errors=True)
    return kept


def count_questions(shards: list[str], given_only: bool = False) -> int:
    """Questions in the shards (or only those already carrying memories); metas only, no clip decoded."""
    return sum(
        sum(not given_only or q.get("memories") is not None for q in read_meta(s)["questions"])
        for s in iter_samples(shards)
    )


def _record(progress: Path, chains: list, done: dict, failures: list[dict], shard: str, bar: tqdm) -> int:
    """Append finished chains to the progress file (flushed each), failed ones to ``failures``; the number finished."""
    made = 0
    with progress.open("a", encoding="utf-8") as f:
        for chain in chains:
            if chain.error is not None:
                failures.append(
                    {"shard": shard, "video_id": chain.video_id, "qid": chain.qid, "error": chain.error}
                )
                bar.set_postfix(failed=len(failures), refresh=False)
            else:
                rec = {
                    "video_id": chain.video_id,
                    "qid": chain.qid,
                    "descriptions": chain.descriptions,
                    "memories": chain.memories,
                }
                f.write(json.dumps(rec) + "\n")
                f.flush()
                done[(chain.video_id, chain.qid)] = rec
                made += 1
            bar.update(1)
    return made


def _fill_shard(
    shard: str,
    progress: Path,
    done: dict,
    teachers: tuple,
    budget: int | None,
    batch_size: int,
    decode: tuple,
    bar: tqdm,
) -> tuple[int, list[dict], bool]:
    """Chains for the pending questions of one shard, ``batch_size`` at a time, at most ``budget`` of them.

    Returns:
        (chains made, failures, stopped because the budget ran out).
    """
    failures: list[dict] = []
    made, batch, stopped = 0, [], False
    name = Path(shard).name
    for qa in _pending(shard, done, *decode, failures):
        if budget is not None and made + len(batch) >= budget:
            stopped = True
            break
        batch.append(qa)
        if len(batch) == batch_size:
            made += _record(progress, run_chains(batch, *teachers), done, failures, name, bar)
            batch = []
    if batch:
        made += _record(progress, run_chains(batch, *teachers), done, failures, name, bar)
    return made, failures, stopped


def fill_memories(
    shards: str | list[str],
    out_dir: str | Path,
    captioner: Captioner,
    writer: Writer,
    prompts: Prompts,
    limit_memory: Callable[[str], str],
    *,
    frames_per_clip: int = 8,
    frame_size: tuple[int, int] | None = None,
    batch_size: int = 8,
    max_questions: int | None = None,
) -> dict:
    """Run the teachers over every pending question of the shards (module docstring).

    Args:
        shards: Anything ``expand_shards`` accepts (local files).
        out_dir: Output directory (OUT).
        captioner, writer, prompts, limit_memory: As in ``chain.run_chains``.
        frames_per_clip: Frames of each clip shown to the captioner.
        frame_size: (H, W) the clips are decoded at (None: as stored).
        batch_size: Questions run in lockstep (the local batch / the requests kept in flight).
        max_questions: Stop after this many chains in this run (a smoke run; the rest resumes later).

    Returns:
        Summary: ``questions`` (in the input), ``done`` (chains now on disk), ``new`` (made in this run),
        ``failed``, ``resumed_shards``, ``written_shards``, ``seconds``, ``questions_per_minute`` (this run).
    """
    paths = expand_shards(shards)
    teachers = (captioner, writer, prompts, limit_memory)
    out = Path(out_dir)
    (out / STATE_DIR).mkdir(parents=True, exist_ok=True)
    total = count_questions(paths)
    failures: list[dict] = []
    new = resumed = written = 0
    start = time.perf_counter()
    bar = tqdm(total=total, desc="memories", unit="question")
    stopped = False
    for shard in paths:
        name = Path(shard).name
        progress = out / STATE_DIR / f"{Path(name).stem}.jsonl"
        failed_file = out / STATE_DIR / f"{Path(name).stem}.failed.json"
        done = read_progress(progress)
        if (out / name).exists() and not failed_file.exists():
            resumed += 1
            bar.update(count_questions([shard]))
            continue
        bar.update(len(done) + count_questions([shard], given_only=True))
        budget = None if max_questions is None else max_questions - new
        made, shard_failures, stopped = _fill_shard(
            shard, progress, done, teachers, budget, batch_size, (frames_per_clip, frame_size), bar
        )
        new += made
        failures.extend(shard_failures)
        if stopped:
            break
        written += 1
        write_output(shard, done, out / name)
        if shard_failures:
            failed_file.write_text(json.dumps(shard_failures, indent=2), encoding="utf-8")
        else:
            failed_file.unlink(missing_ok=True)
    bar.close()
    seconds = time.perf_counter() - start
    done_total = sum(len(read_progress(out / STATE_DIR / f"{Path(p).stem}.jsonl")) for p in paths)
    summary = {
        "questions": total,
        "done": done_total,
        "new": new,
        "failed": len(failures),
        "stopped_early": stopped,
        "resumed_shards": resumed,
        "written_shards": written,
        "seconds": round(seconds, 3),
        "questions_per_minute": round(60 * new / seconds, 2) if new and seconds > 0 else None,
    }
    (out / "failures.json").write_text(json.dumps(failures, indent=2), encoding="utf-8")
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary
