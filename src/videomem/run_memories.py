"""Entry point of the teacher pipeline: ``python -m videomem.run_memories shards=DIR out=DIR [teacher=...]``.

``make memories SHARDS=... OUT=... ARGS="teacher=tiny|local|openai ..."`` (configs/memories.yaml).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from videomem import CONFIG_DIR
from videomem.teacher.chain import Prompts
from videomem.teacher.local import memory_limiter
from videomem.teacher.pipeline import fill_memories
from videomem.teacher.spot_check import write_spot_check

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    """Build the teachers from ``cfg.teacher``, fill the memories, write the spot-check page; the summary."""
    if not cfg.shards or not cfg.out:
        raise SystemExit("give the input shards and the output dir: make memories SHARDS=<dir> OUT=<dir>")
    if Path(str(cfg.shards)).resolve() == Path(str(cfg.out)).resolve():
        raise SystemExit(
            f"OUT must differ from SHARDS ({cfg.out}): the input shards are read, never rewritten"
        )
    for noisy in ("httpx", "httpx2", "openai"):  # one INFO line per request otherwise
        logging.getLogger(noisy).setLevel(logging.WARNING)
    captioner = hydra.utils.instantiate(cfg.teacher.captioner)
    writer = hydra.utils.instantiate(cfg.teacher.writer)
    limit, which = memory_limiter(cfg.max_memory_tokens, cfg.memory_tokenizer, writer)
    log.info("memories cut to %d tokens of %s", cfg.max_memory_tokens, which)
    summary = fill_memories(
        cfg.shards,
        cfg.out,
        captioner,
        writer,
        Prompts(**cfg.prompts),
        limit,
        frames_per_clip=captioner.frames_per_clip,
        frame_size=captioner.frame_size,
        batch_size=cfg.batch_size,
        max_questions=cfg.max_questions,
    )
    page = write_spot_check(
        cfg.out, cfg.spot_check.questions, cfg.spot_check.frames_per_clip, cfg.spot_check.height, cfg.seed
    )
    summary["memory_tokenizer"] = which
    summary["spot_check"] = str(page)
    return summary


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="memories")
def main(cfg: DictConfig) -> None:
    summary = run(cfg)
    print(json.dumps(summary, indent=2))
    if summary["failed"]:
        print(f"{summary['failed']} questions failed (left out of the shards): see {cfg.out}/failures.json")


if __name__ == "__main__":
    main()
