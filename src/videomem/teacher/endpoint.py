"""Teachers behind any OpenAI-compatible chat endpoint (vLLM, SGLang, ``transformers serve``): ``teacher=openai``.

``ChatEndpoint`` sends ``POST {base_url}/chat/completions`` through the ``openai`` client with up to
``max_in_flight`` requests at once (a thread pool), a per-request ``timeout`` and ``retries`` retries
with exponential backoff (``backoff * 2**attempt`` seconds) on connection errors, timeouts, rate
limits, server errors and bad replies: a reply cut at ``max_tokens`` (``finish_reason == "length"``),
empty, or malformed (chain.py ``reply_problem``; ``bad_replies`` counts them by kind). A request that
still fails (or fails with a client error, e.g. 400) comes back as its exception (``BadReply`` for a
bad reply), failing its question only. With greedy decoding a retried bad reply usually comes back the
same: raise ``max_tokens`` or turn thinking off instead (docs/data.md). The captioner sends a clip's frames as base64 JPEG
``image_url`` parts before the text, which is how every OpenAI-compatible VLM server takes images.
"""

from __future__ import annotations

import base64
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import torch
from PIL import Image

from videomem.teacher.chain import BadReply, problem_kind, reply_problem

RETRYABLE = (
    openai.APIConnectionError,
    openai.APITimeoutError,
    openai.RateLimitError,
    openai.InternalServerError,
)


def jpeg_data_url(frame: torch.Tensor, quality: int = 90) -> str:
    """``data:image/jpeg;base64,...`` of one uint8 [H, W, 3] frame."""
    buf = io.BytesIO()
    Image.fromarray(frame.cpu().numpy()).save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def with_frames(messages: list[dict], frames: torch.Tensor, quality: int = 90) -> list[dict]:
    """The messages with the frames [F, H, W, 3] as image parts before the last user turn's text."""
    *head, user = messages
    parts = [{"type": "image_url", "image_url": {"url": jpeg_data_url(f, quality)}} for f in frames]
    return [*head, {"role": "user", "content": [*parts, {"type": "text", "text": user["content"]}]}]


class ChatEndpoint:
    """Chat completions with N requests in flight, a timeout and retries with backoff (module docstring)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str = "EMPTY",
        max_in_flight: int = 8,
        timeout: float = 120.0,
        retries: int = 3,
        backoff: float = 1.0,
        max_tokens: int = 256,
        temperature: float = 0.0,
        extra_body: dict | None = None,
        client: openai.OpenAI | None = None,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.client = client or openai.OpenAI(
            base_url=base_url, api_key=api_key, timeout=timeout, max_retries=0
        )
        self.model, self.max_in_flight, self.timeout = model, max_in_flight, timeout
        self.retries, self.backoff = retries, backoff
        self.max_tokens, self.temperature, self.extra_body = max_tokens, temperature, dict(extra_body or {})
        self.calls = 0  # requests sent, retries included
        self.bad_replies: dict[str, int] = {}  # "cut" / "empty" / "malformed" -> replies seen
        self._lock = threading.Lock()

    def complete(self, messages: list[dict]) -> str:
        """One chat completion's text, retried on transient errors and bad replies.

        Raises:
            openai.OpenAIError: The last error once the retries are spent, or a non-retryable one.
            BadReply: The last reply was still cut, empty or malformed.
        """
        for attempt in range(self.retries + 1):
            try:
                self.calls += 1
                reply = self.client.chat.completions.create(
                    model=self.model,
                    messages=messages,
                    max_tokens=self.max_tokens,
                    temperature=self.temperature,
                    timeout=self.timeout,
                    extra_body=self.extra_body or None,
                )
                choice = reply.choices[0]
                text = choice.message.content
                problem = reply_problem(text, cut=getattr(choice, "finish_reason", None) == "length")
                if problem is not None:
                    kind = problem_kind(problem)
                    self.bad_replies[kind] = (
                        self.bad_replies.get(kind, 0) + 1
                    )  # one key per thread: GIL-safe enough
                    raise BadReply(f"{problem} (max_tokens={self.max_tokens})" if kind == "cut" else problem)
                return text
            except (*RETRYABLE, BadReply):
                if attempt == self.retries:
                    raise
                time.sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable")

    def _safe(self, messages: list[dict]) -> str | Exception:
        try:
            return self.complete(messages)
        except Exception as e:  # noqa: BLE001 - returned, so one request fails one question
            return e

    def map(self, requests: list[list[dict]]) -> list[str | Exception]:
        """Every request's text (or exception), in order, ``max_in_flight`` at a time."""
        if not requests:
            return []
        with ThreadPoolExecutor(max_workers=min(self.max_in_flight, len(requests))) as pool:
            return list(pool.map(self._safe, requests))


class EndpointCaptioner:
    """Clip descriptions from a VLM endpoint; frames sent as JPEG images."""

    def __init__(
        self,
        endpoint: ChatEndpoint,
        jpeg_quality: int = 90,
        frames_per_clip: int = 8,
        frame_size: tuple[int, int] | None = None,
    ) -> None:
        self.endpoint, self.jpeg_quality = endpoint, jpeg_quality
        self.frames_per_clip = frames_per_clip
        self.frame_size = None if frame_size is None else (int(frame_size[0]), int(frame_size[1]))

    def describe(self, requests: list[tuple[list[dict], torch.Tensor]]) -> list[str | Exception]:
        return self.endpoint.map([with_frames(m, f, self.jpeg_quality) for m, f in requests])


class EndpointWriter:
    """Memories from a text (or VLM) endpoint."""

    def __init__(self, endpoint: ChatEndpoint) -> None:
        self.endpoint = endpoint

    def write(self, requests: list[list[dict]]) -> list[str | Exception]:
        return self.endpoint.map(requests)


def build_captioner(
    jpeg_quality: int = 90, frames_per_clip: int = 8, frame_size: list[int] | None = None, **endpoint
) -> EndpointCaptioner:
    """Hydra factory: ``ChatEndpoint`` keyword arguments, the JPEG quality, the frames sent per clip and their size."""
    return EndpointCaptioner(ChatEndpoint(**endpoint), jpeg_quality, frames_per_clip, frame_size)


def build_writer(**endpoint) -> EndpointWriter:
    """Hydra factory: ``ChatEndpoint`` keyword arguments."""
    return EndpointWriter(ChatEndpoint(**endpoint))
