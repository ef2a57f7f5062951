"""An LLM judge of open-ended answers behind any OpenAI-compatible server (vLLM, SGLang, ``transformers serve``).

``Judge.score`` turns (question, reference, prediction) triples into scores: each triple not in the cache
becomes one chat request (the configured system and user prompts, the user prompt's ``{question}``,
``{reference}`` and ``{prediction}`` filled in), sent through the teacher's client
(``videomem.teacher.endpoint.ChatEndpoint``: ``max_in_flight`` requests at once, a per-request timeout,
retries with exponential backoff on transient errors). The reply must be exactly one verdict of the
configured scale (case and one trailing period aside; the default scale is correct 1, partly correct
0.5, wrong 0): anything else is unparsable. A request that fails or comes back unparsable scores the
caller's fallback (the rule score of ``videomem.memory.scoring``) instead, is counted and logged, and
never raises, so a judge outage slows nothing but the judge's share of the signal and never stops
training. Verdicts are cached by (question, reference, prediction), so a repeated answer costs one
request; failures are not cached (a later step asks again).

``take_stats`` returns the counts since the last call under ``judge/*`` names; the PRPO rollout logs
them as ``rollout/judge/*``. The client sits in ``teacher`` (the same layer as ``rl``), so the judge
and the teachers share one tested client.

Deliberately not here: which answers need a judge (``rl/rewards.py``, ``eval/metrics.py``), the rule.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence

from videomem.teacher.endpoint import ChatEndpoint

log = logging.getLogger(__name__)

DEFAULT_SCALE: dict[str, float] = {"correct": 1.0, "partly correct": 0.5, "wrong": 0.0}
STAT_NAMES = ("requests", "cache_hits", "errors", "unparsable", "fallbacks")


def parse_verdict(reply: str, scale: Mapping[str, float]) -> float | None:
    """The score of a reply that is exactly one verdict of ``scale`` (case, outer spaces and one trailing
    period aside), else None. ``scale`` keys must be lowercase."""
    text = reply.strip()
    if text.endswith("."):
        text = text[:-1].rstrip()
    return scale.get(text.lower())


class Judge:
    """Scores (question, reference, prediction) triples through a chat endpoint (module docstring).

    Args:
        endpoint: The client (N requests in flight, timeout, retries with backoff).
        system_prompt: The judge's instruction.
        user_prompt: One request's text, with ``{question}``, ``{reference}`` and ``{prediction}``.
        scale: Verdict -> score in [0, 1]; the reply must be one of these verdicts.
        cache_size: Verdicts kept (least recently used dropped first).
    """

    def __init__(
        self,
        endpoint: ChatEndpoint,
        system_prompt: str,
        user_prompt: str,
        scale: Mapping[str, float] | None = None,
        cache_size: int = 100_000,
    ) -> None:
        scale = dict(DEFAULT_SCALE if scale is None else scale)
        if not scale or any(not 0.0 <= float(v) <= 1.0 for v in scale.values()):
            raise ValueError(f"judge scale must map verdicts to scores in [0, 1], got {scale}")
        missing = [f for f in ("{question}", "{reference}", "{prediction}") if f not in user_prompt]
        if missing:
            raise ValueError(f"judge user_prompt lacks {missing}")
        self.endpoint, self.system_prompt, self.user_prompt = endpoint, system_prompt, user_prompt
        self.scale = {str(k).strip().lower(): float(v) for k, v in scale.items()}
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str, str], float] = OrderedDict()
        self._stats = dict.fromkeys(STAT_NAMES, 0)

    def messages(self, question: str, reference: str, prediction: str) -> list[dict]:
        """The chat request for one triple."""
        user = self.user_prompt.format(question=question, reference=reference, prediction=prediction)
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return [*system, {"role": "user", "content": user}]

    def score(self, items: Sequence[tuple[str, str, str]], fallback: Sequence[float]) -> list[float]:
        """One score per (question, reference, prediction): the judge's verdict, or ``fallback[i]`` where
        the judge failed. Never raises for a server error or a bad reply."""
        if len(fallback) != len(items):
            raise ValueError(f"{len(fallback)} fallback scores for {len(items)} items")
        keys = [(str(q), str(r), str(p)) for q, r, p in items]
        todo = [k for k in dict.fromkeys(keys) if k not in self._cache]
        self._stats["cache_hits"] += len(keys) - len(todo)  # answers that needed no request of their own
        verdicts: dict[tuple[str, str, str], float] = {}
        replies = self.endpoint.map([self.messages(*k) for k in todo]) if todo else []
        self._stats["requests"] += len(todo)
        for key, reply in zip(todo, replies):
            value = None if isinstance(reply, Exception) else parse_verdict(reply, self.scale)
            if value is None:
                self._failed(key, reply)
                continue
            verdicts[key] = value
            self._remember(key, value)
        out = []
        for key, rule in zip(keys, fallback):
            value = verdicts.get(key, self._cache.get(key))
            if value is None:
                self._stats["fallbacks"] += 1
                value = float(rule)
            out.append(value)
        return out

    def _remember(self, key: tuple[str, str, str], value: float) -> None:
        self._cache[key] = value
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _failed(self, key: tuple[str, str, str], reply: str | Exception) -> None:
        kind = "errors" if isinstance(reply, Exception) else "unparsable"
        self._stats[kind] += 1
        failures = self._stats["errors"] + self._stats["unparsable"]
        if failures == 1 or failures % 100 == 0:  # one line now and then, not one per answer
            what = f"{type(reply).__name__}: {reply}" if kind == "errors" else f"reply {reply!r:.80}"
            log.warning("judge failed (%s so far; the rule score stands in): %s", failures, what)

    def take_stats(self) -> dict[str, float]:
        """Counts since the last call, as ``judge/<name>``; then reset."""
        stats = {f"judge/{k}": float(v) for k, v in self._stats.items()}
        self._stats = dict.fromkeys(STAT_NAMES, 0)
        return stats


def build_judge(
    system_prompt: str,
    user_prompt: str,
    scale: Mapping[str, float] | None = None,
    cache_size: int = 100_000,
    api_key: str | None = None,
    **endpoint,
) -> Judge:
    """Hydra factory (``configs/judge/openai.yaml``): ``ChatEndpoint`` keyword arguments plus the prompts
    and the scale. ``api_key`` None reads ``$OPENAI_API_KEY`` here (so the key never enters a logged
    config), else ``EMPTY`` (local servers need none)."""
    key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "EMPTY")
    return Judge(ChatEndpoint(api_key=key, **endpoint), system_prompt, user_prompt, scale, cache_size)
