"""Local teachers: transformers checkpoint directories run in this process, batched (``teacher=local``, ``tiny``).

- ``LocalCaptioner`` wraps the project's ``Policy`` (a real Qwen2.5-VL / Qwen3-VL checkpoint dir, e.g.
  Qwen3-VL-32B-Instruct as in the paper, or a tiny random one): one clip's frames per request, greedy.
- ``LocalWriter`` runs any causal LM with a chat template (e.g. Qwen3-8B as in the paper, or a tiny
  random Qwen2), left-padded batches, greedy.
- ``tiny_writer_model`` builds the tiny Qwen2 causal LM (the project's local tokenizer): meaningless
  text through the real code path, and the model the endpoint test serves with ``transformers serve``.

A batch that raises fails every request of that batch (returned as the exception), never the run. A
reply that reaches ``max_new_tokens`` without its end token is cut (returned as ``BadReply``, never
stored) unless ``allow_cut``: the tiny random teachers set it, since a random model rarely ends a
reply (their text is meaningless anyway). Nothing is downloaded: paths must be local directories.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from videomem.model.policy import Policy, build_policy
from videomem.model.tiny import EOS, PAD, build_tokenizer
from videomem.teacher.chain import BadReply, truncate_tokens


def _fit(frames: torch.Tensor, multiple: int) -> torch.Tensor:
    """uint8 [F, H, W, 3] resized down to the nearest multiples of ``multiple`` (unchanged when they already are)."""
    h, w = frames.shape[1:3]
    size = (max(multiple, h // multiple * multiple), max(multiple, w // multiple * multiple))
    if size == (h, w):
        return frames
    x = frames.permute(0, 3, 1, 2).float()  # [F, 3, H, W]
    x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)  # [F, h, w, 3]


def _size(frame_size) -> tuple[int, int] | None:
    """[H, W] from a config (or None) as a tuple."""
    return None if frame_size is None else (int(frame_size[0]), int(frame_size[1]))


_CUT = BadReply("cut at the token cap (max_new_tokens)")


def _batches(n: int, size: int) -> list[range]:
    return [range(i, min(n, i + size)) for i in range(0, n, size)]


class LocalCaptioner:
    """A Qwen-VL ``Policy`` describing clips; frames resized to the model's patch multiple."""

    def __init__(
        self,
        policy: Policy,
        *,
        batch_size: int = 4,
        max_new_tokens: int = 256,
        frames_per_clip: int = 8,
        frame_size: tuple[int, int] | None = None,
        allow_cut: bool = False,
    ) -> None:
        self.policy = policy.eval()
        self.batch_size, self.max_new_tokens, self.allow_cut = batch_size, max_new_tokens, allow_cut
        self.frames_per_clip, self.frame_size = frames_per_clip, _size(frame_size)

    def describe(self, requests: list[tuple[list[dict], torch.Tensor]]) -> list[str | Exception]:
        out: list[str | Exception] = []
        for rows in _batches(len(requests), self.batch_size):
            try:
                messages, videos = [], []
                for i in rows:
                    msgs, frames = requests[i]
                    *head, user = msgs
                    content = [{"type": "video"}, {"type": "text", "text": user["content"]}]
                    messages.append([*head, {"role": "user", "content": content}])
                    videos.append(_fit(frames, self.policy.patch_multiple))
                inputs = self.policy.build_inputs(messages, videos)
                ids = self.policy.generate(inputs, max_new_tokens=self.max_new_tokens)  # cut before the stop
                out.extend(
                    _CUT
                    if len(sample[0]) >= self.max_new_tokens and not self.allow_cut
                    else self.policy.decode(sample[0])
                    for sample in ids
                )
            except Exception as e:  # noqa: BLE001 - one batch's failure is its questions' failure
                out.extend([e] * len(rows))
        return out


class LocalWriter:
    """Any causal LM with a chat template writing memories, greedy, left-padded batches."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerFast,
        *,
        batch_size: int = 8,
        max_new_tokens: int = 256,
        min_new_tokens: int = 0,
        chat_template_kwargs: dict | None = None,
        allow_cut: bool = False,
    ) -> None:
        self.model, self.tokenizer, self.allow_cut = model.eval(), tokenizer, allow_cut
        self.chat_template_kwargs = dict(
            chat_template_kwargs or {}
        )  # e.g. {"enable_thinking": False} for Qwen3
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        eos = self.model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos]
        self._stop_ids = [t for t in {*eos, self.tokenizer.eos_token_id} if t is not None]
        self.batch_size, self.max_new_tokens, self.min_new_tokens = batch_size, max_new_tokens, min_new_tokens

    @torch.inference_mode()
    def write(self, requests: list[list[dict]]) -> list[str | Exception]:
        out: list[str | Exception] = []
        for rows in _batches(len(requests), self.batch_size):
            try:
                texts = [
                    self.tokenizer.apply_chat_template(
                        requests[i], tokenize=False, add_generation_prompt=True, **self.chat_template_kwargs
                    )
                    for i in rows
                ]
                enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
                gen = self.model.generate(
                    **enc.to(self.model.device),
                    max_new_tokens=self.max_new_tokens,
                    min_new_tokens=self.min_new_tokens,
                    do_sample=False,
                    pad_token_id=self.tokenizer.pad_token_id,
                )  # [B, L + N]
                new = gen[:, enc["input_ids"].shape[1] :]  # [B, N]
                ended = torch.isin(new, torch.tensor(self._stop_ids, device=new.device)).any(-1)  # [B]
                texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
                out.extend(t if e or self.allow_cut else _CUT for t, e in zip(texts, ended.tolist()))
            except Exception as e:  # noqa: BLE001
                out.extend([e] * len(rows))
        return out


def tiny_writer_model(
    seed: int = 0, hidden_size: int = 64
) -> tuple[Qwen2ForCausalLM, PreTrainedTokenizerFast]:
    """A random 2-layer Qwen2 causal LM with the project's local tokenizer (and its chat template)."""
    tokenizer = build_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids(EOS),
        pad_token_id=tokenizer.convert_tokens_to_ids(PAD),
        tie_word_embeddings=False,
        initializer_range=0.2,  # a spread-out random model: varied (meaningless) text, not one repeated token
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    model.generation_config.bos_token_id = None
    return model.eval(), tokenizer


def scripted_writer_model(reply: str, seed: int = 0) -> tuple[Qwen2ForCausalLM, PreTrainedTokenizerFast]:
    """``tiny_writer_model`` rewired so that its greedy reply to any prompt is ``reply`` then its end token:
    a served stand-in whose answers are known in advance (the endpoint tests, scripts/teacher_throughput.sh).

    Attention and MLP outputs are zeroed, so the last hidden state is the last token's embedding. Reply
    token i embeds to direction i + 1, which the head reads as reply token i + 1 (the last: the end
    token); every other token embeds to direction 0, read as the first reply token.

    Raises:
        ValueError: ``reply`` is empty, repeats a token, or has more tokens than the model has directions.
    """
    model, tokenizer = tiny_writer_model(seed=seed)
    chain = tokenizer(reply, add_special_tokens=False)["input_ids"]
    hidden = model.config.hidden_size
    if not chain or len(set(chain)) != len(chain) or len(chain) >= hidden:
        raise ValueError(f"a scripted reply needs 1 to {hidden - 1} distinct tokens, got {reply!r}")
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embed, head = model.model.embed_tokens.weight, model.lm_head.weight  # [V, H] each
        embed.zero_()
        embed[:, 0] = 1.0
        head.zero_()
        for i, token in enumerate(chain):
            embed[token] = 0.0
            embed[token, i + 1] = 1.0
            head[token, i] = 10.0
        head[model.generation_config.eos_token_id, len(chain)] = 10.0
    return model, tokenizer


def build_captioner(
    path: str | None = None,
    arch: str = "qwen2_5_vl",
    dtype: str = "float32",
    device: str = "cpu",
    seed: int = 0,
    batch_size: int = 4,
    max_new_tokens: int = 256,
    frames_per_clip: int = 8,
    frame_size: list[int] | None = None,
    allow_cut: bool = False,
) -> LocalCaptioner:
    """Hydra factory: a Qwen-VL checkpoint dir (``path``), or a tiny random ``arch`` policy when None.

    ``frames_per_clip`` frames of each clip are decoded at ``frame_size`` [H, W] (None: as stored) for it.
    """
    if path is not None:
        policy = Policy.from_pretrained(_local_dir(path), dtype=dtype)
    else:
        policy = build_policy(arch, seed=seed, liger_kernels=False)
    return LocalCaptioner(
        policy.to(device),
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        frames_per_clip=frames_per_clip,
        frame_size=frame_size,
        allow_cut=allow_cut,
    )


def build_writer(
    path: str | None = None,
    dtype: str = "float32",
    device: str = "cpu",
    seed: int = 0,
    batch_size: int = 8,
    max_new_tokens: int = 256,
    min_new_tokens: int = 0,
    chat_template_kwargs: dict | None = None,
    allow_cut: bool = False,
) -> LocalWriter:
    """Hydra factory: a causal-LM checkpoint dir (``path``), or the tiny random Qwen2 when None."""
    if path is not None:
        path = _local_dir(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype), local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    else:
        model, tokenizer = tiny_writer_model(seed)
    return LocalWriter(
        model.to(device),
        tokenizer,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens,
        chat_template_kwargs=chat_template_kwargs,
        allow_cut=allow_cut,
    )


def _local_dir(path: str) -> str:
    if not Path(path).is_dir():
        raise FileNotFoundError(
            f"teacher path {path!r} is not a local checkpoint directory (nothing is downloaded)"
        )
    return str(path)


def memory_limiter(
    max_tokens: int, tokenizer_path: str | None, writer: object
) -> tuple[Callable[[str], str], str]:
    """The L_max cut and the name of the tokenizer it counts with.

    ``tokenizer_path`` (a local dir, e.g. the policy's checkpoint) wins; else a local writer's own
    tokenizer; else the project's tiny byte-level tokenizer.
    """
    if tokenizer_path:
        tokenizer, which = (
            AutoTokenizer.from_pretrained(_local_dir(tokenizer_path), local_files_only=True),
            tokenizer_path,
        )
    elif isinstance(writer, LocalWriter):
        tokenizer, which = writer.tokenizer, "the writer's tokenizer"
    else:
        tokenizer, which = build_tokenizer(), "the project's tiny tokenizer"

    def limit(text: str) -> str:
        return truncate_tokens(
            text,
            lambda s: tokenizer(s, add_special_tokens=False)["input_ids"],
            lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
            max_tokens,
        )

    return limit, which
