"""Entry point of evaluation: ``python -m videomem.run_eval ckpt=DIR [overrides]`` (``make eval``).

Built from config like training (``configs/eval.yaml`` composes the same data, model and decode
groups): the data group's datamodule streams the split (``shards``, default its test split), the model
group's factory loads the saved policy onto ``device`` in ``dtype`` (``eval/runtime.py``: CUDA when
there is one, in the precision the policy trained in), the greedy memory loop runs with the decode
group's ``eval`` settings, and JSON is written with the metrics, the videos skipped as unreadable
(``skipped``, ``skipped_samples``), the settings that make numbers comparable, and one record per
question; the same figures go to TensorBoard under ``eval/``, and an HTML page beside each JSON shows
every question's frames, memories and answers (``eval/report.py``). Scores are per kind (``per_kind``:
multiple-choice accuracy, the open-ended rule score and, with ``judge=openai``, the LLM judge's
``open_judge``). Frames are decoded as the policy was trained (the geometry saved beside it,
``eval/geometry.py``).

Under ``torchrun --nproc-per-node N -m videomem.run_eval ...`` (also over several nodes) the split's
batches of ``batch_size`` questions are dealt to the ranks in turn, every question once; rank 0 merges
the records back into the split's order and alone writes the outputs, which are those a single process
writes: the same batches decode the same way (``eval/distributed.py``).
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from videomem import CONFIG_DIR
from videomem.cli import UserError, check_shards, one_line_errors
from videomem.config_check import check_config
from videomem.data.shards import expand_shards
from videomem.data.types import VideoQA
from videomem.eval.benchmarks import BENCHMARKS
from videomem.eval.distributed import eval_process_group, gather_on_zero
from videomem.eval.evaluate import evaluate_batches, merge_shares
from videomem.eval.geometry import resolve_frames
from videomem.eval.metrics import flatten_metrics, judge_records
from videomem.eval.report import write_report
from videomem.eval.runtime import resolve_device, resolve_dtype
from videomem.memory.loop import GenerationConfig
from videomem.memory.prompt import SYSTEM_PROMPT

log = logging.getLogger(__name__)


def markdown_table(result: dict) -> str:
    """The headline figures (and the official aggregate, if any) as a Markdown table."""
    rows = [("n", result["n"]), ("skipped", result.get("skipped", 0)), ("accuracy (a_T)", result["accuracy"])]
    rows += [(f"seg{t + 1} accuracy", v) for t, v in enumerate(result["seg_accuracy"])]
    rows += [(f"category {k}", v) for k, v in result["per_category"].items()]
    names = {
        "mc": "multiple-choice accuracy",
        "open": "open-ended rule score",
        "open_judge": "open-ended judge score",
    }
    rows += [(names.get(k, k), v) for k, v in result.get("per_kind", {}).items()]
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


def check_ckpt(ckpt: str) -> None:
    """Refuse a ``ckpt`` that is not a saved policy dir, saying how to get one."""
    if not (Path(ckpt) / "config.json").is_file():
        what = "has no config.json" if Path(ckpt).is_dir() else "does not exist"
        raise UserError(
            f"ckpt={ckpt} {what}: evaluate a saved policy dir (`make sft` writes logs/sft/latest, "
            "`make prpo` logs/prpo/latest; make eval CKPT=<dir>)"
        )


def load_policy(cfg: DictConfig, device: torch.device, dtype: torch.dtype):
    """The model group's factory pointed at ``cfg.ckpt`` (its architecture read from the checkpoint),
    loaded in ``dtype``, on ``device``."""
    check_ckpt(cfg.ckpt)
    arch = json.loads((Path(cfg.ckpt) / "config.json").read_text()).get("model_type")
    factory = hydra.utils.instantiate(cfg.model)
    dtype_name = str(dtype).removeprefix("torch.")
    return factory(arch=arch, liger_kernels=False, dtype=dtype_name).to(device).eval()


def chunk_batches(
    positioned: Iterable[tuple[int, VideoQA]], size: int
) -> Iterator[tuple[list[int], list[VideoQA]]]:
    """``(positions, questions)`` per batch: the questions of one chunk of ``size`` positions (a chunk
    whose questions were skipped as unreadable comes out shorter, or not at all)."""
    for _, group in itertools.groupby(positioned, key=lambda item: item[0] // size):
        items = list(group)
        yield [i for i, _ in items], [qa for _, qa in items]


def merge_skips(parts: list[tuple[int, list[dict]]], shards: list[str]) -> tuple[int, list[dict]]:
    """The skip count over all ranks and each distinct skip once, by shard, then key (any rank split
    gives the same list)."""
    order = {url: i for i, url in enumerate(shards)}
    seen, samples = set(), []
    for _, listed in parts:
        for r in listed:
            ident = (r.get("split"), r.get("key"), r.get("url"), r.get("reason"))
            if ident not in seen:
                seen.add(ident)
                samples.append(r)
    samples.sort(key=lambda r: (order.get(r.get("url"), len(order)), str(r.get("key")), str(r.get("reason"))))
    return sum(count for count, _ in parts), samples


def write_outputs(result: dict, out_dir: Path, out: str | None) -> list[Path]:
    """``eval.json`` + ``eval.md`` in the run dir (and ``out`` with its ``.md``), ``eval/*`` scalars to
    TensorBoard under the run dir. Returns the JSON paths."""
    paths = [out_dir / "eval.json"] + ([Path(out)] if out else [])
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2))
        path.with_suffix(".md").write_text(markdown_table(result))
    from torch.utils.tensorboard import SummaryWriter

    metrics = {k: v for k, v in result.items() if k not in _NOT_METRICS}
    with SummaryWriter(str(out_dir / "tensorboard")) as writer:
        for name, value in flatten_metrics(metrics, "eval").items():
            writer.add_scalar(name, value, 0)
    return paths


# result keys that are not evaluation figures (everything else goes to TensorBoard as eval/*)
_NOT_METRICS = {"n", "skipped", "skipped_samples", "official", "judge", "settings", "records"}


def run(cfg: DictConfig) -> dict | None:
    """Evaluate ``cfg.ckpt`` on ``cfg.shards``; write ``cfg.out`` (and the run dir) JSON.

    Returns:
        The written result on rank 0 (the only process of a plain run); None on the other ranks.
    """
    check_ckpt(cfg.ckpt)
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device, cfg.ckpt)
    data_default = (cfg.data.frame_size, cfg.data.frames_per_clip)
    frame_size, frames_per_clip = resolve_frames(cfg.ckpt, cfg.frame_size, cfg.frames_per_clip, data_default)
    if frame_size is None:
        raise UserError("no frame size: set frame_size=[H,W] (multiples of the policy's patch * merge)")
    check_shards("shards", cfg.shards)
    gen = GenerationConfig(**cfg.decode.eval)
    with eval_process_group(device) as (rank, world):
        torch.manual_seed(cfg.seed)
        policy = load_policy(cfg, device, dtype)
        # num_workers=0: decoding in this process, so the datamodule's skip count is this rank's
        datamodule = hydra.utils.instantiate(
            cfg.data,
            test_shards=cfg.shards,
            frame_size=list(frame_size),
            frames_per_clip=frames_per_clip,
            num_workers=0,
        )
        stream = datamodule.eval_stream("test", cfg.shards, limit=cfg.limit or None, chunk=cfg.batch_size)
        start = time.perf_counter()
        share = evaluate_batches(
            policy,
            chunk_batches(stream.positioned(), cfg.batch_size),
            gen=gen,
            memory_off=cfg.memory_off,
            total=(cfg.limit or None) if world == 1 else None,
            progress=rank == 0,
        )
        log.info(
            "rank %d of %d: %d questions in %.1f s",
            rank,
            world,
            len(share.records),
            time.perf_counter() - start,
        )
        parts = gather_on_zero((share, datamodule.skipped, datamodule.skipped_samples))
        if parts is not None:  # every rank done: the evaluation's wall time, loading excluded
            log.info(
                "%d questions on %d rank(s) in %.1f s",
                sum(len(p[0].records) for p in parts),
                world,
                time.perf_counter() - start,
            )
    if parts is None:
        return None
    metrics, records = merge_shares(share for share, _, _ in parts)
    skipped, skipped_samples = merge_skips([(n, listed) for _, n, listed in parts], expand_shards(cfg.shards))
    judge = hydra.utils.instantiate(cfg.judge) if cfg.get("judge") else None
    if judge is not None:  # once, on the merged records: each open-ended answer costs one request at most
        metrics["per_kind"]["open_judge"] = judge_records(records, judge)
    official = None
    if cfg.bench:
        bench = BENCHMARKS[cfg.bench]
        if judge is not None and hasattr(bench, "judge_generation"):  # MLVU's generation tasks: its rubric
            bench.judge_generation(records, judge.endpoint)
        official = bench.official_score(records)
    result = {
        **metrics,
        "skipped": skipped,
        "skipped_samples": skipped_samples,  # {"split", "key", "url", "reason"} each
        "official": official,
        "judge": judge.take_stats() if judge is not None else None,
        "settings": {
            "ckpt": str(cfg.ckpt),
            "shards": str(cfg.shards),
            "bench": cfg.bench,
            "memory_off": cfg.memory_off,
            "frames_per_clip": frames_per_clip,
            "frame_size": list(frame_size),
            "pixels_per_frame": int(frame_size[0]) * int(frame_size[1]),
            "generation": OmegaConf.to_container(cfg.decode.eval),
            "device": device.type,
            "dtype": str(dtype).removeprefix("torch."),
            "system_prompt": SYSTEM_PROMPT if policy.system_prompt is None else policy.system_prompt,
        },
        "records": records,
    }
    paths = write_outputs(result, Path(cfg.paths.output_dir), cfg.out)
    write_report([p.with_suffix(".html") for p in paths], records, result, cfg.shards, **cfg.report)
    log.info("eval: %s", json.dumps(metrics))
    print(json.dumps({**metrics, "skipped": skipped}, indent=2))
    print(f"written: {', '.join(map(str, paths))} (and .md, .html beside each)")
    return result


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
@one_line_errors("run_eval")
def main(cfg: DictConfig) -> float | None:
    check_config(cfg)  # every numeric setting in range, before the policy is loaded
    result = run(cfg)
    return None if result is None else float(result["accuracy"])


if __name__ == "__main__":
    main()
