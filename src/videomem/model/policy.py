"""The policy: a real transformers Qwen2.5-VL / Qwen3-VL plus its tokenizer, as one nn.Module.

It runs the model with the 3-D multimodal rope actually in use (``rope_positions`` builds explicit
``position_ids`` from ``mm_token_type_ids``), gives logits, hidden states for fused losses, and the
shared-prefix hidden states of PRPO's update (``group_hidden_states``): each prompt runs once with its
G sampled completions packed behind it under a 4-D mask, instead of G prompt + completion rows.

Its other jobs live beside it, and its methods delegate there: batching chat + frames into
``PolicyInputs`` (``model/inputs.py``), shared-prefill sampling (``model/generation.py``, the O(T)
instead of O(T*G) prefill of docs/method.md section 3), and save / load / the ``build_policy`` factory
with the frame geometry saved beside the weights (``model/checkpoint.py``). ``PolicyInputs`` and
``build_policy`` are importable from here, as configs (``videomem.model.policy.build_policy``) and
callers always have.

It deliberately knows nothing of rewards, losses, optimisers or the memory prompt.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2_5_VLForConditionalGeneration,
    Qwen3VLForConditionalGeneration,
)

from videomem.model import attention, generation
from videomem.model import inputs as _inputs
from videomem.model.features import video_encoder_outputs
from videomem.model.inputs import DEFAULT_FPS, VIDEO_PAD, VISION_END, VISION_START, PolicyInputs
from videomem.model.packed import PackedLayout
from videomem.model.tiny import EOS, PAD
from videomem.model.vision import NORM

if TYPE_CHECKING:
    from videomem.model.checkpoint import FrameGeometry

__all__ = [
    "DEFAULT_FPS",
    "MODEL_CLASSES",
    "POLICY_FILE",
    "VIDEO_PAD",
    "VISION_END",
    "VISION_START",
    "Policy",
    "PolicyInputs",
]

MODEL_CLASSES = {
    "qwen2_5_vl": Qwen2_5_VLForConditionalGeneration,
    "qwen3_vl": Qwen3VLForConditionalGeneration,
}
POLICY_FILE = "videomem_policy.json"


class Policy(nn.Module):
    """A Qwen-VL model with its tokenizer: batching, forward, shared-prefill generation, save/load.

    Attributes:
        model: ``Qwen2_5_VLForConditionalGeneration`` or ``Qwen3VLForConditionalGeneration``.
        tokenizer: Its tokenizer (left padding).
        arch: ``"qwen2_5_vl"`` or ``"qwen3_vl"``.
        patch_multiple: ``patch_size * merge_size``: frame H and W must be multiples of it.
        liger_kernels: Liger's kernels are on (set by ``build_policy``): SFT then uses Liger's fused
            linear cross-entropy on ``hidden_states`` (``videomem.model.liger``).
        geometry: The ``FrameGeometry`` it was trained with (saved and loaded with it; None: unknown).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerFast,
        arch: str,
        *,
        image_mean: tuple[float, ...] | list[float] | None = None,
        image_std: tuple[float, ...] | list[float] | None = None,
    ) -> None:
        super().__init__()
        if arch not in MODEL_CLASSES:
            raise ValueError(f"unknown arch {arch!r}; expected one of {list(MODEL_CLASSES)}")
        self.model, self.tokenizer, self.arch = model, tokenizer, arch
        attention.install(model)  # the engine's layouts reach the text attention (model/attention.py)
        self.liger_kernels = False
        # decode steps through torch.compile with a static store (model/generation.py; for CUDA)
        self.compile_decode = False
        self.decode_stats = generation.DecodeStats()  # the engine's running counts
        self.vision_cache: dict | None = None  # clip features kept inside features.shared_vision
        # frame geometry it was trained with (model/checkpoint.py; None: unknown)
        self.geometry: FrameGeometry | None = None
        # instruction this policy was trained with (None: the memory loop's default; "": none)
        self.system_prompt: str | None = None
        self.tokenizer.padding_side = "left"
        vision = model.config.vision_config
        self.patch_size, self.temporal_patch_size = vision.patch_size, vision.temporal_patch_size
        self.merge_size = vision.spatial_merge_size
        self.patch_multiple = self.patch_size * self.merge_size
        self.image_mean = tuple(image_mean or NORM[arch][0])
        self.image_std = tuple(image_std or NORM[arch][1])
        self.video_token_id = model.config.video_token_id
        self.image_token_id = model.config.image_token_id
        self.im_end_id = tokenizer.convert_tokens_to_ids(EOS)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.im_end_id
        stops = {self.im_end_id, tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(PAD)}
        gen_eos = model.generation_config.eos_token_id
        stops |= set(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        self.stop_ids = sorted(s for s in stops if s is not None and s != tokenizer.unk_token_id)
        # Vision placeholders are never generated: a sampled <|video_pad|> in a completion would be
        # read as a video token by the update's forward (and by the next clip's prompt).
        placeholders = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
        self.suppress_ids = sorted(
            {i for k in placeholders if (i := getattr(model.config, k, None)) is not None}
        )

    # ----------------------------------------------------------------- inputs
    def build_inputs(
        self,
        messages: list[list[dict]],
        videos: list[Tensor],
        completions: list[str | list[int]] | None = None,
        *,
        video_fps: float | list[float] | None = None,
    ) -> PolicyInputs:
        """Render, tokenise and left-pad a batch of chat prompts, one video each.

        Args:
            messages: Per row, chat messages whose user content holds exactly one ``{"type": "video"}``.
            videos: Per row, ``[F, H, W, 3]`` uint8 frames (H, W multiples of ``patch_multiple``).
            completions: Optional per-row completion (text, or token ids as sampled) appended after the
                generation prompt and closed with ``<|im_end|>``; labels are set on exactly those tokens.
            video_fps: Frames per second of the given frames (one value or one per row); sets the
                temporal rope spacing (Qwen2.5-VL) and frame timestamps (Qwen3-VL). Default 2.0.

        Returns:
            The batch; ``labels`` is None unless ``completions`` is given (``model/inputs.py``).
        """
        return _inputs.build_inputs(self, messages, videos, completions, video_fps=video_fps)

    def _video_placeholder(self, grid: Tensor, num_frames: int, fps: float) -> str:
        return _inputs.video_placeholder(self, grid, num_frames, fps)

    def _encode(self, text: str) -> list[int]:
        return _inputs.encode(self, text)

    def _completion_ids(self, completion: str | list[int]) -> list[int]:
        return _inputs.completion_ids(self, completion)

    def _hf_kwargs(self, inputs: PolicyInputs) -> dict:
        kwargs = inputs.model_kwargs()
        if self.arch != "qwen2_5_vl":
            kwargs.pop("second_per_grid_ts")  # Qwen3-VL timestamps live in the text instead
        return kwargs

    def rope_positions(self, inputs: PolicyInputs) -> tuple[Tensor, Tensor]:
        """3-D (t, h, w) rope positions of the batch and each row's delta to 1-D positions.

        Returns:
            ``position_ids`` ``[3, B, L]`` (0 on padding) and ``rope_deltas`` ``[B, 1]`` = max position + 1
            minus the number of real tokens: the first generated token sits at ``n_real + delta``.
        """
        return self.model.model.get_rope_index(
            inputs.input_ids,
            mm_token_type_ids=inputs.mm_token_type_ids,
            video_grid_thw=inputs.video_grid_thw,
            second_per_grid_ts=inputs.second_per_grid_ts,
            attention_mask=inputs.attention_mask,
        )

    # ---------------------------------------------------------------- forward
    def forward(self, inputs: PolicyInputs):
        """Full forward; ``logits`` ``[B, L, V]`` and ``loss`` (mean over label tokens) if labels are set."""
        positions, _ = self.rope_positions(inputs)
        return self.model(
            **self._hf_kwargs(inputs), position_ids=positions, labels=inputs.labels, use_cache=False
        )

    def hidden_states(self, inputs: PolicyInputs) -> Tensor:
        """Final normed hidden states ``[B, L, H]`` (``lm_head`` of them gives the logits), for fused losses."""
        positions, _ = self.rope_positions(inputs)
        out = self.model.model(**self._hf_kwargs(inputs), position_ids=positions, use_cache=False)
        return out.last_hidden_state

    def group_hidden_states(
        self,
        messages: list[list[dict]],
        videos: list[Tensor],
        completions: list[list[str | list[int]]],
        *,
        video_fps: float | list[float] | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Hidden states of G completions per prompt, the prompt (and its video) run ONCE per row.

        Row b packs ``[prompt_b, c_b1, ..., c_bG]`` into one sequence; completion g attends to the
        prompt's real tokens and its own earlier tokens only (``model/packed.py``: segment by segment,
        no ``[W, W]`` mask), and its rope positions continue from the prompt as if it stood alone. So
        every completion token gets the hidden state of ``hidden_states(build_inputs(prompt,
        completion))`` (to float rounding) while the vision tower and the prompt's layers run once per
        row instead of once per completion (PRPO's update over a PSP group); rows showing the same clip
        object share one vision encode (``model/features.py``).

        Args:
            messages, videos, video_fps: One prompt per row, as in ``build_inputs``.
            completions: Per row, its completions (text or token ids); each is closed with ``<|im_end|>``.

        Returns:
            ``hidden`` ``[N, C, H]``, ``targets`` ``[N, C]`` and ``mask`` ``[N, C]`` (1 on real tokens) for
            the N completions in row order: ``hidden[n, j]`` predicts ``targets[n, j]``, the j-th token of
            completion n (the first one from the prompt's last position). C is the longest completion.
        """
        if len(completions) != len(messages):
            raise ValueError("completions must hold one list per prompt row")
        base = self.build_inputs(messages, videos, video_fps=video_fps)
        positions, _ = self.rope_positions(base)  # [3, B, Lp], left padded
        rows, prompt_len = base.input_ids.shape
        start = positions.amax(dim=(0, 2)) + 1  # [B] rope position of each row's first new token
        ids = [[self._completion_ids(c) for c in cs] for cs in completions]
        width = prompt_len + max(sum(len(c) for c in cs) for cs in ids)
        input_ids = torch.full((rows, width), self.pad_id, dtype=torch.long)  # [B, W]
        input_ids[:, :prompt_len] = base.input_ids
        pos = torch.zeros(3, rows, width, dtype=positions.dtype)  # [3, B, W]
        pos[:, :, :prompt_len] = positions
        segments: list[list[tuple[int, int]]] = []  # per row: (start, length) of each completion
        src, tgt = [], []  # per completion: positions whose hidden predicts its tokens, and the tokens
        for b, cs in enumerate(ids):
            at, segments_b = prompt_len, []
            for c in cs:
                n = len(c)
                input_ids[b, at : at + n] = torch.tensor(c)
                pos[:, b, at : at + n] = start[b] + torch.arange(n)
                segments_b.append((at, n))
                src.append([prompt_len - 1] + list(range(at, at + n - 1)))
                tgt.append(c)
                at += n
            segments.append(segments_b)
        layout = PackedLayout(
            prompt_starts=(prompt_len - base.attention_mask.sum(-1)).tolist(),
            prompt_end=prompt_len,
            completions=segments,
        )
        mm_types = torch.zeros_like(input_ids)
        mm_types[:, :prompt_len] = base.mm_token_type_ids
        packed = PolicyInputs(
            input_ids=input_ids,
            attention_mask=layout.placeholder_mask(rows, width),  # the layout masks: nothing [W, W]
            mm_token_type_ids=mm_types,
            pixel_values_videos=base.pixel_values_videos,
            video_grid_thw=base.video_grid_thw,
            second_per_grid_ts=base.second_per_grid_ts,
            sources=base.sources,
        ).to(self.model.device)
        attention.install(self.model)  # a no-op unless set_attn_implementation replaced it since
        kwargs = self._hf_kwargs(packed)
        kwargs.pop("pixel_values_videos")  # encoded below, each distinct clip once
        out = self.model.model(
            **kwargs,
            mm_encoder_outputs=video_encoder_outputs(self, packed),
            position_ids=pos.to(self.model.device),
            use_cache=False,
            packed_layout=layout,
        )
        hidden = out.last_hidden_state  # [B, W, H]
        longest = max(len(t) for t in tgt)
        row = torch.tensor([b for b, cs in enumerate(ids) for _ in cs])  # [N]
        index = torch.zeros(len(tgt), longest, dtype=torch.long)  # [N, C]
        targets = torch.full((len(tgt), longest), self.pad_id, dtype=torch.long)  # [N, C]
        tmask = torch.zeros(len(tgt), longest)  # [N, C]
        for n, (s, t) in enumerate(zip(src, tgt)):
            index[n, : len(s)], targets[n, : len(t)], tmask[n, : len(t)] = (
                torch.tensor(s),
                torch.tensor(t),
                1.0,
            )
        device = hidden.device
        return hidden[row.to(device)[:, None], index.to(device)], targets.to(device), tmask.to(device)

    @property
    def lm_head_weight(self) -> Tensor:
        """``[V, H]`` output projection."""
        return self.model.get_output_embeddings().weight

    # -------------------------------------------------------------- generate
    def generate(
        self,
        inputs: PolicyInputs,
        *,
        num_samples: int = 1,
        max_new_tokens: int = 64,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> list[list[list[int]]]:
        """Sample ``num_samples`` completions per prompt row from one shared prefill (never a vision placeholder).

        Args:
            inputs: Left-padded prompts (``labels`` ignored).
            num_samples: Completions per row ``G``; the prefill and vision tower run once per row.
            max_new_tokens: Decode budget per completion.
            do_sample: False for greedy (then all G samples are equal and match HF ``generate``).
            temperature: Sampling temperature.
            top_p: Nucleus sampling mass.
            generator: Explicit RNG (same seed, same samples).

        Returns:
            ``[B][G]`` completion token ids, cut before the first stop token (``model/generation.py``).
        """
        return generation.generate(
            self,
            inputs,
            num_samples=num_samples,
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature,
            top_p=top_p,
            generator=generator,
            compiled=self.compile_decode,
        )

    def _strip(self, ids: list[int]) -> list[int]:
        return generation.strip_stop(ids, self.stop_ids)

    # ------------------------------------------------------------------ text
    def decode(self, ids: list[int]) -> str:
        """Text of completion ids (special tokens dropped; the memory/answer tags are kept)."""
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def count_tokens(self, text: str) -> int:
        """Length of ``text`` in this policy's tokens (memory length, docs/method.md section 1.7)."""
        return len(self._encode(text))

    # ------------------------------------------------------------- save/load
    def save_pretrained(
        self,
        path: str | Path,
        state_dict: dict[str, Tensor] | None = None,
        *,
        geometry: FrameGeometry | None = None,
    ) -> None:
        """Write model, tokenizer (with chat template), processor files and ``videomem_policy.json``.

        Args:
            path: Output directory.
            state_dict: Full weights keyed as ``self.state_dict()`` (``model.`` prefix), e.g. gathered
                from a sharded policy; None saves the module's own weights.
            geometry: The frame geometry the policy was trained with (the data config's); None keeps
                ``self.geometry`` (the one it was loaded with, if any). See ``model/checkpoint.py``.
        """
        from videomem.model.checkpoint import save_policy

        save_policy(self, path, state_dict, geometry=geometry)

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype | str | None = None) -> Policy:
        """Load our save or a real Qwen2.5-VL / Qwen3-VL checkpoint dir (config ``model_type`` picks the class).

        Args:
            path: Local directory (never downloads).
            dtype: Weights dtype; None keeps the checkpoint's.
        """
        from videomem.model.checkpoint import load_policy

        return load_policy(cls, path, dtype)


def __getattr__(name: str) -> Any:
    """``build_policy`` lives in ``model/checkpoint.py`` (which imports this module): re-exported lazily."""
    if name == "build_policy":
        from videomem.model.checkpoint import build_policy

        return build_policy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
