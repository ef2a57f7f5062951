"""``videomem export``: every checkpoint kind becomes a transformers dir with the same weights and logits.

Kinds: the single-file Lightning ``.ckpt`` of a real 1-step tiny SFT run (its policy rebuilt from the
run's ``.hydra/config.yaml``), a sharded ``torch.distributed.checkpoint`` directory (written here in
one process, laid out as Lightning's FSDPStrategy does), and a saved policy dir. The 2-process FSDP2
checkpoint is exported in tests/test_scale_fsdp2.py (slow).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from omegaconf import OmegaConf
from transformers import Qwen3VLForConditionalGeneration

from videomem.cli import main as cli_main
from videomem.export import export
from videomem.memory.loop import step_messages
from videomem.model.checkpoint import FrameGeometry, saved_geometry
from videomem.model.policy import Policy, build_policy
from videomem.train.runner import train


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    from videomem.data.synthetic import generate_dataset

    out = tmp_path_factory.mktemp("shards")
    generate_dataset(out, splits={"train": 2, "val": 1}, workers=1)
    return out


def same_logits(a: Policy, b: Policy, qa) -> bool:
    inputs = a.build_inputs([step_messages(qa, 0, "")], [qa.clips[0]], completions=["<memory>x</memory>"])
    with torch.no_grad():
        return torch.equal(a(inputs).logits, b(inputs).logits)


def some_question(shards: Path):
    from videomem.data.datamodule import VideoQADataModule

    dm = VideoQADataModule(
        val_shards=str(shards / "val"), frame_size=(64, 64), frames_per_clip=4, batch_size=1
    )
    return next(iter(dm.val_dataloader()))[0]


def test_lightning_ckpt_of_a_tiny_sft_run(compose_cfg, shards, tmp_path) -> None:
    cfg = compose_cfg(
        "sft",
        [
            "experiment=paper_sft_tiny",
            f"data.train_shards={shards}/train",
            f"data.val_shards={shards}/val",
            "data.batch_size=1",
            "trainer.max_steps=1",
            "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false",
            "~logger",
            "callbacks.lr_monitor=null",
        ],
    )
    run = Path(cfg.paths.output_dir)
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")  # as Hydra writes it next to the run
    train(cfg)
    out = export(run / "checkpoints" / "last.ckpt", tmp_path / "export")
    exported, saved = Policy.from_pretrained(out), Policy.from_pretrained(run / "policy")
    assert exported.arch == "qwen3_vl" and exported.tokenizer.chat_template == saved.tokenizer.chat_template
    assert same_logits(exported, saved, some_question(shards))
    assert isinstance(Qwen3VLForConditionalGeneration.from_pretrained(out), Qwen3VLForConditionalGeneration)
    # the run's data config is the geometry the policy was trained with; the processor files go along
    expected = FrameGeometry(*cfg.data.frame_size, cfg.data.frames_per_clip, precision=cfg.trainer.precision)
    assert saved_geometry(out) == expected  # and the precision it trained in: what evaluation runs it in
    assert saved_geometry(run / "policy") == expected  # as the training run saved it (SavePolicy)
    assert (out / "preprocessor_config.json").is_file() and (out / "video_preprocessor_config.json").is_file()


def test_sharded_dir_with_fsdp1_layout(compose_cfg, shards, tmp_path) -> None:
    cfg = compose_cfg("sft", ["model=tiny_qwen3_vl"])
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    trained = build_policy(
        "qwen3_vl", tiny=OmegaConf.to_container(cfg.model.tiny), seed=cfg.seed, liger_kernels=False
    )
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.01 * torch.randn_like(p))  # differs from the config's fresh build
    # FSDPStrategy(state_dict_type="sharded") stores {"model": ..., "optimizer_0": ...}; a wrapper
    # name left in a key is stripped on export
    model = {
        f"policy.{k}".replace("visual.", "visual._fsdp_wrapped_module."): v
        for k, v in trained.state_dict().items()
    }
    optimizer = {"state": {"0": {"exp_avg": torch.ones(3)}}}
    dcp.save(
        {"model": model, "optimizer_0": optimizer},
        checkpoint_id=str(run / "checkpoints" / "last.ckpt"),
        no_dist=True,
    )
    assert (
        cli_main(
            ["export", str(run / "checkpoints" / "last.ckpt"), str(tmp_path / "export"), "--dtype", "float32"]
        )
        == 0
    )
    assert same_logits(Policy.from_pretrained(tmp_path / "export"), trained, some_question(shards))


def test_policy_dir_and_dtype(tmp_path) -> None:
    policy = build_policy("qwen2_5_vl", liger_kernels=False)
    policy.save_pretrained(tmp_path / "src", geometry=FrameGeometry(56, 56, 8, clips=4))
    out = export(tmp_path / "src", tmp_path / "out", dtype="bfloat16")
    loaded = Policy.from_pretrained(out)
    assert loaded.geometry == FrameGeometry(56, 56, 8, clips=4)  # a saved dir's geometry is kept
    assert next(loaded.parameters()).dtype == torch.bfloat16
    a, b = loaded.state_dict(), policy.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k].bfloat16()) for k in a)


def test_ckpt_without_run_config_fails_clearly(tmp_path) -> None:
    torch.save({"state_dict": {}}, tmp_path / "last.ckpt")
    with pytest.raises(FileNotFoundError, match=r"\.hydra"):
        export(tmp_path / "last.ckpt", tmp_path / "out")
