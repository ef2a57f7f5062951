"""Start-up check of every numeric setting the method depends on, before any model or data is built.

`check_config(cfg)` walks one table of rules (a dotted key, the kind of number, its allowed range, what
it is) and raises `ConfigError` with ONE line naming the key, the value and the allowed range; e.g.
``module.rollout.group_size=0: must be an integer >= 2 (G, samples per group)`` instead of "max() arg is
an empty sequence" deep in the policy, or a TypeError inside the Trainer for ``trainer.max_steps=ten``.

A key that a config does not have is not checked (one table serves configs/sft.yaml, configs/prpo.yaml
and configs/eval.yaml); a key set to null is accepted only where null has a meaning. Interpolations are
resolved, so ``module.scheduler.total_steps`` (``${trainer.max_steps}``) is checked as the number it
becomes.

This module sits above everything (only the entry points import it) and knows nothing of the classes
the settings go to: their own constructors still check what only they can.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from omegaconf import DictConfig, ListConfig, OmegaConf

_ABSENT = object()


class ConfigError(ValueError):
    """A setting outside its allowed range (one line: key, value, range)."""


@dataclass(frozen=True)
class Rule:
    """A number in [lo, hi] (open ends where `lo_open` / `hi_open`), an integer when `integer`."""

    what: str
    integer: bool = False
    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False
    nullable: bool = False

    def range(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.lo > -math.inf and self.hi < math.inf:
            left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
            text = f"{kind} in {left}{self.lo:g}, {self.hi:g}{right}"
        elif self.lo > -math.inf:
            text = f"{kind} {'>' if self.lo_open else '>='} {self.lo:g}"
        elif self.hi < math.inf:
            text = f"{kind} {'<' if self.hi_open else '<='} {self.hi:g}"
        else:
            text = kind
        return text + (" or null" if self.nullable else "")

    def ok(self, value) -> bool:
        if value is None:
            return self.nullable
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.integer and not isinstance(value, int):
            return False
        if isinstance(value, float) and math.isnan(value):
            return False
        above = value > self.lo if self.lo_open else value >= self.lo
        below = value < self.hi if self.hi_open else value <= self.hi
        return above and below


def _int(lo: float, what: str, **kw) -> Rule:
    return Rule(what, integer=True, lo=lo, **kw)


def _num(what: str, **kw) -> Rule:
    return Rule(what, **kw)


POSITIVE = {"lo": 0.0, "lo_open": True}
UNIT = {"lo": 0.0, "hi": 1.0}

RULES: dict[str, Rule] = {
    # trainer first: the scheduler's total_steps is an interpolation of trainer.max_steps
    "trainer.max_steps": _int(1, "training steps"),
    "trainer.num_nodes": _int(1, "nodes"),
    "trainer.log_every_n_steps": _int(1, "logging interval"),
    "trainer.check_val_every_n_epoch": _int(1, "validation interval in epochs", nullable=True),
    "trainer.gradient_clip_val": _num("gradient clip, 0 or null: none", lo=0.0, nullable=True),
    "trainer.accumulate_grad_batches": _int(1, "batches accumulated"),
    # decoding (configs/decode/), before the module keys that interpolate them
    "decode.eval.max_new_tokens": _int(1, "greedy tokens per clip step"),
    "decode.rollout.max_new_tokens": _int(1, "sampled tokens per clip step"),
    "decode.rollout.temperature": _num("sampling temperature", **POSITIVE),
    "decode.rollout.top_p": _num("nucleus mass", lo=0.0, hi=1.0, lo_open=True),
    # PRPO rollout (docs/method.md section 3)
    "module.rollout.group_size": _int(2, "G, samples per group"),
    "module.rollout.keep": _int(1, "K, memories carried per clip"),
    "module.rollout.tau0": _num("tau_0, PSP temperature", **POSITIVE),
    "module.rollout.gamma": _num("gamma, PSP temperature decay per clip", lo=0.0, hi=1.0, lo_open=True),
    "module.rollout.step_gamma": _num("PSP decay per step", lo=0.0, hi=1.0, lo_open=True, nullable=True),
    "module.rollout.max_new_tokens": _int(1, "tokens sampled per clip"),
    "module.rollout.temperature": _num("sampling temperature", **POSITIVE),
    "module.rollout.top_p": _num("nucleus mass", lo=0.0, hi=1.0, lo_open=True),
    # TCR reward
    "module.reward.alpha": _num("alpha, answer reward weight", lo=0.0),
    "module.reward.format_weight": _num("format reward weight", lo=0.0),
    "module.reward.beta": _num("beta, memory length penalty", lo=0.0),
    "module.reward.max_memory_tokens": _int(1, "L_max, memory tokens before the penalty"),
    # PRPO update
    "module.eps_low": _num("clip epsilon below 1", lo=0.0, hi=1.0, hi_open=True),
    "module.eps_high": _num("clip epsilon above 1", lo=0.0),
    "module.kl_coef": _num("KL coefficient", lo=0.0),
    "module.epochs": _int(1, "update epochs per rollout"),
    "module.micro_batch_size": _int(1, "samples per forward/backward"),
    "module.liger_chunk_size": _int(1, "Liger loss chunk"),
    "module.vision_lr_scale": _num("vision tower LR multiple", lo=0.0),
    "module.log_trees": _int(0, "rollout trees logged"),
    # both stages
    "module.steps_per_question": _int(1, "clip steps per question", nullable=True),
    "module.val_generation.max_new_tokens": _int(1, "validation tokens per clip"),
    "module.val_text_samples": _int(0, "validation texts logged"),
    "module.optimizer.lr": _num("learning rate", **POSITIVE),
    "module.optimizer.weight_decay": _num("weight decay", lo=0.0),
    "module.scheduler.warmup_steps": _int(0, "warm-up steps"),
    "module.scheduler.total_steps": _int(1, "schedule length"),
    "module.scheduler.min_ratio": _num("final LR ratio", **UNIT),
    "num_threads": _int(1, "torch threads", nullable=True),
    # data
    "data.batch_size": _int(1, "questions per step"),
    "data.num_workers": _int(0, "DataLoader workers"),
    "data.frames_per_clip": _int(1, "frames per clip"),
    "data.val_limit": _int(1, "validation questions", nullable=True),
    "data.epoch_length": _int(1, "training questions per epoch", nullable=True),
    # model (the tiny build: model.tiny.*, a key of videomem.model.tiny.TINY_DEFAULTS)
    **{
        f"model.tiny.{k}": _int(1, "tiny model size")
        for k in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "intermediate_size",
            "vision_depth",
            "vision_hidden_size",
            "vision_num_heads",
            "vision_intermediate_size",
            "vision_merge_size",
            "max_position_embeddings",
        )
    },  # fmt: skip
    "model.tiny.vision_patch_size": _int(1, "vision patch side; null: the arch's own", nullable=True),
    "model.tiny.rope_theta": _num("rope base", **POSITIVE),
    "model.tiny.initializer_range": _num("init std", **POSITIVE),
    # evaluation (configs/eval.yaml)
    "batch_size": _int(1, "questions per batch"),
    "limit": _int(0, "questions evaluated; 0 or null: all", nullable=True),
    "frames_per_clip": _int(1, "frames per clip; null: as saved beside the policy", nullable=True),
    "report.frames_per_clip": _int(1, "thumbnails per clip in the HTML report"),
    "report.height": _int(1, "thumbnail height in px"),
    # the LLM judge of open-ended answers (configs/judge/)
    "judge.max_in_flight": _int(1, "judge requests at once"),
    "judge.timeout": _num("judge request timeout, s", **POSITIVE),
    "judge.retries": _int(0, "judge retries"),
    "judge.backoff": _num("judge backoff, s", lo=0.0),
}

FRAME_SIDE = _int(1, "frame side")
CHOICES = {"data.backend": ("decord", "pyav")}


def _get(cfg: DictConfig, key: str):
    return OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False)


def _plain(value):
    return OmegaConf.to_object(value) if isinstance(value, (DictConfig, ListConfig)) else value


def _fail(key: str, value, expected: str) -> None:
    raise ConfigError(f"{key}={value!r}: must be {expected}")


def _check_frame_size(cfg: DictConfig, key: str) -> None:
    size = _get(cfg, key)
    if size is _ABSENT or size is None:  # null: the stored frames (data), the saved geometry (eval)
        return
    if (
        not isinstance(size, (list, tuple, ListConfig))
        or len(size) != 2
        or not all(FRAME_SIDE.ok(v) for v in size)
    ):
        _fail(
            key, OmegaConf.to_object(size) if isinstance(size, ListConfig) else size, "[H, W], integers >= 1"
        )


def check_config(cfg: DictConfig) -> None:
    """Raise `ConfigError` (one line) for the first setting outside its range; see `RULES`."""
    for key, rule in RULES.items():
        value = _get(cfg, key)
        if value is not _ABSENT and not rule.ok(value):
            _fail(key, value, f"{rule.range()} ({rule.what})")
    for key, choices in CHOICES.items():
        value = _get(cfg, key)
        if value is not _ABSENT and value not in choices:
            _fail(key, value, f"one of {list(choices)}")
    keep, group = _get(cfg, "module.rollout.keep"), _get(cfg, "module.rollout.group_size")
    if keep is not _ABSENT and group is not _ABSENT and keep > group:
        _fail("module.rollout.keep", keep, f"<= module.rollout.group_size={group} (K of G samples)")
    betas = _get(cfg, "module.optimizer.betas")
    beta_rule = Rule("Adam beta", lo=0.0, hi=1.0, hi_open=True)
    if (
        betas is not _ABSENT
        and betas is not None
        and not (isinstance(betas, ListConfig) and len(betas) == 2 and all(beta_rule.ok(b) for b in betas))
    ):
        _fail("module.optimizer.betas", _plain(betas), "two numbers in [0, 1) (Adam betas)")
    _check_frame_size(cfg, "data.frame_size")
    _check_frame_size(cfg, "frame_size")
    keep_map = _get(cfg, "data.category_keep")
    if keep_map is not _ABSENT and keep_map is not None:
        for category, p in keep_map.items():
            if not Rule("", **UNIT).ok(p):
                _fail(f"data.category_keep.{category}", p, "a probability in [0, 1]")
