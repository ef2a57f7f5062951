"""The policy: a real transformers Qwen2.5-VL / Qwen3-VL plus its tokenizer, as one nn.Module.

It turns chat messages + clip frames into a left-padded batch (``build_inputs``), runs the model with
the 3-D multimodal rope actually in use (it builds ``mm_token_type_ids`` and passes explicit
``position_ids``), and samples completions with a shared prefill (``generate``): each prompt row is
prefilled once (vision tower once), its KV cache is kept once (never copied ``num_samples`` ways), and a
plain Python loop decodes all samples in place, each step reading a row's prompt once for all its
samples (``model/decoding.py``). This is the O(T) instead of O(T*G) prefill behind PRPO's speed-up
(method.md section 3), and a decode that does not pay the prompt G times either. PRPO's update shares the
prefix the same way (``group_hidden_states``): each prompt runs once with its G sampled completions
packed behind it under a 4-D mask, instead of G prompt + completion rows.

It deliberately knows nothing of rewards, losses, optimisers or the memory prompt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import (
    AutoTokenizer,
    DynamicCache,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2_5_VLForConditionalGeneration,
    Qwen3VLForConditionalGeneration,
)

from videomem.model.decoding import SharedPrefixCache, grouped_decode, sample_next
from videomem.model.liger import apply_liger_kernels, resolve_liger
from videomem.model.tiny import EOS, PAD, build_tokenizer, tiny_config
from videomem.model.vision import NORM, frames_to_patches, num_video_tokens

MODEL_CLASSES = {
    "qwen2_5_vl": Qwen2_5_VLForConditionalGeneration,
    "qwen3_vl": Qwen3VLForConditionalGeneration,
}
POLICY_FILE = "videomem_policy.json"
VIDEO_PAD, VISION_START, VISION_END = "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"
DEFAULT_FPS = 2.0  # Qwen's default video sampling rate, used when the caller gives none


@dataclass
class PolicyInputs:
    """A left-padded batch ready for the model (one video per row).

    Attributes:
        input_ids: ``[B, L]`` token ids, left padded.
        attention_mask: ``[B, L]`` 1 on real tokens, 0 on padding.
        mm_token_type_ids: ``[B, L]`` 0 text, 1 image pad, 2 video pad (drives the 3-D rope).
        pixel_values_videos: ``[P, D]`` all videos' patches, batch order.
        video_grid_thw: ``[B, 3]`` (t, h, w) patch grid of each row's video.
        second_per_grid_ts: ``[B]`` seconds per temporal grid step of each video (Qwen2.5-VL positions).
        labels: ``[B, L]`` -100 except completion tokens (training only).
    """

    input_ids: Tensor
    attention_mask: Tensor
    mm_token_type_ids: Tensor
    pixel_values_videos: Tensor
    video_grid_thw: Tensor
    second_per_grid_ts: Tensor
    labels: Tensor | None = None

    def to(self, device: torch.device | str) -> PolicyInputs:
        """The same batch on ``device``."""
        return PolicyInputs(**{f.name: _to(getattr(self, f.name), device) for f in fields(self)})

    def model_kwargs(self) -> dict:
        """Keyword arguments of the HF model's forward (labels excluded).

        Qwen3-VL's forward ignores ``second_per_grid_ts`` but HF ``generate`` rejects it: drop it there.
        """
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "labels"}


def _to(value: Tensor | None, device: torch.device | str) -> Tensor | None:
    return None if value is None else value.to(device)


class Policy(nn.Module):
    """A Qwen-VL model with its tokenizer: batching, forward, shared-prefill generation, save/load.

    Attributes:
        model: ``Qwen2_5_VLForConditionalGeneration`` or ``Qwen3VLForConditionalGeneration``.
        tokenizer: Its tokenizer (left padding).
        arch: ``"qwen2_5_vl"`` or ``"qwen3_vl"``.
        patch_multiple: ``patch_size * merge_size``: frame H and W must be multiples of it.
        liger_kernels: Liger's kernels are on (set by ``build_policy``): SFT then uses Liger's fused
            linear cross-entropy on ``hidden_states`` (``videomem.model.liger``).
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
        self.liger_kernels = False
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
            The batch; ``labels`` is None unless ``completions`` is given.
        """
        if len(messages) != len(videos) or (completions is not None and len(completions) != len(videos)):
            raise ValueError("messages, videos (and completions) must have one entry per row")
        fps = video_fps if isinstance(video_fps, list) else [video_fps or DEFAULT_FPS] * len(videos)
        if len(fps) != len(videos):
            raise ValueError("video_fps must be one value or one per row")
        rows, starts, pixels, grids = [], [], [], []
        for i, (msgs, frames) in enumerate(zip(messages, videos)):
            patches, grid = frames_to_patches(
                frames,
                patch_size=self.patch_size,
                temporal_patch_size=self.temporal_patch_size,
                merge_size=self.merge_size,
                mean=self.image_mean,
                std=self.image_std,
            )
            text = self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            if text.count(VIDEO_PAD) != 1:
                raise ValueError(f"row {i}: the rendered prompt must hold exactly one video placeholder")
            text = text.replace(VIDEO_PAD, self._video_placeholder(grid, frames.shape[0], fps[i]))
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            starts.append(len(ids))
            if completions is not None:
                c = completions[i]
                ids = ids + self._completion_ids(c)
            rows.append(ids)
            pixels.append(patches)
            grids.append(grid)
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)  # [B, L]
        attention_mask = torch.zeros(len(rows), width, dtype=torch.long)  # [B, L]
        labels = torch.full((len(rows), width), -100, dtype=torch.long) if completions is not None else None
        for i, ids in enumerate(rows):
            input_ids[i, width - len(ids) :] = torch.tensor(ids)
            attention_mask[i, width - len(ids) :] = 1
            if labels is not None:
                labels[i, width - len(ids) + starts[i] :] = input_ids[i, width - len(ids) + starts[i] :]
        mm_types = (input_ids == self.image_token_id).long() + 2 * (input_ids == self.video_token_id).long()
        return PolicyInputs(
            input_ids=input_ids,
            attention_mask=attention_mask,
            mm_token_type_ids=mm_types,
            pixel_values_videos=torch.cat(pixels),  # [P, D]
            video_grid_thw=torch.stack(grids),  # [B, 3]
            second_per_grid_ts=torch.tensor([self.temporal_patch_size / f for f in fps]),  # [B]
            labels=labels,
        )

    def _video_placeholder(self, grid: Tensor, num_frames: int, fps: float) -> str:
        """The expansion of one ``<|video_pad|>``, as the official processors write it.

        Qwen2.5-VL: ``t*h*w/merge^2`` pads. Qwen3-VL: per temporal patch a ``<T seconds>`` timestamp
        (mean time of its frames) then ``<|vision_start|>`` pads ``<|vision_end|>``.
        """
        if self.arch == "qwen2_5_vl":
            return VIDEO_PAD * num_video_tokens(grid, self.merge_size)
        per_frame = int(grid[1] * grid[2]) // self.merge_size**2
        tp = self.temporal_patch_size
        idx = list(range(num_frames)) + [num_frames - 1] * (-num_frames % tp)
        times = [(idx[k] + idx[k + tp - 1]) / 2 / fps for k in range(0, len(idx), tp)]
        return "".join(f"<{t:.1f} seconds>{VISION_START}{VIDEO_PAD * per_frame}{VISION_END}" for t in times)

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _completion_ids(self, completion: str | list[int]) -> list[int]:
        """A completion (text, or token ids as sampled) as trained: its ids closed with ``<|im_end|>``."""
        ids = self._encode(completion) if isinstance(completion, str) else list(completion)
        return ids + [self.im_end_id]

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

        Row b packs ``[prompt_b, c_b1, ..., c_bG]`` into one sequence; a 4-D mask lets completion g see
        the prompt's real tokens and its own earlier tokens only, and its rope positions continue from
        the prompt as if it stood alone. So every completion token gets exactly the hidden state of
        ``hidden_states(build_inputs(prompt, completion))`` while the vision tower and the prompt's
        layers run once per row instead of once per completion (PRPO's update over a PSP group).

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
        seen = torch.zeros(rows, width, width, dtype=torch.bool)  # [B, W(query), W(key)]
        real = base.attention_mask.bool()  # [B, Lp]
        seen[:, :prompt_len, :prompt_len] = (
            torch.ones(prompt_len, prompt_len, dtype=torch.bool).tril() & real[:, None]
        )
        src, tgt = [], []  # per completion: positions whose hidden predicts its tokens, and the tokens
        for b, cs in enumerate(ids):
            at = prompt_len
            for c in cs:
                n = len(c)
                input_ids[b, at : at + n] = torch.tensor(c)
                pos[:, b, at : at + n] = start[b] + torch.arange(n)
                seen[b, at : at + n, :prompt_len] = real[b]
                seen[b, at : at + n, at : at + n] = torch.ones(n, n, dtype=torch.bool).tril()
                src.append([prompt_len - 1] + list(range(at, at + n - 1)))
                tgt.append(c)
                at += n
        seen |= torch.eye(width, dtype=torch.bool)  # padding rows see themselves (no all-masked row)
        attn = self.model.model.language_model.config._attn_implementation
        if attn == "sdpa":
            mask = seen[:, None]  # [B, 1, W, W] boolean, True = may attend
        elif attn == "eager":
            dtype = self.model.get_input_embeddings().weight.dtype  # the compute dtype (gathered under FSDP2)
            mask = torch.zeros(seen[:, None].shape, dtype=dtype).masked_fill(
                ~seen[:, None], torch.finfo(dtype).min
            )
        else:
            raise NotImplementedError(
                f"group_hidden_states needs a custom 4-D mask, which {attn!r} attention does not take: "
                "use sdpa or eager, or module.shared_prefix_update=false"
            )
        mm_types = torch.zeros_like(input_ids)
        mm_types[:, :prompt_len] = base.mm_token_type_ids
        packed = PolicyInputs(
            input_ids=input_ids,
            attention_mask=mask,
            mm_token_type_ids=mm_types,
            pixel_values_videos=base.pixel_values_videos,
            video_grid_thw=base.video_grid_thw,
            second_per_grid_ts=base.second_per_grid_ts,
        ).to(self.model.device)
        out = self.model.model(
            **self._hf_kwargs(packed), position_ids=pos.to(self.model.device), use_cache=False
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
    @torch.inference_mode()
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
            ``[B][G]`` completion token ids, cut before the first stop token (``<|im_end|>`` / eos).
        """
        if do_sample and temperature <= 0:
            raise ValueError("temperature must be > 0 when sampling (use do_sample=False for greedy)")
        batch = inputs.input_ids.shape[0]
        rows = batch * num_samples
        device = inputs.input_ids.device
        positions, deltas = self.rope_positions(inputs)  # [3, B, L], [B, 1]
        out = self.model(
            **self._hf_kwargs(inputs),
            position_ids=positions,
            past_key_values=DynamicCache(config=self.model.config),
            use_cache=True,
            logits_to_keep=1,
        )
        text_config = self.model.model.language_model.config
        heads_per_kv = text_config.num_attention_heads // text_config.num_key_value_heads
        # Each row's prompt KV once (not G copies); its samples' tokens are appended after it.
        cache = SharedPrefixCache(
            out.past_key_values, inputs.attention_mask, num_samples, max_new_tokens, heads_per_kv
        )
        logits = out.logits[:, -1].repeat_interleave(num_samples, dim=0)  # [B*G, V]
        del out
        # Text continues after the largest prompt position: n_real + delta (= HF's cumsum(mask) - 1 + delta).
        next_pos = inputs.attention_mask.sum(-1, keepdim=True) + deltas  # [B, 1]
        next_pos = next_pos.repeat_interleave(num_samples, dim=0)  # [B*G, 1]
        stop_ids = torch.tensor(self.stop_ids, device=device)
        suppress = torch.tensor(self.suppress_ids, dtype=torch.long, device=device)
        tokens = torch.full((rows, max_new_tokens), self.pad_id, dtype=torch.long, device=device)  # [B*G, N]
        finished = torch.zeros(rows, dtype=torch.bool, device=device)  # [B*G]
        # Decode attention: a row's G samples read its prompt together, in one SDPA call per layer.
        with grouped_decode(text_config):
            for step in range(max_new_tokens):
                logits.index_fill_(-1, suppress, float("-inf"))  # no vision placeholders, in place
                token = sample_next(logits, do_sample, temperature, top_p, generator)  # [B*G]
                token = token.masked_fill(finished, self.pad_id)
                tokens[:, step] = token
                finished |= torch.isin(token, stop_ids)
                if step == max_new_tokens - 1 or bool(finished.all()):
                    break
                out = self.model(
                    input_ids=token[:, None],  # [B*G, 1]
                    attention_mask=cache.next_mask(),  # [B, 1, G*r, L+G*(step+1)]
                    position_ids=(next_pos + step).unsqueeze(0).expand(3, -1, -1),  # [3, B*G, 1]
                    past_key_values=cache,
                    use_cache=True,
                )
                logits = out.logits[:, -1]  # [B*G, V]
        ids = tokens.tolist()
        return [[self._strip(ids[b * num_samples + g]) for g in range(num_samples)] for b in range(batch)]

    def _strip(self, ids: list[int]) -> list[int]:
        for i, t in enumerate(ids):
            if t in self.stop_ids:
                return ids[:i]
        return ids

    # ------------------------------------------------------------------ text
    def decode(self, ids: list[int]) -> str:
        """Text of completion ids (special tokens dropped; the memory/answer tags are kept)."""
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def count_tokens(self, text: str) -> int:
        """Length of ``text`` in this policy's tokens (memory length, method.md section 1.7)."""
        return len(self._encode(text))

    # ------------------------------------------------------------- save/load
    def save_pretrained(self, path: str | Path, state_dict: dict[str, Tensor] | None = None) -> None:
        """Write model, tokenizer (with chat template) and ``videomem_policy.json`` to ``path``.

        Args:
            path: Output directory.
            state_dict: Full weights keyed as ``self.state_dict()`` (``model.`` prefix), e.g. gathered
                from a sharded policy; None saves the module's own weights.
        """
        path = Path(path)
        if state_dict is not None:
            state_dict = {k.removeprefix("model."): v for k, v in state_dict.items()}
        self.model.save_pretrained(path, state_dict=state_dict)
        self.tokenizer.save_pretrained(path)
        meta = {
            "arch": self.arch,
            "patch_size": self.patch_size,
            "temporal_patch_size": self.temporal_patch_size,
            "merge_size": self.merge_size,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
            "system_prompt": self.system_prompt,
        }
        (path / POLICY_FILE).write_text(json.dumps(meta, indent=2))

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype | str | None = None) -> Policy:
        """Load our save or a real Qwen2.5-VL / Qwen3-VL checkpoint dir (config ``model_type`` picks the class).

        Args:
            path: Local directory (never downloads).
            dtype: Weights dtype; None keeps the checkpoint's.
        """
        path = Path(path)
        arch = json.loads((path / "config.json").read_text()).get("model_type")
        if arch not in MODEL_CLASSES:
            raise ValueError(f"{path}: model_type {arch!r} is not one of {list(MODEL_CLASSES)}")
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        model = MODEL_CLASSES[arch].from_pretrained(path, dtype=dtype or "auto", local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        if tokenizer.chat_template is None:
            tokenizer.chat_template = _find_chat_template(path)
        meta = json.loads((path / POLICY_FILE).read_text()) if (path / POLICY_FILE).exists() else {}
        mean, std = meta.get("image_mean"), meta.get("image_std")
        if mean is None:
            mean, std = _processor_norm(path)
        policy = cls(model, tokenizer, arch, image_mean=mean, image_std=std)
        policy.system_prompt = meta.get("system_prompt")
        return policy


def _find_chat_template(path: Path) -> str:
    """A real checkpoint's template may live beside the tokenizer (chat_template.jinja / .json)."""
    if (path / "chat_template.jinja").exists():
        return (path / "chat_template.jinja").read_text()
    if (path / "chat_template.json").exists():
        return json.loads((path / "chat_template.json").read_text())["chat_template"]
    raise ValueError(f"{path}: the tokenizer has no chat template")


def _processor_norm(path: Path) -> tuple[list[float] | None, list[float] | None]:
    """image_mean / image_std from a real checkpoint's (video) preprocessor config, else None (arch default)."""
    for name in ("video_preprocessor_config.json", "preprocessor_config.json"):
        if (path / name).exists():
            cfg = json.loads((path / name).read_text())
            if "image_mean" in cfg:
                return cfg["image_mean"], cfg["image_std"]
    return None, None


def build_policy(
    arch: str = "qwen2_5_vl",
    path: str | None = None,
    tiny: dict | None = None,
    dtype: str = "float32",
    seed: int = 0,
    liger_kernels: bool | str = "auto",
    system_prompt: str | None = None,
) -> Policy:
    """Factory for Lightning's ``configure_model`` (Hydra ``_partial_``).

    Args:
        arch: ``"qwen2_5_vl"`` or ``"qwen3_vl"``; must match the checkpoint when ``path`` is given.
        path: Local checkpoint dir (a real Qwen-VL or a ``Policy.save_pretrained`` dir); None builds
            a tiny random model.
        tiny: Overrides of ``tiny.TINY_DEFAULTS`` (ignored with ``path``).
        dtype: Weights dtype name (``"float32"``, ``"bfloat16"``, ...).
        seed: Seed of the tiny model's random init (the global RNG is left untouched).
        liger_kernels: ``"auto"`` (on iff CUDA is available), True or False: Liger's Triton kernels
            patched into the built instance, and Liger's fused cross-entropy for SFT (``model/liger.py``).
        system_prompt: The step instruction this policy is trained and run with, saved with it (None:
            keep the checkpoint's, else the memory loop's default; "": no system turn).
    """
    torch_dtype = getattr(torch, dtype)
    if path is not None:
        if not Path(path).is_dir():
            raise FileNotFoundError(
                f"model path {path!r} is not a local checkpoint directory (nothing is downloaded): point "
                "model.path (or the environment variable the config reads) at a Qwen-VL checkpoint dir"
            )
        policy = Policy.from_pretrained(path, dtype=torch_dtype)
        if policy.arch != arch:
            raise ValueError(f"checkpoint {path} is {policy.arch!r} but arch={arch!r} was requested")
        if system_prompt is not None:
            policy.system_prompt = system_prompt
        return _with_liger(policy, liger_kernels)
    tokenizer = build_tokenizer((tiny or {}).get("vocab_size", 768))
    config = tiny_config(arch, tokenizer, tiny)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MODEL_CLASSES[arch](config)
    model.generation_config.eos_token_id = [
        tokenizer.convert_tokens_to_ids(EOS),
        tokenizer.convert_tokens_to_ids(PAD),
    ]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    policy = Policy(model.to(torch_dtype).eval(), tokenizer, arch)
    policy.system_prompt = system_prompt
    return _with_liger(policy, liger_kernels)


def _with_liger(policy: Policy, flag: bool | str) -> Policy:
    """Patch the built instance (never the classes before building: see ``model/liger.py``)."""
    if resolve_liger(flag):
        apply_liger_kernels(policy.model, policy.arch, required=flag is True or str(flag).lower() == "true")
        policy.liger_kernels = True
    return policy
