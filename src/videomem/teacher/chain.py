"""The chain-of-memory teacher (the paper's cold-start data, docs/method.md section 2), backend-agnostic.

For one question about a video of T clips:

    d_t = captioner(frames of clip t, question, d_1..d_{t-1})        clip t described, earlier ones in context
    M_t = truncate(writer(M_{t-1}, question, d_t), L_max tokens)     the memory after clip t  (M_0 = "")

Questions are processed in lockstep (clip t of every question of a batch, then clip t+1), so a local
backend batches them and an endpoint backend keeps them in flight together. A backend returns, per
request, the text or the exception that request ended with: a failed request fails its question only.

The prompts are plain ``str.format`` templates from the config (``configs/memories.yaml``). Fields:
captioner ``{question} {options} {clip} {num_clips} {start} {end} {earlier}``; writer ``{question}
{options} {clip} {num_clips} {memory} {description}``.

This module builds no model and opens no file.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from videomem.data.types import VideoQA
from videomem.memory.prompt import format_options, format_time

EMPTY = "(none)"
# Tags of the policy's output format and reasoning blocks: never part of a stored memory (the SFT target
# wraps the memory in <memory> tags; a tag inside it would break the format it teaches).
_THINK_RE = re.compile(r"<think>.*?(</think>|$)", re.DOTALL)
# Special-token strings (``<|video_pad|>``, ``<|im_end|>``, ...) a server may return undecoded would become
# real special tokens in the policy's prompt, so they go too.
_TAG_RE = re.compile(r"</?(memory|answer|think)>|<\|[^|<>\s]*\|>")


class Captioner(Protocol):
    """Describes clips: per request (chat messages with text content, frames [F, H, W, 3] uint8).

    It shows ``frames_per_clip`` frames of each clip, decoded at ``frame_size`` (H, W) or as stored (None).
    """

    frames_per_clip: int
    frame_size: tuple[int, int] | None

    def describe(self, requests: list[tuple[list[dict], torch.Tensor]]) -> list[str | Exception]: ...


class Writer(Protocol):
    """Writes memories: per request, chat messages (text only)."""

    def write(self, requests: list[list[dict]]) -> list[str | Exception]: ...


@dataclass
class Prompts:
    """The teachers' prompt templates (``str.format``; fields in the module docstring)."""

    caption_system: str
    caption_user: str
    writer_system: str
    writer_user: str


@dataclass
class Chain:
    """One question's teacher output: d_1..d_T and M_1..M_T, or the error that stopped it."""

    video_id: str
    qid: str
    descriptions: list[str] = field(default_factory=list)
    memories: list[str] = field(default_factory=list)
    error: str | None = None


def clean_text(text: str) -> str:
    """A teacher reply as stored: reasoning blocks and memory/answer tags removed, whitespace collapsed."""
    text = _TAG_RE.sub(" ", _THINK_RE.sub(" ", text))
    return " ".join("".join(c for c in text if (c.isprintable() or c.isspace()) and c != "\ufffd").split())


def truncate_tokens(text: str, count: Callable[[str], list[int]], decode: Callable, max_tokens: int) -> str:
    """``text`` cut to its first ``max_tokens`` tokens (as ``count`` tokenises it); unchanged when it fits."""
    ids = count(text)
    if len(ids) <= max_tokens:
        return text
    return decode(ids[:max_tokens]).strip()


def _messages(system: str, user: str) -> list[dict]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]


def caption_messages(prompts: Prompts, qa: VideoQA, t: int, earlier: Sequence[str]) -> list[dict]:
    """Messages asking for a description of clip ``t`` (0-based); the backend adds the frames to the user turn."""
    start, end = qa.spans[t] if t < len(qa.spans) else (0.0, 0.0)
    history = "\n".join(f"Clip {i + 1}: {d}" for i, d in enumerate(earlier)) or EMPTY
    user = prompts.caption_user.format(
        question=qa.question,
        options=format_options(qa.options),
        clip=t + 1,
        num_clips=qa.num_clips,
        start=format_time(start),
        end=format_time(end),
        earlier=history,
    )
    return _messages(prompts.caption_system, user)


def writer_messages(prompts: Prompts, qa: VideoQA, t: int, memory: str, description: str) -> list[dict]:
    """Messages asking for M_t from M_{t-1} = ``memory`` and clip ``t``'s description."""
    user = prompts.writer_user.format(
        question=qa.question,
        options=format_options(qa.options),
        clip=t + 1,
        num_clips=qa.num_clips,
        memory=memory or EMPTY,
        description=description,
    )
    return _messages(prompts.writer_system, user)


def run_chains(
    questions: list[VideoQA],
    captioner: Captioner,
    writer: Writer,
    prompts: Prompts,
    limit_memory: Callable[[str], str],
) -> list[Chain]:
    """Teacher chains of a batch of questions, in lockstep over clips (module docstring).

    Args:
        questions: Decoded questions (clips [F, H, W, 3] each); their T may differ.
        captioner, writer: Backends.
        prompts: Templates.
        limit_memory: Cuts a memory to L_max tokens.

    Returns:
        One ``Chain`` per question, in order; a failed one has ``error`` set and partial lists.
    """
    chains = [Chain(qa.video_id, qa.qid) for qa in questions]
    for t in range(max((qa.num_clips for qa in questions), default=0)):
        live = [i for i, (qa, c) in enumerate(zip(questions, chains)) if c.error is None and t < qa.num_clips]
        if not live:
            break
        requests = [
            (caption_messages(prompts, questions[i], t, chains[i].descriptions), questions[i].clips[t])
            for i in live
        ]
        for i, out in zip(live, captioner.describe(requests)):
            if isinstance(out, Exception):
                chains[i].error = f"captioner, clip {t + 1}: {type(out).__name__}: {out}"
            else:
                chains[i].descriptions.append(clean_text(out))
        live = [i for i in live if chains[i].error is None]
        requests = [
            writer_messages(
                prompts,
                questions[i],
                t,
                chains[i].memories[-1] if chains[i].memories else "",
                chains[i].descriptions[-1],
            )
            for i in live
        ]
        for i, out in zip(live, writer.write(requests) if requests else []):
            if isinstance(out, Exception):
                chains[i].error = f"writer, clip {t + 1}: {type(out).__name__}: {out}"
            else:
                chains[i].memories.append(limit_memory(clean_text(out)))
    return chains
