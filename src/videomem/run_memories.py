"""Entry point of the teacher pipeline: ``python -m videomem.run_memories shards=DIR out=DIR [teacher=...]``.

``make memories SHARDS=... OUT=... [PART=i/n] ARGS="teacher=tiny|local|openai ..."`` (configs/memories.yaml).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from videomem import CONFIG_DIR
from videomem.cli import UserError, one_line_errors
from videomem.data.importers.plan import parse_part
from videomem.teacher.chain import Prompts
from videomem.teacher.local import memory_limiter
from videomem.teacher.outdir import OutLocked, lock_out, part_suffix
from videomem.teacher.pipeline import fill_memories
from videomem.teacher.spot_check import write_spot_check

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    """Build the teachers from ``cfg.teacher``, fill the memories, write the spot-check page; the summary.

    Raises:
        UserError: No SHARDS / OUT, OUT equal to SHARDS, or OUT being written by another run.
    """
    if not cfg.shards or not cfg.out:
        raise UserError("give the input shards and the output dir: make memories SHARDS=<dir> OUT=<dir>")
    if Path(str(cfg.shards)).resolve() == Path(str(cfg.out)).resolve():
        raise UserError(
            f"OUT must differ from SHARDS ({cfg.out}): the input shards are read, never rewritten"
        )
    prompts = Prompts(**cfg.prompts)  # a prompt with a field it cannot have fails here, before any model
    try:
        with lock_out(cfg.out, parse_part(cfg.part)):
            pass  # refused at once, before any model is built (fill_memories holds the lock for the run)
    except OutLocked as err:
        raise UserError(str(err)) from err
    for noisy in ("httpx", "httpx2", "openai"):  # one INFO line per request otherwise
        logging.getLogger(noisy).setLevel(logging.WARNING)
    captioner = hydra.utils.instantiate(cfg.teacher.captioner)
    writer = hydra.utils.instantiate(cfg.teacher.writer)
    reader = hydra.utils.instantiate(cfg.teacher.reader) if cfg.teacher.get("reader") else None
    limit, which = memory_limiter(cfg.max_memory_tokens, cfg.memory_tokenizer, writer)
    log.info("memories cut to %d tokens of %s; answerability read by %s", cfg.max_memory_tokens, which,
             "teacher.reader" if reader is not None else "the writer")  # fmt: skip
    try:
        summary = fill_memories(
            cfg.shards,
            cfg.out,
            captioner,
            writer,
            prompts,
            limit,
            reader=reader,
            filter=cfg.teacher.filter,
            min_open_score=cfg.teacher.min_open_score,
            part=cfg.part,
            frames_per_clip=captioner.frames_per_clip,
            frame_size=captioner.frame_size,
            batch_size=cfg.batch_size,
            max_questions=cfg.max_questions,
        )
    except OutLocked as err:
        raise UserError(str(err)) from err
    page = write_spot_check(
        cfg.out,
        cfg.spot_check.questions,
        cfg.spot_check.frames_per_clip,
        cfg.spot_check.height,
        cfg.seed,
        name=f"spot_check{part_suffix(parse_part(cfg.part))}.html",
        shards=cfg.shards,
    )
    summary["memory_tokenizer"] = which
    summary["spot_check"] = str(page)
    return summary


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="memories")
@one_line_errors("run_memories")
def main(cfg: DictConfig) -> None:
    summary = run(cfg)
    print(json.dumps(summary, indent=2))
    if summary["failed"]:
        print(f"{summary['failed']} questions failed (left out of the shards): see {cfg.out}/failures*.json")
    if summary["answerability_rate"] is not None:
        print(
            f"answerability: {summary['answerable']} of {summary['answerable'] + summary['flagged']} chains "
            f"answerable from their last memory ({summary['flagged']} flagged"
            + (
                f", {summary['dropped']} left out by teacher.filter=answerable)"
                if cfg.teacher.filter
                else ")"
            )
        )


if __name__ == "__main__":
    main()
