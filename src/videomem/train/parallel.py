"""Sharded training: what FSDP wraps, FSDP2 for ModelParallelStrategy, rollouts with a sharded policy.

- ``wrap_classes()``: the decoder-layer and vision-block classes of Qwen2.5-VL and Qwen3-VL (each
  model's ``_no_split_modules``): the auto-wrap and activation-checkpointing policy of Lightning's
  ``FSDPStrategy`` in ``configs/trainer/gpu_fsdp.yaml``.
- ``shard_policy(policy, mesh)``: FSDP2 ``fully_shard`` on every such block, then on the ``Policy`` as
  root, with transformers' activation checkpointing on the same blocks. The training modules call it
  from ``configure_model`` when Lightning's ``ModelParallelStrategy`` gives them a device mesh
  (``configs/trainer/fsdp2.yaml``); parameters become ``DTensor`` shards over the mesh.
- ``gathered_for_generation(policy)``: rollouts and validation decode a different number of tokens on
  every rank; with sharded weights each decoding forward would all-gather and the ranks would
  deadlock. Inside the context every FSDP2 group is gathered once and kept gathered (no collective
  while decoding); on exit everything is resharded. A no-op for an unsharded policy.
- ``full_state_dict(module)``: the full state dict on rank 0 (collective on every rank), for saving.

The lm_head and the fused losses: Liger's losses take the ``[V, H]`` weight as a tensor, outside any
module call, so it cannot be sharded inside them. The lm_head stays in the ROOT group, ``hidden_states``
is registered as an FSDP forward method, and the root is not resharded after forward (FSDP2's default
for the root): after ``policy.hidden_states(...)`` the attribute ``policy.lm_head_weight`` IS the full
gathered weight, and its gradient is reduce-scattered with the root group after backward. Cost: the
root group (token embeddings, lm_head, final norm, vision patch embedding and merger) stays gathered
from forward to the end of backward: about 2.5 GB in bf16 for Qwen3-VL-8B (2 x 151,936 x 4,096 x 2 B).
Read ``lm_head_weight`` only after a forward of the same step.

Not here: tensor parallelism (the mesh's ``tensor_parallel`` dimension must be 1), generation with
FSDP1 (``FSDPStrategy`` runs the step inside the root FSDP forward, where FSDP1 refuses to gather:
``gathered_for_generation`` raises; use ``trainer=fsdp2`` for PRPO and for validation).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

import torch
from torch import nn
from transformers import Qwen2_5_VLForConditionalGeneration, Qwen3VLForConditionalGeneration

from videomem.model.policy import Policy
from videomem.model.weights import load_weights


def wrap_classes() -> set[type[nn.Module]]:
    """Decoder layers and vision blocks of both archs: the units FSDP shards and checkpoints."""
    classes = set()
    for cls in (Qwen2_5_VLForConditionalGeneration, Qwen3VLForConditionalGeneration):
        modeling = sys.modules[cls.__module__]  # transformers names them in _no_split_modules
        classes |= {getattr(modeling, name) for name in cls._no_split_modules}
    return classes


def _shard_mesh(device_mesh):
    """The 1-D data-parallel mesh of Lightning's (data_parallel, tensor_parallel) mesh."""
    if device_mesh.ndim == 1:
        return device_mesh
    names = device_mesh.mesh_dim_names or ()
    if "tensor_parallel" in names and device_mesh["tensor_parallel"].size() != 1:
        raise ValueError(
            "this project shards with FSDP only: set trainer.strategy.tensor_parallel_size=1 and "
            "data_parallel_size=<devices x nodes> (configs/trainer/fsdp2.yaml)"
        )
    return device_mesh["data_parallel"]


def shard_policy(policy: Policy, device_mesh, *, param_dtype: torch.dtype | None = None) -> Policy:
    """Apply FSDP2 to ``policy`` in place: blocks first, then the root; checkpoint the blocks.

    Args:
        policy: A built (unsharded) policy.
        device_mesh: Lightning's device mesh (``LightningModule.device_mesh``).
        param_dtype: Compute dtype of the gathered weights (bf16 under ``bf16-mixed``); gradients are
            reduced in fp32 and the sharded master weights keep their own dtype. None: no casting.

    Returns:
        The same policy, its parameters now ``DTensor`` shards.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

    mesh = _shard_mesh(device_mesh)
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32 if param_dtype else None)
    # transformers' own checkpointing of its GradientCheckpointingLayer blocks (= wrap_classes): module
    # names stay unchanged, so checkpoints and exports keep the plain transformers keys.
    policy.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    units = tuple(wrap_classes())
    for module in policy.model.modules():
        if isinstance(module, units):
            fully_shard(module, mesh=mesh, mp_policy=mp)
    fully_shard(policy, mesh=mesh, mp_policy=mp)  # root: embeddings, lm_head, norms, vision merger
    # every way into the model must pass the root's hooks first (FSDP2's root is the first module run)
    register_fsdp_forward_method(policy, "hidden_states")  # the fused losses' forward
    register_fsdp_forward_method(policy, "group_hidden_states")  # the shared-prefix PRPO update
    register_fsdp_forward_method(policy, "generate")
    return policy


def _fsdp2_modules(module: nn.Module) -> list[nn.Module]:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in module.modules() if isinstance(m, FSDPModule)]


def is_sharded(module: nn.Module) -> bool:
    """True if any part of ``module`` is managed by FSDP2 or FSDP1."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    return bool(_fsdp2_modules(module)) or any(
        isinstance(m, FullyShardedDataParallel) for m in module.modules()
    )


@contextlib.contextmanager
def gathered_for_generation(policy: nn.Module) -> Iterator[nn.Module]:
    """Keep every FSDP2 group of ``policy`` gathered for the duration, then reshard.

    Every rank must enter it the same number of times (one all-gather per group on entry); inside,
    ranks may run any number of forwards (decoding steps, prompts) without collectives. Memory: the
    full weights in the compute dtype on every rank (17.5 GB for Qwen3-VL-8B in bf16) for the duration.

    Raises:
        RuntimeError: For an FSDP1-wrapped policy (see the module docstring).
    """
    from torch.distributed.fsdp import FullyShardedDataParallel

    if any(isinstance(m, FullyShardedDataParallel) for m in policy.modules()):
        raise RuntimeError(
            "generation with an FSDP1 (FSDPStrategy) policy would all-gather every layer at every decoding "
            "step and deadlock when ranks decode different lengths; use trainer=fsdp2 (FSDP2) for PRPO and "
            "validation, or trainer.limit_val_batches=0 with gpu_fsdp"
        )
    modules = _fsdp2_modules(policy)
    if not modules:
        yield policy
        return
    if modules[0] is policy:
        # FSDP2 picks as root the first module whose forward runs; make it `policy` before unsharding
        # (private API of torch 2.x FSDP2; a no-op once a forward ran).
        policy._get_fsdp_state()._lazy_init()
    # Gather outside inference mode: FSDP2 reuses the gathered buffers later in training, and inference
    # tensors (Lightning validates under torch.inference_mode) cannot be saved for backward.
    with torch.inference_mode(False):
        for m in modules:
            m.set_reshard_after_forward(False, recurse=False)
            m.unshard()
    try:
        yield policy
    finally:
        with torch.inference_mode(False):
            for m in modules:
                # back to FSDP2's defaults as shard_policy set them: blocks reshard after forward, the
                # root does not (so lm_head_weight stays gathered between forward and fused loss)
                m.set_reshard_after_forward(m is not policy, recurse=False)
                m.reshard()


@contextlib.contextmanager
def backward_sync(module, enabled: bool) -> Iterator[None]:
    """Reduce gradients over ranks in the backward passes inside (``enabled``), or only accumulate them.

    Under DDP the micro-batches of one optimizer step reduce once, in the last backward (the others run
    in ``no_sync``): DDP holds whole gradients on every rank anyway, so skipping a reduction costs
    nothing. Under FSDP2 every backward reduce-scatters: skipping it would accumulate *unsharded* fp32
    gradients on every rank until the step's last backward, the size of the fp32 weights (35 GB for the
    8B, 8 or 16 GPUs alike), which takes the PRPO update from ~31 to ~66 GB per 80 GB GPU; one
    reduce-scatter per micro-batch costs communication instead, overlapped with the backward
    (docs/performance.md, "Gradient accumulation"). A no-op for a single process.

    Args:
        module: The LightningModule (its strategy's DDP wrapper, or its FSDP2-sharded ``policy``).
        enabled: True for the step's last backward.
    """
    from torch.nn.parallel import DistributedDataParallel

    wrapped = module.trainer.strategy.model if module._trainer is not None else None
    if not enabled and isinstance(wrapped, DistributedDataParallel):
        with wrapped.no_sync():
            yield
    else:
        yield


def reshard(policy: nn.Module) -> None:
    """Free the gathered weights of an FSDP2 policy that ran a forward without a backward (the frozen
    reference policy: FSDP2 keeps its root group gathered after forward, for a backward that never
    comes). A no-op for an unsharded policy."""
    for m in _fsdp2_modules(policy):
        m.reshard()


def full_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """Full (unsharded) state dict on CPU: collective on every rank for a sharded module.

    Returns:
        The state dict on rank 0 (and for an unsharded module everywhere); empty on other ranks.
    """
    if not is_sharded(module):
        return module.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def sharded_policy(
    policy: Policy, device_mesh, device: torch.device | str, *, param_dtype: torch.dtype | None = None
) -> Policy:
    """``shard_policy``; a policy built with its weights unread (``weights_dir``, parameters on the meta
    device) then gets this rank's shards allocated on ``device`` and read from its checkpoint, and no
    rank ever holds the whole model (``model/weights.py``)."""
    buffers = {name: b.detach().clone() for name, b in policy.named_buffers()}  # real: rotary tables
    shard_policy(policy, device_mesh, param_dtype=param_dtype)
    if getattr(policy, "weights_dir", None) is not None:
        policy.to_empty(device=device)  # each rank's shards only; FSDP2 keeps its sharded views
        with torch.no_grad():
            for name, b in policy.named_buffers():
                b.copy_(buffers[name])  # to_empty left them uninitialised
        load_weights(policy.model, policy.weights_dir)
        policy.weights_dir = None
    return policy


def configure_policy(module, factory: Callable[..., Policy], **kwargs) -> Policy:
    """The policy of a training module's ``configure_model``: ``factory(**kwargs)`` as is on one process
    or under DDP; under ModelParallelStrategy (Lightning gave ``module`` a device mesh) sharded with
    FSDP2, each rank reading only its shards of the checkpoint (``sharded_policy``).

    The gathered weights are bf16 under ``precision: bf16-mixed``; the shards keep the policy's dtype.
    """
    mesh = module.device_mesh
    if mesh is None:
        return factory(**kwargs)
    param_dtype = torch.bfloat16 if str(module.trainer.precision) == "bf16-mixed" else None
    device = module.trainer.strategy.root_device
    return sharded_policy(factory(**kwargs, weights=False), mesh, device, param_dtype=param_dtype)
