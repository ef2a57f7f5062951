"""Entry point of evaluation: ``python -m videomem.run_eval ckpt=DIR [overrides]`` (``make eval``).

Loads a saved policy, streams a split of shards, runs the greedy memory loop and writes JSON with
the metrics, the settings that make numbers comparable, and one record per question; the same
figures go to TensorBoard under ``eval/``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from videomem import CONFIG_DIR
from videomem.data.shards import expand_shards, iter_shard_videoqa
from videomem.eval.benchmarks import BENCHMARKS
from videomem.eval.evaluate import evaluate
from videomem.eval.metrics import flatten_metrics
from videomem.memory.loop import GenerationConfig
from videomem.memory.prompt import SYSTEM_PROMPT
from videomem.model.policy import Policy

log = logging.getLogger(__name__)


def markdown_table(result: dict) -> str:
    """The headline figures (and the official aggregate, if any) as a Markdown table."""
    rows = [("n", result["n"]), ("accuracy (a_T)", result["accuracy"])]
    rows += [(f"seg{t + 1} accuracy", v) for t, v in enumerate(result["seg_accuracy"])]
    rows += [(f"category {k}", v) for k, v in result["per_category"].items()]
    rows += [(k, result[k]) for k in ("parse_failure_rate", "format_valid_rate", "mean_memory_tokens")]
    if result.get("official"):
        rows += [(f"official {k}", v) for k, v in result["official"].items()]
    s = result["settings"]
    head = (
        f"ckpt `{s['ckpt']}`, shards `{s['shards']}`, {s['frames_per_clip']} frames/clip at "
        f"{s['frame_size'][0]}x{s['frame_size'][1]}, memory_off={s['memory_off']}\n\n"
    )
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    return head + "| metric | value |\n|---|---|\n" + "\n".join(f"| {k} | {fmt(v)} |" for k, v in rows) + "\n"


def run(cfg: DictConfig) -> dict:
    """Evaluate ``cfg.ckpt`` on ``cfg.shards``; write ``cfg.out`` (and the run dir) JSON."""
    torch.manual_seed(cfg.seed)
    policy = Policy.from_pretrained(cfg.ckpt).eval()
    questions = iter_shard_videoqa(
        expand_shards(cfg.shards),
        frames_per_clip=cfg.frames_per_clip,
        frame_size=tuple(cfg.frame_size),
        backend=cfg.backend,
    )
    if cfg.limit:
        questions = (q for i, q in zip(range(cfg.limit), questions))
    metrics, records = evaluate(
        policy,
        questions,
        batch_size=cfg.batch_size,
        gen=GenerationConfig(**cfg.generation),
        memory_off=cfg.memory_off,
        total=cfg.limit,
    )
    official = None
    if cfg.bench:
        official = BENCHMARKS[cfg.bench].official_score(records)
    result = {
        **metrics,
        "official": official,
        "settings": {
            "ckpt": str(cfg.ckpt),
            "shards": str(cfg.shards),
            "bench": cfg.bench,
            "memory_off": cfg.memory_off,
            "frames_per_clip": cfg.frames_per_clip,
            "frame_size": list(cfg.frame_size),
            "pixels_per_frame": int(cfg.frame_size[0]) * int(cfg.frame_size[1]),
            "generation": OmegaConf.to_container(cfg.generation),
            "system_prompt": SYSTEM_PROMPT if policy.system_prompt is None else policy.system_prompt,
        },
        "records": records,
    }
    out_dir = Path(cfg.paths.output_dir)
    paths = [out_dir / "eval.json"] + ([Path(cfg.out)] if cfg.out else [])
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2))
        path.with_suffix(".md").write_text(markdown_table(result))
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(out_dir / "tensorboard")) as writer:
        for name, value in flatten_metrics({k: v for k, v in metrics.items() if k != "n"}, "eval").items():
            writer.add_scalar(name, value, 0)
    log.info("eval: %s", json.dumps(metrics))
    print(json.dumps(metrics, indent=2))
    print(f"written: {', '.join(map(str, paths))}")
    return result


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> float:
    return float(run(cfg)["accuracy"])


if __name__ == "__main__":
    main()
