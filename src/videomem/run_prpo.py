"""Entry point of PRPO: ``python -m videomem.run_prpo [hydra overrides]`` (``make prpo``).

``prpo=false`` ("cold start only", paper Table 5) trains nothing: the initial policy (the SFT
checkpoint) is validated once (``val/*`` logged at step 0, as in a training run) and saved as this
stage's result, so the evaluation and ablation plumbing stay the same.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from videomem import CONFIG_DIR
from videomem.config_check import check_config
from videomem.train.callbacks import point_latest
from videomem.train.runner import train, validate


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="prpo")
def main(cfg: DictConfig) -> float | None:
    check_config(cfg)  # every numeric setting in range, before anything is built
    if not cfg.prpo:
        module, metrics = validate(cfg)
        out = Path(cfg.callbacks.save_policy.dirpath)
        module.policy.save_pretrained(out)
        if cfg.callbacks.save_policy.latest:
            point_latest(out.resolve(), Path(cfg.callbacks.save_policy.latest))
        print(f"prpo=false: validated and saved the initial policy to {out}")
        return metrics.get(cfg.get("optimized_metric", ""))
    metrics = train(cfg)
    return metrics.get(cfg.get("optimized_metric", ""))


if __name__ == "__main__":
    main()
