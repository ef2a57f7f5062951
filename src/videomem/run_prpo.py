"""Entry point of PRPO: ``python -m videomem.run_prpo [hydra overrides]`` (``make prpo``).

``prpo=false`` ("cold start only", paper Table 5) trains nothing: the initial policy (the SFT
checkpoint) is validated once (``val/*`` logged at step 0, as in a training run) and saved as this
stage's result (gathered first when FSDP sharded it, like at the end of a training run), so the
evaluation and ablation plumbing stay the same.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from videomem import CONFIG_DIR
from videomem.cli import UserError, check_shards, one_line_errors
from videomem.config_check import check_config
from videomem.train.callbacks import point_latest, save_policy
from videomem.train.resume import check_ckpt_path
from videomem.train.runner import train, validate


def check_cold_start(cfg: DictConfig) -> None:
    """With ``cold_start`` PRPO starts from the SFT policy at ``init_from``: say how to get one."""
    if cfg.cold_start and not (init := cfg.get("init_from")):
        raise UserError("cold_start=true needs init_from=<a saved SFT policy dir>")
    if cfg.cold_start and not (Path(init) / "config.json").is_file():
        raise UserError(
            f"no cold-start policy at init_from={init}: run `make sft` first (it writes logs/sft/latest), "
            "or set init_from=<a saved SFT policy dir>, or cold_start=false to start from the model as configured"
        )


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="prpo")
@one_line_errors("run_prpo")
def main(cfg: DictConfig) -> float | None:
    check_config(cfg)  # every numeric setting in range, before anything is built
    check_cold_start(cfg)
    check_ckpt_path(cfg.get("ckpt_path"))
    for split in ("train_shards", "val_shards"):
        check_shards(f"data.{split}", cfg.data.get(split))
    if not cfg.prpo:
        module, metrics = validate(cfg)
        out = Path(cfg.callbacks.save_policy.dirpath)
        if save_policy(module.trainer, module, out):  # gathered first when sharded; rank 0 writes
            if cfg.callbacks.save_policy.latest:
                point_latest(out.resolve(), Path(cfg.callbacks.save_policy.latest))
            print(f"prpo=false: validated and saved the initial policy to {out}")
        return metrics.get(cfg.get("optimized_metric", ""))
    metrics = train(cfg)
    return metrics.get(cfg.get("optimized_metric", ""))


if __name__ == "__main__":
    main()
