"""Entry point of the cold start: ``python -m videomem.run_sft [hydra overrides]`` (``make sft``)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from videomem import CONFIG_DIR
from videomem.cli import check_shards, one_line_errors
from videomem.config_check import check_config
from videomem.train.resume import check_ckpt_path
from videomem.train.runner import train


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="sft")
@one_line_errors("run_sft")
def main(cfg: DictConfig) -> float | None:
    check_config(cfg)  # every numeric setting in range, before anything is built
    check_ckpt_path(cfg.get("ckpt_path"))
    for split in ("train_shards", "val_shards"):
        check_shards(f"data.{split}", cfg.data.get(split))
    metrics = train(cfg)
    return metrics.get(cfg.get("optimized_metric", ""))


if __name__ == "__main__":
    main()
