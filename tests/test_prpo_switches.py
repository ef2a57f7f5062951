"""Every PRPO ablation switch (method.md section 3 table) runs one real training step on the tiny model.

Also: the step changes the parameters (or, for prpo=false, trains nothing and saves the SFT policy),
and the PSP rollout tree with K=2 kept memories trains too.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from videomem.model.policy import Policy, build_policy
from videomem.train.runner import build

TINY = ["model.tiny.hidden_size=64", "model.tiny.num_hidden_layers=1", "model.tiny.intermediate_size=128"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    from videomem.data.synthetic import generate_dataset

    out = tmp_path_factory.mktemp("prpo_shards")
    generate_dataset(out, splits={"train": 4, "val": 2}, workers=1)
    return out


@pytest.fixture(scope="module")
def sft_ckpt(tmp_path_factory) -> Path:
    """What `make sft` leaves behind, at test size: a saved tiny policy."""
    out = tmp_path_factory.mktemp("sft") / "policy"
    build_policy(
        "qwen2_5_vl",
        tiny={"hidden_size": 64, "num_hidden_layers": 1, "intermediate_size": 128},
        system_prompt="",
    ).save_pretrained(out)
    return out


def _overrides(shards: Path, sft_ckpt: Path, extra: list[str]) -> list[str]:
    return [
        f"data.train_shards={shards}/train",
        f"data.val_shards={shards}/val",
        f"init_from={sft_ckpt}",
        "data.batch_size=1",
        "data.num_workers=0",  # no worker process to start for one step
        "data.val_limit=2",
        "trainer.max_steps=1",
        "+trainer.limit_val_batches=0",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "~logger",
        "callbacks.lr_monitor=null",
        "module.rollout.group_size=4",
        "module.rollout.max_new_tokens=6",
        "module.overlong_filter=false",  # 6 tokens: nearly every sample is cut at the budget
        "module.optimizer.lr=1e-2",
        "module.skip_zero_advantage=false",  # a random tiny policy often earns equal rewards
        "module.use_liger=true",
        *TINY,
        *extra,
    ]


@pytest.mark.parametrize(
    "switch",
    [
        [],
        ["psp=false"],
        ["tcr=false"],
        ["memory_penalty=false"],
        ["cold_start=false"],
        ["module.rollout.keep=2"],
        [
            "module.reward.scale_advantages=false",
            "module.reward.answer_weight_schedule=linear",
            "data.category_keep={shape:0.0}",
        ],
        ["module.reward.answer_target=continuation"],
        ["module.reward.answer_target=continuation", "psp=false"],
        ["module.epochs=2"],
        ["module.kl_coef=0"],
        ["module.kl_coef=0.05", "module.skip_zero_advantage=true"],
    ],
    ids=[
        "full",
        "psp=false",
        "tcr=false",
        "memory_penalty=false",
        "cold_start=false",
        "keep=2",
        "mean_centred+linear+no_shape",
        "answer_target=continuation",
        "answer_target=continuation+psp=false",
        "epochs=2",
        "kl_coef=0 (method.md: no reference model)",
        "kl_on_updated_samples",
    ],
)
def test_switch_trains_one_step(compose_cfg, shards, sft_ckpt, switch: list[str], monkeypatch) -> None:
    import videomem.rl.rollout as rollout

    real = rollout.compute_rewards

    def spread(completions, answers, **kw):
        # a random tiny policy earns equal rewards everywhere (zero advantages, nothing to learn);
        # the reward terms have their own tests, here siblings just need to differ
        totals, terms = real(completions, answers, **kw)
        return [r + 0.1 * (i % 3) for i, r in enumerate(totals)], terms

    monkeypatch.setattr(rollout, "compute_rewards", spread)
    cfg = compose_cfg("prpo", _overrides(shards, sft_ckpt, switch))
    datamodule, module, trainer = build(cfg)
    module.configure_model()
    assert (module.ref_policy is None) == (cfg.module.kl_coef == 0)  # a reference only for a KL term
    before = {n: p.detach().clone() for n, p in module.policy.named_parameters()}
    trainer.fit(module, datamodule=datamodule)
    changed = [n for n, p in module.policy.named_parameters() if not torch.equal(before[n], p.detach())]
    assert changed, "no parameter changed after a PRPO step"
    assert (Path(cfg.paths.output_dir) / "policy" / "config.json").is_file()


def test_prpo_false_trains_nothing_and_saves_the_sft_policy(compose_cfg, shards, sft_ckpt) -> None:
    from videomem.run_prpo import main

    cfg = compose_cfg("prpo", _overrides(shards, sft_ckpt, ["prpo=false"]))
    main.__wrapped__(cfg)
    saved = Policy.from_pretrained(Path(cfg.paths.output_dir) / "policy")
    sft = Policy.from_pretrained(sft_ckpt)
    for (n, a), (_, b) in zip(saved.named_parameters(), sft.named_parameters()):
        assert torch.equal(a, b), n
