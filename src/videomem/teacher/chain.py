"""The chain-of-memory teacher (the paper's cold-start data, docs/method.md section 2), backend-agnostic.

For a video of T clips and each of its questions:

    d_t = captioner(frames of clip t, d_1..d_{t-1})                  clip t described, earlier ones in context
    M_t = truncate(writer(M_{t-1}, question, d_t), L_max tokens)     the memory after clip t  (M_0 = "")

The descriptions do not depend on the question, so they are made once per video and shared by all its
questions (``Captions``: LLaVA-Video-178K has up to 5 questions per video); the writer runs per
question. Questions are processed in lockstep (clip t of every question of a batch, then clip t+1), so
a local backend batches them and an endpoint backend keeps them in flight together.

A backend returns, per request, the text or the exception that request ended with: a failed request
fails its question only (a failed description, every question of its video in the batch). A reply that
is empty, cut at the token cap or malformed (``reply_problem``) is a failure too (``BadReply``): it is
never stored as a description or a memory.

The prompts are plain ``str.format`` templates from the config (``configs/memories.yaml``). Fields:
captioner ``{clip} {num_clips} {start} {end} {earlier}`` (no question: the description is shared);
writer ``{question} {options} {clip} {num_clips} {memory} {description}``; reader (answerability.py)
``{question} {options} {memory}``, and for an open-ended question ``{question} {memory}``. The writer's
``{options}`` is the lettered options of a multiple-choice question, or ``OPEN_ENDED_OPTIONS`` for an
open-ended one: its answer is free text, so the memory must keep every detail the answer may need, not
only what tells options apart.

This module builds no model and opens no file.
"""

from __future__ import annotations

import re
import string
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


#: The fields each user prompt may use.
FIELDS = {
    "caption_user": {"clip", "num_clips", "start", "end", "earlier"},
    "writer_user": {"question", "options", "clip", "num_clips", "memory", "description"},
    "reader_user": {"question", "options", "memory"},
    "reader_open_user": {"question", "memory"},
}


@dataclass
class Prompts:
    """The teachers' prompt templates (``str.format``; fields in the module docstring).

    Raises:
        ValueError: A user prompt names a field it cannot have (e.g. the captioner's, the question).
    """

    caption_system: str
    caption_user: str
    writer_system: str
    writer_user: str
    reader_system: str
    reader_user: str
    reader_open_system: str  # the reader of an open-ended question: answer in words
    reader_open_user: str

    def __post_init__(self) -> None:
        for name, allowed in FIELDS.items():
            used = {f for _, f, _, _ in string.Formatter().parse(getattr(self, name)) if f is not None}
            if used - allowed:
                why = (
                    " (a description is shared by all questions of a video)" if name == "caption_user" else ""
                )
                raise ValueError(
                    f"prompts.{name} uses {sorted(used - allowed)}, not fields of this prompt{why}; "
                    f"it may use {sorted(allowed)}"
                )


class BadReply(RuntimeError):
    """A reply that must not be stored: empty, cut at the token cap, or malformed."""


def reply_problem(text: object, cut: bool = False) -> str | None:
    """Why a teacher reply must not be stored, or None when it may.

    Args:
        text: The reply's content as the backend returned it.
        cut: The backend stopped it at its token cap (``finish_reason == "length"``, or no stop token).

    Returns:
        ``"cut at the token cap"``, ``"malformed: ..."`` or ``"empty"``; None for a usable reply.
    """
    if not isinstance(text, str):
        return f"malformed: the reply is {type(text).__name__}, not text"
    if cut:
        return "cut at the token cap"
    if "<think>" in text and "</think>" not in text:
        return "malformed: a <think> block that never ends"
    if not clean_text(text):
        return "empty"
    return None


def problem_kind(problem: str) -> str:
    """``"cut"``, ``"malformed"`` or ``"empty"`` of a ``reply_problem`` message (for the run's counts)."""
    return problem.split(" ", 1)[0].rstrip(":")


class Captions(dict):
    """video_id -> its descriptions d_1..d_t so far, shared by all its questions.

    Attributes:
        requests: Captioner requests made through this cache (one per video and clip described).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.requests = 0


@dataclass
class Chain:
    """One question's teacher output: d_1..d_T and M_1..M_T, or the error that stopped it.

    ``answerable`` (answerability.py): whether a reader given M_T alone picked the gold answer, or, for an
    open-ended question, answered close enough to the reference (``reader_answer``: its letter or words);
    None when not checked (no gold answer).
    """

    video_id: str
    qid: str
    descriptions: list[str] = field(default_factory=list)
    memories: list[str] = field(default_factory=list)
    error: str | None = None
    answerable: bool | None = None
    reader_answer: str | None = None


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


OPEN_ENDED_OPTIONS = (
    "(none: an open-ended question, answered in words; keep every detail the answer may need: who, what, "
    "colours, counts, text on screen, and the order of events)"
)


def options_text(qa: VideoQA) -> str:
    """The writer's ``{options}``: lettered lines, or ``OPEN_ENDED_OPTIONS`` when the question has none."""
    return format_options(qa.options) if qa.options else OPEN_ENDED_OPTIONS


def caption_messages(prompts: Prompts, qa: VideoQA, t: int, earlier: Sequence[str]) -> list[dict]:
    """Messages asking for a description of clip ``t`` (0-based) of ``qa``'s video (not its question);
    the backend adds the frames to the user turn."""
    start, end = qa.spans[t] if t < len(qa.spans) else (0.0, 0.0)
    history = "\n".join(f"Clip {i + 1}: {d}" for i, d in enumerate(earlier)) or EMPTY
    user = prompts.caption_user.format(
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
        options=options_text(qa),
        clip=t + 1,
        num_clips=qa.num_clips,
        memory=memory or EMPTY,
        description=description,
    )
    return _messages(prompts.writer_system, user)


def _describe(
    questions: list[VideoQA],
    live: list[int],
    t: int,
    captioner: Captioner,
    prompts: Prompts,
    captions: Captions,
) -> dict[str, str]:
    """Describe clip ``t`` of each live question's video that has no d_t yet, once per video.

    Returns:
        video_id -> why its description failed (its questions fail).
    """
    need: dict[str, int] = {}  # video -> a question of it, whose frames and spans are the video's
    for i in live:
        vid = questions[i].video_id
        if len(captions.get(vid, ())) <= t and vid not in need:
            need[vid] = i
    requests = [
        (caption_messages(prompts, questions[i], t, captions.get(vid, [])[:t]), questions[i].clips[t])
        for vid, i in need.items()
    ]
    captions.requests += len(requests)
    failed = {}
    for vid, out in zip(need, captioner.describe(requests) if requests else []):
        problem = f"{type(out).__name__}: {out}" if isinstance(out, Exception) else reply_problem(out)
        if problem is not None:
            failed[vid] = problem if isinstance(out, Exception) else f"BadReply: {problem}"
        else:
            captions[vid] = [*captions.get(vid, [])[:t], clean_text(out)]
    return failed


def run_chains(
    questions: list[VideoQA],
    captioner: Captioner,
    writer: Writer,
    prompts: Prompts,
    limit_memory: Callable[[str], str],
    captions: Captions | None = None,
) -> list[Chain]:
    """Teacher chains of a batch of questions, in lockstep over clips, one description per video and clip.

    Args:
        questions: Decoded questions (clips [F, H, W, 3] each); their T may differ.
        captioner, writer: Backends.
        prompts: Templates.
        limit_memory: Cuts a memory to L_max tokens.
        captions: Descriptions already made for these videos (reused, never asked again) and where new
            ones go; None: a fresh cache.

    Returns:
        One ``Chain`` per question, in order; a failed one has ``error`` set and partial lists.
    """
    captions = Captions() if captions is None else captions
    chains = [Chain(qa.video_id, qa.qid) for qa in questions]
    for t in range(max((qa.num_clips for qa in questions), default=0)):
        live = [i for i, (qa, c) in enumerate(zip(questions, chains)) if c.error is None and t < qa.num_clips]
        if not live:
            break
        failed = _describe(questions, live, t, captioner, prompts, captions)
        for i in live:
            vid = questions[i].video_id
            if vid in failed:
                chains[i].error = f"captioner, clip {t + 1}: {failed[vid]}"
            else:
                chains[i].descriptions = list(captions[vid][: t + 1])
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
            problem = None if isinstance(out, Exception) else reply_problem(out)
            if isinstance(out, Exception):
                chains[i].error = f"writer, clip {t + 1}: {type(out).__name__}: {out}"
            elif problem is not None:
                chains[i].error = f"writer, clip {t + 1}: BadReply: {problem}"
            else:
                chains[i].memories.append(limit_memory(clean_text(out)))
    return chains
