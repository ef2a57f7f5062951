"""A checkpoint's weights read a shard at a time: how each FSDP rank loads only what it holds.

``transformers``' ``from_pretrained`` reads every tensor in full, so under FSDP each rank would hold the
whole model in host memory before sharding (35 GB per rank for an 8B model in fp32, 280 GB on an 8-GPU
node). Instead:

1. ``parameters_on_meta()``: the model is built with its parameters on the meta device (no memory) and
   its buffers real (rotary tables are computed at construction and are in no checkpoint);
2. the caller shards it (FSDP2 ``fully_shard``) and allocates each rank's shards (``to_empty``);
3. ``load_weights(model, path)`` fills every parameter from the checkpoint's safetensors files, reading
   from disk only the rows of each tensor this rank holds (a ``DTensor`` sharded on dim 0 over a 1-D
   mesh, FSDP2's layout; a plain tensor is read whole). Peak host memory per rank: its shards plus
   one tensor's slice.

The safetensors format is read directly (an 8-byte header length, a JSON header of names, dtypes,
shapes and byte offsets, then the raw data), with ``seek`` and ``readinto``: no memory map, so pages
of tensors this rank does not hold are never touched. Names: this transformers version's (``model.
language_model.*``, ``model.visual.*``, ``lm_head.*``), or the older Qwen2.5-VL layout (``model.*``,
``visual.*``) that the released Qwen2.5-VL checkpoints use.

Deliberately not here: building the policy (``model/checkpoint.py``), sharding it (``train/parallel.py``).
"""

from __future__ import annotations

import contextlib
import json
import math
import struct
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Every ``nn.Parameter`` registered inside lives on the meta device; buffers stay where they are made.

    Layers allocate their weights with ``torch.empty`` (untouched pages: no resident memory) and then
    register them, which moves them to meta; their random init then runs on meta, for nothing.
    """
    register = nn.Module.register_parameter

    def on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        register(module, name, param)
        if param is not None and not param.is_meta:
            module._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


class SafetensorsFile:
    """One ``.safetensors`` file: its header, and rows of a tensor read from disk on demand."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
        header.pop("__metadata__", None)
        self.tensors: dict[str, dict] = header
        self.data_start = 8 + size

    def read_rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` of tensor ``name`` (dim 0), read with one seek: ``[stop - start, ...]``."""
        info = self.tensors[name]
        dtype, shape = DTYPES[info["dtype"]], list(info["shape"])
        begin, _ = info["data_offsets"]
        if not shape:  # a scalar: the whole (one-element) tensor
            shape, start, stop = [1], 0, 1
        row = math.prod(shape[1:]) * torch.empty((), dtype=dtype).element_size()
        out = torch.empty((stop - start) * row, dtype=torch.uint8)
        with open(self.path, "rb") as f:
            f.seek(self.data_start + begin + start * row)
            if f.readinto(memoryview(out.numpy())) != out.numel():
                raise ValueError(f"{self.path}: {name} is truncated")
        return out.view(dtype).reshape([stop - start, *shape[1:]])


def checkpoint_files(path: str | Path) -> dict[str, SafetensorsFile]:
    """Stored tensor name -> the file holding it, for a checkpoint dir (one file, or an index of shards)."""
    path = Path(path)
    index = path / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = [p.name for p in sorted(path.glob("*.safetensors"))]
    if not files:
        raise FileNotFoundError(f"{path}: no *.safetensors weights")
    out: dict[str, SafetensorsFile] = {}
    for name in files:
        f = SafetensorsFile(path / name)
        out.update(dict.fromkeys(f.tensors, f))
    return out


def stored_name(name: str, stored: dict) -> str | None:
    """The checkpoint's name for model parameter ``name``: the same, or its older Qwen2.5-VL spelling."""
    candidates = [name]
    if name.startswith("model.language_model."):
        candidates.append("model." + name.removeprefix("model.language_model."))
    if name.startswith("model.visual."):
        candidates.append(name.removeprefix("model."))
    return next((c for c in candidates if c in stored), None)


def _local_rows(param: torch.Tensor, rows: int) -> tuple[torch.Tensor, int]:
    """(this rank's tensor to fill, index of its first row in the full tensor)."""
    from torch.distributed.tensor import DTensor, Shard

    if not isinstance(param, DTensor):
        return param, 0
    if param.device_mesh.ndim != 1 or tuple(param.placements) != (Shard(0),):
        raise ValueError(f"cannot load placements {param.placements} (FSDP2 shards dim 0 of a 1-D mesh)")
    local = param.to_local()
    # FSDP2 cuts dim 0 as torch.chunk does: ceil(rows / world) each, the last ranks shorter or empty
    chunk = math.ceil(rows / param.device_mesh.size())
    start = min(param.device_mesh.get_local_rank() * chunk, rows)
    if local.shape[0] != min(chunk, rows - start):
        raise ValueError(f"unexpected local shard of {local.shape[0]} rows out of {rows}")
    return local, start


@torch.no_grad()
def load_weights(model: nn.Module, path: str | Path) -> None:
    """Fill every parameter of ``model`` (allocated, possibly FSDP2-sharded) from the checkpoint at ``path``.

    Each parameter gets only the rows it holds, converted to its dtype; the checkpoint may store
    another dtype (bf16 on disk, fp32 master weights in memory).

    Raises:
        KeyError: A parameter has no tensor in the checkpoint (all missing ones named, up to 5).
        ValueError: A stored tensor's shape differs from the parameter's.
    """
    files = checkpoint_files(path)
    params = dict(model.named_parameters())
    names = {n: stored_name(n, files) for n in params}
    missing = [n for n, s in names.items() if s is None]
    if missing:
        raise KeyError(f"{path}: no weights for {len(missing)} parameters, e.g. {missing[:5]}")
    for name, param in params.items():
        source = files[names[name]]
        shape = list(source.tensors[names[name]]["shape"])
        if shape != list(param.shape):
            raise ValueError(
                f"{path}: {names[name]} has shape {shape}, the model's {name} {list(param.shape)}"
            )
        local, start = _local_rows(param, shape[0] if shape else 1)
        if local.numel():
            local.copy_(source.read_rows(names[name], start, start + local.shape[0]).reshape(local.shape))
