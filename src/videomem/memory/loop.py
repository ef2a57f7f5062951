"""The clip-by-clip memory loop (method.md section 1), shared by inference, evaluation and RL.

For each (video, question) the carried memory starts empty; at clip t the policy sees the question,
the memory M_{t-1} and the frames of clip t only, and writes ``<memory>M_t</memory><answer>a_t</answer>``.
M_t replaces M_{t-1}; a step without a valid memory block keeps M_{t-1} (method.md DECISION 6).

``generate_step`` is the engine: messages + frames -> G sampled texts per prompt, through
``Policy.generate`` (one prefill per prompt, the KV cache shared by the G samples). It knows nothing
of rewards, advantages or optimisers: PRPO drives it from ``videomem.rl``/``videomem.train``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from videomem.data.types import VideoQA
from videomem.memory.prompt import ParsedOutput, build_messages, parse_output


@dataclass
class GenerationConfig:
    """Decoding settings of one clip step.

    The commands build it from the decode group (``configs/decode/``: ``eval`` for the greedy loops,
    ``rollout`` for PRPO's samples), whose ``max_new_tokens`` covers the longest memory the policy
    may write plus its tags and answer; the defaults here serve direct calls of the library.
    """

    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0


@dataclass
class StepRecord:
    """One clip step of one question.

    Attributes:
        memory_in: Memory M_{t-1} shown in the prompt.
        output: Generated text.
        parsed: ``parse_output(output)``.
        memory_out: Memory carried to the next clip (M_t, or M_{t-1} when the output had none).
        memory_tokens: Length of ``memory_out`` in policy tokens (method.md section 1.7).
    """

    memory_in: str
    output: str
    parsed: ParsedOutput
    memory_out: str
    memory_tokens: int


@dataclass
class LoopResult:
    """The whole loop of one question: one ``StepRecord`` per clip."""

    qa: VideoQA
    steps: list[StepRecord] = field(default_factory=list)

    @property
    def answers(self) -> list[str | None]:
        """Provisional answers a_1..a_T (None where unparsable)."""
        return [s.parsed.answer for s in self.steps]

    @property
    def prediction(self) -> str | None:
        """The final answer a_T."""
        return self.steps[-1].parsed.answer if self.steps else None


def step_messages(qa: VideoQA, clip_index: int, memory: str, system_prompt: str | None = None) -> list[dict]:
    """Chat messages for clip ``clip_index`` of ``qa`` with carried ``memory``.

    ``system_prompt``: None uses the default instruction, "" none (pass ``policy.system_prompt``).
    """
    span = qa.spans[clip_index] if qa.spans else None
    return build_messages(qa.question, qa.options, memory, clip_index, qa.num_clips, span, system_prompt)


def generate_step(
    policy,
    qas: list[VideoQA],
    clip_index: int,
    memories: list[str],
    gen: GenerationConfig,
    *,
    num_samples: int = 1,
    generator: torch.Generator | None = None,
    return_ids: bool = False,
) -> list[list[str]] | list[list[tuple[str, list[int]]]]:
    """Sample ``num_samples`` outputs for clip ``clip_index`` of every question.

    Args:
        policy: A ``videomem.model.policy.Policy``.
        qas: Questions, one prompt each.
        clip_index: 0-based clip to show; only that clip's frames enter the prompt.
        memories: Memory M_{t-1} per question.
        gen: Decoding settings.
        num_samples: G outputs per prompt, decoded from one shared prefill.
        generator: Seeded RNG for sampling.
        return_ids: Also return each completion's token ids as sampled (PRPO trains on those).

    Returns:
        ``[len(qas)][num_samples]`` decoded completions, or ``(text, ids)`` pairs with ``return_ids``.
    """
    system = getattr(policy, "system_prompt", None)  # the instruction the policy was trained with
    messages = [step_messages(qa, clip_index, m, system) for qa, m in zip(qas, memories)]
    videos = [qa.clips[clip_index] for qa in qas]
    inputs = policy.build_inputs(messages, videos).to(policy.model.device)
    ids = policy.generate(
        inputs,
        num_samples=num_samples,
        max_new_tokens=gen.max_new_tokens,
        do_sample=gen.do_sample,
        temperature=gen.temperature,
        top_p=gen.top_p,
        generator=generator,
    )
    if return_ids:
        return [[(policy.decode(s), s) for s in row] for row in ids]
    return [[policy.decode(s) for s in row] for row in ids]


def advance(policy, memory_in: str, output: str, num_options: int) -> StepRecord:
    """Parse one output and decide the memory to carry (fallback: keep ``memory_in``)."""
    parsed = parse_output(output, num_options)
    memory_out = parsed.memory if parsed.memory is not None else memory_in
    return StepRecord(memory_in, output, parsed, memory_out, policy.count_tokens(memory_out))


@torch.inference_mode()
def run_memory_loop(
    policy,
    qas: list[VideoQA],
    gen: GenerationConfig | None = None,
    *,
    memory_off: bool = False,
    generator: torch.Generator | None = None,
    start_clip: int = 0,
    memories: list[str] | None = None,
) -> list[LoopResult]:
    """Run the sequential loop over a batch of questions (videos may differ in clip count).

    Args:
        policy: The policy.
        qas: Questions with their clips.
        gen: Decoding settings (greedy by default).
        memory_off: Control: every carried memory is replaced by empty text, so the policy sees
            only the current clip. Accuracy that survives this does not come from the memory.
        generator: RNG when sampling.
        start_clip: Resume the loop at this 0-based clip (the steps recorded start there).
        memories: The memory carried into ``start_clip``, per question (default: empty).

    Returns:
        One ``LoopResult`` per question, in order.
    """
    gen = gen or GenerationConfig()
    results = [LoopResult(qa) for qa in qas]
    memories = list(memories) if memories is not None else ["" for _ in qas]
    if len(memories) != len(qas):
        raise ValueError(f"{len(memories)} memories for {len(qas)} questions")
    for t in range(start_clip, max((qa.num_clips for qa in qas), default=0)):
        active = [i for i, qa in enumerate(qas) if t < qa.num_clips]
        shown = ["" if memory_off else memories[i] for i in active]
        outputs = generate_step(policy, [qas[i] for i in active], t, shown, gen, generator=generator)
        for i, mem_in, outs in zip(active, shown, outputs):
            record = advance(policy, mem_in, outs[0], len(qas[i].options))
            results[i].steps.append(record)
            memories[i] = record.memory_out
    return results
