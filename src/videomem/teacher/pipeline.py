"""Shards in, shards with teacher memories out (``make memories``): resumable, failures listed, never fatal.

For each input shard ``SHARDS/x.tar`` the output is ``OUT/x.tar``: the same videos and clip bytes with
every question's ``memories`` filled with its teacher chain M_1..M_T (chain.py). A question whose chain
failed is left out of the output shard (``make sft`` needs a chain for every question) and listed in
``OUT/failures.json``; a video left with no question is left out too. Questions that already carry
memories (a jsonl import with its own) are kept as they are.

Each finished chain is checked (answerability.py): a reader answers the question from M_T alone. The
output question carries ``"answerable": true | false`` (absent when unchecked: no gold answer or given
memories); ``teacher.filter=answerable`` (``filter``) leaves the flagged ones out of the output shards.
The clip descriptions are made once per video and reused by all its questions (chain.py ``Captions``),
also across batches and reruns (from the chains already on disk).

Resuming: every finished chain is appended (and flushed) to ``OUT/.teacher/x.jsonl`` with its clip
descriptions; a rerun skips the questions found there. ``OUT/x.tar`` is written to a temporary name and
renamed once every question of the shard has been tried; a rerun skips a shard whose tar exists and
that had no failure, and retries only the failed questions of the others. A rerun with another
``filter`` rewrites the output shards from the chains on disk (no teacher runs again).

One run per OUT (``outdir.lock_out``); ``part="i/n"`` fills only this machine's share of the shards,
and the parts of one split may share an OUT. Outputs beside the shards: ``summary.json`` (counts,
questions per minute, captioner requests, answerability rate), ``failures.json``, ``spot_check.html``
(spot_check.py), each ``*.part<i>of<n>.*`` for a part.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from videomem.data.importers.plan import parse_part  # one rule for PART=i/n, make shards' and this
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
from videomem.teacher.answerability import MIN_OPEN_SCORE, check_answers
from videomem.teacher.chain import Captioner, Captions, Prompts, Writer, run_chains
from videomem.teacher.outdir import STATE_DIR, lock_out, my_shards, part_suffix

FILTERS = (None, "answerable")


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


def output_question(q: dict, rec: dict | None) -> dict:
    """A question as written out: its chain's memories and answerability flag (given memories: as is)."""
    if q.get("memories") is not None:
        return q
    flag = {} if rec.get("answerable") is None else {"answerable": rec["answerable"]}
    return {**q, "memories": rec["memories"], **flag}


def write_output(shard: str, done: dict, out_path: Path, filter: str | None = None) -> tuple[int, int]:
    """Write ``out_path``: the shard's videos with chains filled, unfinished questions dropped (and, with
    ``filter="answerable"``, the flagged ones). Returns (questions kept, questions dropped by the filter)."""
    kept = dropped = 0

    def samples() -> Iterator[VideoSample]:
        nonlocal kept, dropped
        for sample in iter_samples(shard):
            meta = read_meta(sample)
            questions = []
            for q in meta["questions"]:
                rec = done.get((meta["video_id"], str(q["qid"])))
                if q.get("memories") is None and rec is None:
                    continue
                if filter == "answerable" and q.get("memories") is None and rec.get("answerable") is False:
                    dropped += 1
                    continue
                questions.append(output_question(q, rec))
            if questions:
                kept += len(questions)
                clips = [sample[k] for k in clip_fields(sample)]
                yield VideoSample(meta["video_id"], clips, {**meta, "questions": questions})

    tmp = out_path.parent / STATE_DIR / f"tmp-{out_path.stem}"
    shutil.rmtree(tmp, ignore_errors=True)
    written = write_shards(samples(), tmp, prefix=out_path.stem, max_per_shard=1 << 30)
    if written:
        os.replace(written[0], out_path)
    else:
        out_path.unlink(missing_ok=True)  # every question filtered out: no stale output either
    shutil.rmtree(tmp, ignore_errors=True)
    return kept, dropped


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
                    "answerable": chain.answerable,
                    "reader_answer": chain.reader_answer,
                }
                f.write(json.dumps(rec) + "\n")
                f.flush()
                done[(chain.video_id, chain.qid)] = rec
                made += 1
            bar.update(1)
    return made


@dataclass
class Teachers:
    """The backends and templates of a run, and what they have done in it."""

    captioner: Captioner
    writer: Writer
    reader: Writer
    prompts: Prompts
    limit_memory: Callable[[str], str]
    min_open_score: float = MIN_OPEN_SCORE  # answerability of an open-ended question (answerability.py)
    caption_requests: int = 0  # made in this run
    reader_requests: int = 0
    questions: int = 0  # run through the teachers in this run
    clips: int = 0  # their clips: the caption requests of one description per question and clip


def _captions_on_disk(done: dict) -> Captions:
    """The descriptions of the chains already made, by video: reused, never asked again."""
    captions = Captions()
    for rec in done.values():
        if len(rec["descriptions"]) > len(captions.get(rec["video_id"], ())):
            captions[rec["video_id"]] = list(rec["descriptions"])
    return captions


def _fill_shard(
    shard: str,
    progress: Path,
    done: dict,
    teachers: Teachers,
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
    captions = _captions_on_disk(done)

    def run(batch: list[VideoQA]) -> int:
        chains = run_chains(
            batch, teachers.captioner, teachers.writer, teachers.prompts, teachers.limit_memory, captions
        )
        teachers.reader_requests += check_answers(
            chains, batch, teachers.reader, teachers.prompts, teachers.min_open_score
        )
        teachers.questions += len(batch)
        teachers.clips += sum(qa.num_clips for qa in batch)
        return _record(progress, chains, done, failures, name, bar)

    for qa in _pending(shard, done, *decode, failures):
        if budget is not None and made + len(batch) >= budget:
            stopped = True
            break
        batch.append(qa)
        if len(batch) == batch_size:
            made += run(batch)
            batch = []
    if batch:
        made += run(batch)
    teachers.caption_requests += captions.requests
    return made, failures, stopped


def _answerability(out: Path, paths: list[str]) -> dict:
    """Counts of the chains on disk: answerable, flagged (not answerable), unchecked; the rate."""
    counts = {"answerable": 0, "flagged": 0, "unchecked": 0}
    for p in paths:
        for rec in read_progress(out / STATE_DIR / f"{Path(p).stem}.jsonl").values():
            flag = rec.get("answerable")
            counts["unchecked" if flag is None else "answerable" if flag else "flagged"] += 1
    checked = counts["answerable"] + counts["flagged"]
    return {**counts, "answerability_rate": round(counts["answerable"] / checked, 4) if checked else None}


def _failure_kinds(failures: list[dict]) -> dict[str, int]:
    """Failures by kind: a reply cut / empty / malformed, or any other error (a request, a clip)."""
    kinds: dict[str, int] = {}
    for f in failures:
        error = f["error"] or ""
        kind = (
            error.split("BadReply: ", 1)[1].split(" ", 1)[0].rstrip(":") if "BadReply: " in error else "error"
        )
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def fill_memories(
    shards: str | list[str],
    out_dir: str | Path,
    captioner: Captioner,
    writer: Writer,
    prompts: Prompts,
    limit_memory: Callable[[str], str],
    *,
    reader: Writer | None = None,
    filter: str | None = None,
    min_open_score: float = MIN_OPEN_SCORE,
    part: str | None = None,
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
        reader: Answers each question from its final memory (answerability.py); None: the writer.
        filter: None keeps every chain (flagged ones carry ``answerable: false``); ``"answerable"``
            leaves the flagged ones out of the output shards.
        min_open_score: The reader's rule score an open-ended question needs to be answerable.
        part: ``"i/n"``: fill only this machine's share of the shards (None: all).
        frames_per_clip: Frames of each clip shown to the captioner.
        frame_size: (H, W) the clips are decoded at (None: as stored).
        batch_size: Questions run in lockstep (the local batch / the requests kept in flight).
        max_questions: Stop after this many chains in this run (a smoke run; the rest resumes later).

    Returns:
        Summary: ``questions`` (in this part's input), ``done`` (chains now on disk), ``new`` (made in
        this run), ``failed`` and ``failures_by_kind``, ``caption_requests`` (this run) with
        ``caption_requests_per_question`` and ``caption_requests_saved`` (against one description per
        question and clip), ``reader_requests``, ``answerable`` / ``flagged`` / ``unchecked`` and
        ``answerability_rate`` (chains on disk), ``filter``, ``dropped`` (left out by it),
        ``resumed_shards``, ``written_shards``, ``part``, ``seconds``, ``questions_per_minute``.

    Raises:
        ValueError: An unknown filter, a min_open_score outside [0, 1] or a bad part.
        OutLocked: Another run is writing OUT (or this part of it).
    """
    if filter not in FILTERS:
        raise ValueError(f"teacher.filter must be null or answerable, got {filter!r}")
    if not 0.0 <= min_open_score <= 1.0:
        raise ValueError(f"teacher.min_open_score must be in [0, 1], got {min_open_score!r}")
    part_ = parse_part(part)
    paths = my_shards(expand_shards(shards), part_)
    out = Path(out_dir)
    teachers = Teachers(captioner, writer, reader or writer, prompts, limit_memory, min_open_score)
    with lock_out(out, part_):
        return _fill(paths, out, teachers, filter, part_, (frames_per_clip, frame_size), batch_size,
                     max_questions)  # fmt: skip


def _fill(
    paths: list[str],
    out: Path,
    teachers: Teachers,
    filter: str | None,
    part: tuple[int, int],
    decode: tuple,
    batch_size: int,
    max_questions: int | None,
) -> dict:
    """``fill_memories`` under OUT's lock."""
    settings_file = out / STATE_DIR / "settings.json"
    old = json.loads(settings_file.read_text(encoding="utf-8")) if settings_file.exists() else {}
    refilter = old.get("filter", filter) != filter  # outputs written with another filter: rewrite them
    settings_file.write_text(json.dumps({"filter": filter}), encoding="utf-8")
    suffix = part_suffix(part)
    total = count_questions(paths)
    failures: list[dict] = []
    new = resumed = written = dropped = 0
    start = time.perf_counter()
    bar = tqdm(total=total, desc="memories", unit="question")
    stopped = False
    for shard in paths:
        name = Path(shard).name
        progress = out / STATE_DIR / f"{Path(name).stem}.jsonl"
        failed_file = out / STATE_DIR / f"{Path(name).stem}.failed.json"
        done = read_progress(progress)
        if (out / name).exists() and not failed_file.exists() and not refilter:
            resumed += 1
            bar.update(count_questions([shard]))
            continue
        bar.update(len(done) + count_questions([shard], given_only=True))
        budget = None if max_questions is None else max_questions - new
        made, shard_failures, stopped = _fill_shard(
            shard, progress, done, teachers, budget, batch_size, decode, bar
        )
        new += made
        failures.extend(shard_failures)
        if stopped:
            break
        written += 1
        dropped += write_output(shard, done, out / name, filter)[1]
        if shard_failures:
            failed_file.write_text(json.dumps(shard_failures, indent=2), encoding="utf-8")
        else:
            failed_file.unlink(missing_ok=True)
    bar.close()
    seconds = time.perf_counter() - start
    done_total = sum(len(read_progress(out / STATE_DIR / f"{Path(p).stem}.jsonl")) for p in paths)
    asked, tried = teachers.caption_requests, teachers.questions
    summary = {
        "questions": total,
        "done": done_total,
        "new": new,
        "failed": len(failures),
        "failures_by_kind": _failure_kinds(failures),
        "caption_requests": asked,
        "caption_requests_per_question": round(asked / tried, 3) if tried else None,
        "caption_requests_saved": teachers.clips - asked,
        "reader_requests": teachers.reader_requests,
        **_answerability(out, paths),
        "filter": filter,
        "dropped": dropped,
        "stopped_early": stopped,
        "resumed_shards": resumed,
        "written_shards": written,
        "part": f"{part[0]}/{part[1]}",
        "seconds": round(seconds, 3),
        "questions_per_minute": round(60 * new / seconds, 2) if new and seconds > 0 else None,
    }
    (out / f"failures{suffix}.json").write_text(json.dumps(failures, indent=2), encoding="utf-8")
    (out / f"summary{suffix}.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary
