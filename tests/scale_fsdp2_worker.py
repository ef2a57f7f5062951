"""One rank of the 2-process FSDP2 check, launched by tests/test_scale_fsdp2.py with
``torchrun --nproc-per-node 2 tests/scale_fsdp2_worker.py ROOT`` (CPU, gloo).

Runs through Lightning's ModelParallelStrategy (configs/trainer/fsdp2.yaml) with the tiny Qwen2.5-VL:
  1. SFT, 2 steps, with a validation epoch in between (weights gathered for the memory loop);
  2. on the sharded SFT policy: greedy generation inside ``gathered_for_generation`` with a different
     number of decoding steps per rank (would deadlock if any decoding forward all-gathered), compared
     with the same weights unsharded;
  3. PRPO with a KL term, 1 step (rollout with gathered weights, Liger fused GRPO loss on the root-held
     lm_head, the reference policy's log-probs; the samples get advantages of +-1 so the update is
     never empty);
  4. ``run_prpo prpo=false`` on the SFT policy: validated, gathered and saved by rank 0.
The SFT run leaves ROOT/run/checkpoints/last.ckpt (sharded) and ROOT/run/policy (SavePolicy) for the
export test.
Writes ``ROOT/result_rank{r}.json``; the test asserts on it. Not a test module itself (no ``test_``).
"""

from __future__ import annotations

import faulthandler
import json
import os
import sys
from pathlib import Path

import hydra
import torch
import torch.distributed as dist
from omegaconf import OmegaConf
from safetensors.torch import load_file
from torch.distributed.tensor import DTensor

import videomem.train.prpo as prpo_module
from conftest import compose_config
from videomem.memory.loop import step_messages
from videomem.train.parallel import full_state_dict, gathered_for_generation
from videomem.train.runner import instantiate_list

COMMON = [
    "trainer=fsdp2",
    "trainer.accelerator=cpu",
    "trainer.devices=2",
    "trainer.precision=32-true",
    "trainer.enable_progress_bar=false",
    "data.batch_size=1",
    "data.num_workers=0",
    "data.epoch_length=2",  # one batch per rank per "epoch": validation after every step
    "data.val_limit=2",
    "data.frames_per_clip=4",
    "~logger",
    "callbacks.lr_monitor=null",
]


def fit(cfg):
    module = hydra.utils.instantiate(cfg.module)
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=instantiate_list(cfg.callbacks), logger=False)
    trainer.fit(module, datamodule=hydra.utils.instantiate(cfg.data))
    return module, trainer


def main(root: Path) -> None:
    data = root / "data" / "synthetic"
    shards = [f"data.train_shards={data}/train", f"data.val_shards={data}/val"]
    cfg = compose_config("sft", [*COMMON, *shards, "trainer.max_steps=2"], root)
    if int(os.environ["RANK"]) == 0:  # as Hydra would: `videomem export` finds the run's config there
        (root / "run" / ".hydra").mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, root / "run" / ".hydra" / "config.yaml")
    before = {k: v.clone() for k, v in hydra.utils.instantiate(cfg.module.policy)().state_dict().items()}
    sft, trainer = fit(cfg)
    rank = dist.get_rank()
    policy = sft.policy
    dtensors = [isinstance(p, DTensor) for p in policy.parameters()]
    full = full_state_dict(policy)  # collective
    result = {
        "rank": rank,
        "world": dist.get_world_size(),
        "global_step": trainer.global_step,
        "all_dtensor": all(dtensors),
        "num_params": len(dtensors),
        "val_accuracy_logged": "val/accuracy" in trainer.callback_metrics,
        "local_shard_numel": sum(p.to_local().numel() for p in policy.parameters()),
        "full_numel": sum(v.numel() for v in before.values()),
    }
    if rank == 0:
        result["changed"] = [k for k, v in full.items() if not torch.equal(v, before[k])]
        result["unchanged"] = [k for k, v in full.items() if torch.equal(v, before[k])]

    # 2. gathered generation, a different decode length on each rank, vs the same weights unsharded
    reference = hydra.utils.instantiate(cfg.module.policy)()
    dist.broadcast_object_list(obj := [full if rank == 0 else None], src=0)
    reference.load_state_dict(obj[0])
    qa = next(iter(sft.trainer.datamodule.train_dataloader()))[0]
    inputs = policy.build_inputs([step_messages(qa, 0, "")], [qa.clips[0]])
    steps = 3 + 5 * rank
    policy.eval()
    with gathered_for_generation(policy):
        sharded_ids = policy.generate(inputs, num_samples=2, max_new_tokens=steps)
        # more forwards, still no collective
        again = policy.generate(inputs, num_samples=1, max_new_tokens=steps + rank)
    result["generate_equal"] = sharded_ids == reference.generate(inputs, num_samples=2, max_new_tokens=steps)
    result["generate_again_len"] = len(again[0][0])
    result["decode_budget"] = steps
    result["all_dtensor_after_generate"] = all(isinstance(p, DTensor) for p in policy.parameters())
    dist.barrier()

    # 3. one PRPO step from scratch (cold_start=false), rollout gathered, update sharded
    cfg = compose_config(
        "prpo",
        [
            *COMMON,
            *shards,
            "trainer.max_steps=1",
            "cold_start=false",
            "module.kl_coef=0.15",  # a reference policy, read under FSDP2 (its lm_head after its forward)
            "module.rollout.group_size=2",
            "module.rollout.max_new_tokens=8",
            "module.overlong_filter=false",  # a random policy's samples are all cut at 8 tokens
            "module.val_generation.max_new_tokens=8",
            "module.micro_batch_size=4",
            f"callbacks.save_policy.dirpath={root}/prpo/policy",
            f"callbacks.checkpoint.dirpath={root}/prpo/checkpoints",
        ],
        root,
    )
    before = {k: v.clone() for k, v in hydra.utils.instantiate(cfg.module.policy)().state_dict().items()}
    # A random tiny policy rarely earns different rewards within a group (all advantages 0, nothing to
    # update): keep the real, gathered rollout but give its samples alternating advantages of +-1.
    real_rollout = prpo_module.prpo_rollout

    def rollout_with_signal(*args, **kwargs):
        out = real_rollout(*args, **kwargs)
        for i, sample in enumerate(out.samples):
            sample.advantage = 1.0 if i % 2 == 0 else -1.0
        return out

    prpo_module.prpo_rollout = rollout_with_signal
    prpo, trainer = fit(cfg)
    full = full_state_dict(prpo.policy)
    result["prpo_global_step"] = trainer.global_step
    result["prpo_all_dtensor"] = all(isinstance(p, DTensor) for p in prpo.policy.parameters())
    result["prpo_kl_logged"] = "train/kl" in trainer.callback_metrics
    result["ref_resharded"] = all(isinstance(p, DTensor) for p in prpo.ref_policy.parameters())
    if rank == 0:
        result["prpo_changed"] = sum(not torch.equal(v, before[k]) for k, v in full.items())

    # 4. prpo=false ("cold start only") under FSDP2: the initial policy validated, gathered and saved
    from videomem.run_prpo import main as run_prpo

    sft_policy = root / "run" / "policy"
    cfg = compose_config(
        "prpo",
        [
            *COMMON,
            *shards,
            "prpo=false",
            f"init_from={sft_policy}",
            "module.kl_coef=0",
            "module.val_generation.max_new_tokens=8",
            f"callbacks.save_policy.dirpath={root}/cold/policy",
            "callbacks.save_policy.latest=null",
        ],
        root,
    )
    run_prpo.__wrapped__(cfg)
    dist.barrier()
    if rank == 0:
        saved = load_file(root / "cold" / "policy" / "model.safetensors")
        initial = load_file(sft_policy / "model.safetensors")
        result["cold_start_saved_equal"] = saved.keys() == initial.keys() and all(
            torch.equal(saved[k], initial[k]) for k in saved
        )
    (root / f"result_rank{rank}.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    limit = int(sys.argv[2]) if len(sys.argv) > 2 else 240
    # a hang fails loudly: rank 0 dumps its stack first, so the test shows where it waited
    faulthandler.dump_traceback_later(limit - 10 * (1 - int(os.environ.get("LOCAL_RANK", 0))), exit=True)
    torch.set_num_threads(1)
    main(Path(sys.argv[1]))
