"""Entry point of evaluation: ``python -m videomem.run_eval ckpt=DIR [overrides]`` (``make eval``).

Built from config like training (``configs/eval.yaml`` composes the same data and model groups): the
data group's datamodule streams the split (``shards``, default its test split), the model group's
factory loads the saved policy, the greedy memory loop runs, and JSON is written with the metrics,
the videos skipped as unreadable (``skipped``, ``skipped_samples``), the settings that make numbers
comparable, and one record per question; the same figures go to TensorBoard under ``eval/``.
Frames are decoded as the policy was trained (the geometry saved beside it, ``eval/geometry.py``).
"""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from videomem import CONFIG_DIR
from videomem.cli import UserError, check_shards, one_line_errors
from videomem.config_check import check_config
from videomem.eval.benchmarks import BENCHMARKS
from videomem.eval.evaluate import evaluate
from videomem.eval.geometry import resolve_frames
from videomem.eval.metrics import flatten_metrics
from videomem.memory.loop import GenerationConfig
from videomem.memory.prompt import SYSTEM_PROMPT

log = logging.getLogger(__name__)


def markdown_table(result: dict) -> str:
    """The headline figures (and the official aggregate, if any) as a Markdown table."""
    rows = [("n", result["n"]), ("skipped", result.get("skipped", 0)), ("accuracy (a_T)", result["accuracy"])]
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
    table = "| metric | value |\n|---|---|\n" + "\n".join(f"| {k} | {fmt(v)} |" for k, v in rows) + "\n"
    skipped = result.get("skipped_samples") or []
    tail = "".join(f"- `{r['key']}` in `{r['url']}`: {r['reason']}\n" for r in skipped)
    tail = "\nSkipped:\n\n" + tail if skipped else ""
    return head + table + tail


def load_policy(cfg: DictConfig):
    """The model group's factory pointed at ``cfg.ckpt`` (its architecture read from the checkpoint)."""
    ckpt = Path(cfg.ckpt)
    if not (ckpt / "config.json").is_file():
        what = "has no config.json" if ckpt.is_dir() else "does not exist"
        raise UserError(
            f"ckpt={cfg.ckpt} {what}: evaluate a saved policy dir (`make sft` writes logs/sft/latest, "
            "`make prpo` logs/prpo/latest; make eval CKPT=<dir>)"
        )
    arch = json.loads((ckpt / "config.json").read_text()).get("model_type")
    factory = hydra.utils.instantiate(cfg.model)
    return factory(arch=arch, liger_kernels=False).eval()


def run(cfg: DictConfig) -> dict:
    """Evaluate ``cfg.ckpt`` on ``cfg.shards``; write ``cfg.out`` (and the run dir) JSON."""
    torch.manual_seed(cfg.seed)
    policy = load_policy(cfg)
    data_default = (cfg.data.frame_size, cfg.data.frames_per_clip)
    frame_size, frames_per_clip = resolve_frames(cfg.ckpt, cfg.frame_size, cfg.frames_per_clip, data_default)
    if frame_size is None:
        raise UserError("no frame size: set frame_size=[H,W] (multiples of the policy's patch * merge)")
    check_shards("shards", cfg.shards)
    # num_workers=0: decoding in this process, so the datamodule's skip count is this run's
    datamodule = hydra.utils.instantiate(
        cfg.data,
        test_shards=cfg.shards,
        frame_size=list(frame_size),
        frames_per_clip=frames_per_clip,
        num_workers=0,
    )
    questions = (qa for batch in datamodule.test_dataloader() for qa in batch)
    if cfg.limit:
        questions = itertools.islice(questions, cfg.limit)
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
        "skipped": datamodule.skipped,
        "skipped_samples": datamodule.skipped_samples,  # {"split", "key", "url", "reason"} each
        "official": official,
        "settings": {
            "ckpt": str(cfg.ckpt),
            "shards": str(cfg.shards),
            "bench": cfg.bench,
            "memory_off": cfg.memory_off,
            "frames_per_clip": frames_per_clip,
            "frame_size": list(frame_size),
            "pixels_per_frame": int(frame_size[0]) * int(frame_size[1]),
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
    print(json.dumps({**metrics, "skipped": datamodule.skipped}, indent=2))
    print(f"written: {', '.join(map(str, paths))}")
    return result


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
@one_line_errors("run_eval")
def main(cfg: DictConfig) -> float:
    check_config(cfg)  # every numeric setting in range, before the policy is loaded
    return float(run(cfg)["accuracy"])


if __name__ == "__main__":
    main()
