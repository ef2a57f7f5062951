"""PRPO rollouts: G samples per clip from one shared prefix, TCR rewards, PSP carried memories.

Per clip t, ``prpo_rollout`` runs these steps (method.md section 3), one function each:
  1. ``_sample``: every kept memory (a *frontier* node) makes one prompt; ``generate_step``
     prefills it once and samples G outputs from the shared KV cache;
  2. ``_continuation_answers`` (only with ``answer_target=continuation``): the greedy loop
     continued from each distinct written memory, whose last answer the answer term then scores;
  3. per example, ``_per_example`` parses the outputs, ``_score`` gives each its TCR reward
     (``rewards.compute_rewards``) and ``advantages.step_advantages`` its advantage within its group
     (the siblings of one parent);
  4. ``_record`` adds them to the tree and to the update samples;
  5. ``_next_frontier``: PSP keeps K memories for the next clip, drawn by softmax(A / tau_t) over
     format-valid outputs (K = 1 is the paper's single carried state); none valid -> the parents'
     memories go on.
With ``psp=False`` (the paper's "GRPO" ablation) each example runs G independent chains, one sample
per chain per clip, each carrying its own memory; the group of clip t is the G chains.

Every output becomes a ``RolloutSample`` (prompt, clip frames, completion, advantage) for the update;
one that met no stop token within ``max_new_tokens`` is marked ``truncated`` (the update filters it,
docs/method.md section 3). The whole rollout runs inside ``shared_vision``: a clip goes through the
vision tower once however many prompts and continuation chains show it. The engine
(``videomem.memory.loop``, ``Policy.generate``) knows nothing of this; this module never touches
gradients.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch

from videomem.data.types import VideoQA
from videomem.memory.loop import GenerationConfig, generate_step, run_memory_loop, step_messages
from videomem.memory.prompt import ParsedOutput, parse_output
from videomem.model.features import shared_vision
from videomem.rl.advantages import RolloutNode, RolloutTree, psp_select, psp_temperature, step_advantages
from videomem.rl.rewards import RewardConfig, compute_rewards


@dataclass
class RolloutConfig:
    """How to sample. Defaults are the paper's where it gives them (G=8, K=1) and method.md's DECISIONs."""

    group_size: int = 8  # G
    keep: int = 1  # K memories carried per clip (1 = paper)
    psp: bool = True  # False: G independent chains ("GRPO" ablation)
    tau0: float = 1.0
    gamma: float = 0.7
    step_gamma: float | None = None  # extra annealing of tau with the training step
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0


@dataclass
class RolloutSample:
    """One (prompt_t, O_i, A_i) kept for the policy update."""

    node_id: int
    example_index: int
    clip_index: int
    messages: list[dict]
    video: torch.Tensor  # [F, H, W, 3] uint8, this clip's frames
    completion: str
    advantage: float
    parent_id: int | None = None  # the node whose memory the prompt carries: siblings share the prompt
    completion_ids: list[int] | None = None  # the tokens as sampled (the update trains these, not a
    # re-tokenisation of ``completion``, which a BPE tokenizer may split differently)
    truncated: bool = False  # cut at max_new_tokens, no stop token: it never ended (overlong filtering)


@dataclass
class Rollout:
    """A batch's rollout: the tree (for inspection and logging), the update samples, summary stats."""

    tree: RolloutTree
    samples: list[RolloutSample] = field(default_factory=list)
    stats: dict[str, float] = field(default_factory=dict)


@dataclass
class _Frontier:
    node_id: int | None  # parent node (None before the first clip)
    memory: str


@dataclass
class _Step:
    """One example's outputs at one clip (G per frontier memory), parsed and scored.

    Attributes:
        parents: [N] the frontier each output was sampled from (siblings share one).
        texts: [N] decoded outputs.
        token_ids: [N] their token ids as sampled.
        truncated: [N] cut at the token budget without a stop token.
        parsed: [N] ``parse_output`` of each text.
        memory_tokens: [N] length of each written memory in policy tokens (0 when none parsed).
        totals: [N] TCR rewards.
        terms: Reward term name -> [N] raw values.
        advantages: [N] group advantages.
    """

    parents: list[_Frontier]
    texts: list[str]
    token_ids: list[list[int]]
    truncated: list[bool]
    parsed: list[ParsedOutput]
    memory_tokens: list[int]
    totals: list[float] = field(default_factory=list)
    terms: dict[str, list[float]] = field(default_factory=dict)
    advantages: list[float] = field(default_factory=list)


@torch.no_grad()
def prpo_rollout(
    policy,
    qas: list[VideoQA],
    cfg: RolloutConfig,
    reward: RewardConfig,
    *,
    generator: torch.Generator | None = None,
    train_step: int | None = None,
) -> Rollout:
    """Sample a PSP rollout tree (or independent chains) for a batch of questions.

    Per clip: sample G outputs per carried memory, score the continuations (if the answer target
    asks for it), then per example: TCR rewards, group advantages, tree nodes and update samples,
    and the memories carried on. The random draws come in that order: all sampling of a clip, then
    PSP selection example by example.

    Args:
        policy: The policy (``videomem.model.policy.Policy``), in eval mode.
        qas: Training questions with gold answers.
        cfg: Sampling settings.
        reward: TCR settings.
        generator: Seeded RNG for sampling and PSP selection.
        train_step: Current optimizer step (for the optional tau annealing).

    Returns:
        The rollout: tree, update samples (T*G per example with K=1) and stats.
    """
    tree, samples, steps = RolloutTree(), [], []
    chains = 1 if cfg.psp else cfg.group_size
    frontiers = [[_Frontier(None, "") for _ in range(chains)] for _ in qas]
    continued: dict[tuple[int, int, str], str | None] = {}  # the greedy chains' states, this rollout
    num_prompts = 0
    engine = getattr(
        policy, "decode_stats", None
    )  # the real policy's engine counts (a scripted one has none)
    before = copy.copy(engine)
    with shared_vision(policy) if engine is not None else nullcontext():
        for t in range(max(qa.num_clips for qa in qas)):
            prompts = [(i, f) for i, qa in enumerate(qas) if t < qa.num_clips for f in frontiers[i]]
            num_prompts += len(prompts)
            outputs = _sample(policy, qas, t, prompts, cfg, generator)
            scored = None
            if reward.answer_target == "continuation" and reward.tcr:
                scored = _continuation_answers(policy, qas, t, prompts, outputs, cfg, continued)
            for i, step in _per_example(policy, qas, prompts, outputs, cfg.max_new_tokens):
                step.totals, step.terms = _score(step, qas[i], i, t, reward, scored)
                step.advantages = step_advantages(
                    step.totals, [f.node_id for f in step.parents], psp=cfg.psp, scale=reward.scale_advantages
                )
                nodes = _record(tree, samples, policy, qas[i], i, t, step)
                frontiers[i] = _next_frontier(nodes, step.parsed, step.parents, cfg, t, generator, train_step)
                steps.append(step)
    stats = _summary(tree, steps, num_prompts)
    if engine is not None and stats:
        stats.update(_engine_summary(before, engine, sum(qa.num_clips for qa in qas)))
    if reward.judge is not None:  # this rollout's judge requests, cache hits and failures: rollout/judge/*
        stats.update(reward.judge.take_stats())
    return Rollout(tree, samples, stats)


def _sample(policy, qas: list[VideoQA], t: int, prompts, cfg: RolloutConfig, generator):
    """G outputs (text, ids) per prompt (one per chain without PSP), from one shared prefill each."""
    return generate_step(
        policy,
        [qas[i] for i, _ in prompts],
        t,
        [f.memory for _, f in prompts],
        GenerationConfig(cfg.max_new_tokens, True, cfg.temperature, cfg.top_p),
        num_samples=cfg.group_size if cfg.psp else 1,
        generator=generator,
        return_ids=True,
    )


def _per_example(
    policy, qas: list[VideoQA], prompts, outputs, max_new_tokens: int
) -> Iterator[tuple[int, _Step]]:
    """The clip's outputs regrouped by example (in batch order), parsed, memory lengths counted; an
    output of ``max_new_tokens`` ids met no stop token (the engine strips the stop token)."""
    for i in dict.fromkeys(i for i, _ in prompts):
        rows = [(f, outs) for (j, f), outs in zip(prompts, outputs) if j == i]
        texts = [o for _, outs in rows for o, _ in outs]
        parsed = [parse_output(o, len(qas[i].options)) for o in texts]
        step = _Step(
            parents=[f for f, outs in rows for _ in outs],
            texts=texts,
            token_ids=[ids for _, outs in rows for _, ids in outs],
            truncated=[len(ids) >= max_new_tokens for _, outs in rows for _, ids in outs],
            parsed=parsed,
            memory_tokens=[policy.count_tokens(p.memory) if p.memory is not None else 0 for p in parsed],
        )
        yield i, step


def _score(
    step: _Step,
    qa: VideoQA,
    i: int,
    t: int,
    reward: RewardConfig,
    scored: dict[tuple[int, str], str | None] | None,
) -> tuple[list[float], dict[str, list[float]]]:
    """TCR rewards of example ``i``'s outputs at clip t (Eq. 1): ``(totals, raw terms)``.

    ``scored``: the continuations' last outputs (``answer_target=continuation``), else None.
    """
    extra = {}
    if scored is not None and t < qa.num_clips - 1:
        extra["answer_texts"] = [
            scored[(i, p.memory if p.memory is not None else f.memory)]
            for p, f in zip(step.parsed, step.parents)
        ]
    return compute_rewards(
        step.texts,
        [qa.answer] * len(step.texts),
        weights=reward.weights(),
        clip_index=t,
        num_clips=qa.num_clips,
        tcr=reward.tcr,
        answer_weight_schedule=reward.answer_weight_schedule,
        memory_tokens=step.memory_tokens,
        max_memory_tokens=reward.max_memory_tokens,
        num_options=len(qa.options),
        question=qa.question,
        judge=reward.judge,
        **extra,
    )


def _record(
    tree: RolloutTree, samples: list[RolloutSample], policy, qa: VideoQA, i: int, t: int, step: _Step
) -> list[RolloutNode]:
    """Add the step's outputs to the tree and to the update samples; return the new nodes.

    Siblings share one messages object (their common prompt).
    """
    prompts = {id(f): f for f in step.parents}
    messages_of = {key: step_messages(qa, t, f.memory, policy.system_prompt) for key, f in prompts.items()}
    nodes = []
    for k, (text, p, f) in enumerate(zip(step.texts, step.parsed, step.parents)):
        node = tree.add(
            parent_id=f.node_id,
            example_index=i,
            clip_index=t,
            memory_in=f.memory,
            output=text,
            memory_out=p.memory,
            reward=step.totals[k],
            advantage=step.advantages[k],
            reward_terms={name: vals[k] for name, vals in step.terms.items()},
        )
        nodes.append(node)
        samples.append(
            RolloutSample(
                node.node_id,
                i,
                t,
                messages_of[id(f)],
                qa.clips[t],
                text,
                step.advantages[k],
                parent_id=f.node_id,
                completion_ids=step.token_ids[k],
                truncated=step.truncated[k],
            )
        )
    return nodes


def _summary(tree: RolloutTree, steps: list[_Step], num_prompts: int) -> dict[str, float]:
    """Rollout statistics for logging: mean reward and terms, advantage spread, format, memory length."""
    nodes = tree.nodes
    if not nodes:
        return {}
    format_ok = [p.format_ok for step in steps for p in step.parsed]
    memory_tokens = [n for step in steps for n in step.memory_tokens]
    adv = torch.tensor([n.advantage for n in nodes], dtype=torch.float64)
    stats = {
        "reward/total": sum(n.reward for n in nodes) / len(nodes),
        "advantage/abs_mean": float(adv.abs().mean()),
        "advantage/std": float(adv.std(unbiased=False)),
        "advantage/zero_fraction": float((adv == 0).double().mean()),
        "format_valid": sum(format_ok) / len(format_ok),
        "truncated": sum(t for step in steps for t in step.truncated) / len(format_ok),
        "memory_tokens": sum(memory_tokens) / len(memory_tokens),
        "prompts": float(num_prompts),
        "samples": float(len(nodes)),
    }
    for name in nodes[0].reward_terms:
        stats[f"reward/{name}"] = sum(n.reward_terms[name] for n in nodes) / len(nodes)
    final_clip: dict[int, int] = {}
    for n in nodes:
        final_clip[n.example_index] = max(final_clip.get(n.example_index, 0), n.clip_index)
    last = [n for n in nodes if n.clip_index == final_clip[n.example_index]]
    stats["final_answer_accuracy"] = sum(n.reward_terms.get("answer", 0.0) for n in last) / len(last)
    return stats


def _engine_summary(before, after, clips: int) -> dict[str, float]:
    """What the decode engine did over the rollout (``Policy.decode_stats``): the share of decode
    row-steps finished samples no longer cost, and vision encodes per clip of the batch (at most 1:
    every prompt row and continuation chain that shows a clip shares its one encode), with the counts
    they divide by (``decode/row_steps``, ``decode/clips``), so ranks' ratios combine as sums."""
    computed = after.row_steps - before.row_steps
    saved = after.row_steps_saved - before.row_steps_saved
    return {
        "decode/row_steps_saved": saved / max(1, computed + saved),
        "decode/vision_encodes_per_clip": (after.vision_encodes - before.vision_encodes) / max(1, clips),
        "decode/row_steps": float(computed + saved),
        "decode/clips": float(clips),
    }


def _continuation_answers(
    policy,
    qas: list[VideoQA],
    t: int,
    prompts,
    outputs,
    cfg: RolloutConfig,
    continued: dict[tuple[int, int, str], str | None] | None = None,
) -> dict[tuple[int, str], str | None]:
    """(example, carried memory M_t) -> the last output of the loop continued greedily from clip t+1.

    Siblings that wrote the same memory share one continuation, so an example costs one greedy chain
    per distinct memory, batched over the whole batch; examples at their last clip need none.

    ``continued`` (one per rollout: the weights do not change within it) maps every state a greedy
    chain passed through, (example, clip, memory shown), to that chain's last output. A greedy step
    depends on nothing but its clip and the memory shown, so a chain resumed from a visited state
    would end where the visiting one did: a sample at clip t+1 that writes the memory the greedy chain
    from M_t wrote there (most samples, once the evidence is in the memory) needs no chain of its own.
    """
    continued = {} if continued is None else continued
    keys: dict[tuple[int, str], None] = {}
    for (i, f), outs in zip(prompts, outputs):
        if t + 1 >= qas[i].num_clips:
            continue
        for text, _ in outs:
            memory = parse_output(text, len(qas[i].options)).memory
            keys.setdefault((i, memory if memory is not None else f.memory), None)
    todo = [key for key in keys if (key[0], t + 1, key[1]) not in continued]
    if todo:
        greedy = GenerationConfig(cfg.max_new_tokens, False)
        results = run_memory_loop(
            policy, [qas[i] for i, _ in todo], greedy, start_clip=t + 1, memories=[m for _, m in todo]
        )
        for (i, memory), r in zip(todo, results):
            last = r.steps[-1].output if r.steps else None
            continued[(i, t + 1, memory)] = last
            for k, step in enumerate(r.steps[:-1]):  # the chain then showed step.memory_out at t+2+k
                continued.setdefault((i, t + 2 + k, step.memory_out), last)
    return {key: continued[(key[0], t + 1, key[1])] for key in keys}


def _next_frontier(
    nodes, parsed, parents, cfg: RolloutConfig, t: int, generator, train_step
) -> list[_Frontier]:
    """Memories carried to clip t+1 (method.md section 3, step 4)."""
    if not cfg.psp:  # each chain carries its own memory (or its previous one when invalid)
        return [
            _Frontier(n.node_id, p.memory if p.memory is not None else f.memory)
            for n, p, f in zip(nodes, parsed, parents)
        ]
    valid = torch.tensor([p.format_ok for p in parsed])
    adv = torch.tensor([n.advantage for n in nodes])
    tau = psp_temperature(t, cfg.tau0, cfg.gamma, train_step, cfg.step_gamma)
    chosen = psp_select(adv, valid, tau=tau, k=cfg.keep, generator=generator)
    if not chosen:  # no valid memory: the parents' memories go on
        unique = list({id(f): f for f in parents}.values())
        return unique
    for j in chosen:
        nodes[j].selected = True
    return [_Frontier(nodes[j].node_id, parsed[j].memory) for j in chosen]
