"""PRPO rollouts: G samples per clip from one shared prefix, TCR rewards, PSP carried memories.

Per training example and clip t (method.md section 3):
  1. every kept memory (a *frontier* node) makes one prompt; ``generate_step`` prefills it once
     and samples G outputs from the shared KV cache;
  2. each output gets its TCR reward (``rewards.compute_rewards``) and its advantage within its
     group (example, clip, parent);
  3. PSP keeps K memories for the next clip, drawn by softmax(A / tau_t) over format-valid outputs
     (K = 1 is the paper's single carried state); none valid -> the parents' memories go on.
With ``psp=False`` (the paper's "GRPO" ablation) each example runs G independent chains, one sample
per chain per clip, each carrying its own memory; the group of clip t is the G chains.

Every output becomes a ``RolloutSample`` (prompt, clip frames, completion, advantage) for the update.
The engine (``videomem.memory.loop``) knows nothing of this; this module never touches gradients.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from videomem.data.types import VideoQA
from videomem.memory.loop import GenerationConfig, generate_step, run_memory_loop, step_messages
from videomem.memory.prompt import parse_output
from videomem.rl.advantages import (
    RolloutTree,
    group_advantages,
    group_ids_from_keys,
    psp_select,
    psp_temperature,
)
from videomem.rl.rewards import compute_rewards


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
class RewardConfig:
    """TCR (Eq. 1): R = alpha_t * answer + w_format * format - beta * max(0, mem_tokens - L_max)."""

    alpha: float = 1.0
    format_weight: float = 1.0
    beta: float = 0.005
    max_memory_tokens: int = 1024  # L_max
    tcr: bool = True  # False: terminal reward only
    memory_penalty: bool = True  # False: beta = 0 ("w/o MP")
    answer_weight_schedule: str = "constant"  # or "linear" (alpha * t / T)
    scale_advantages: bool = True  # z-score within the group (paper); False: mean-centred (Dr. GRPO)
    # Whose <answer> the answer term scores at a clip before the last. "provisional" (paper): the
    # sample's own a_t against the final gold. "continuation" (beyond the paper): the final a_T of the
    # loop continued greedily from the sample's memory M_t to the last clip, so a memory is paid for
    # the answer it leads to rather than for an early guess (README, "Scoring the memory").
    answer_target: str = "provisional"

    def __post_init__(self) -> None:
        if self.answer_target not in ("provisional", "continuation"):
            raise ValueError(
                f"answer_target must be 'provisional' or 'continuation', got {self.answer_target!r}"
            )

    def weights(self) -> dict[str, float]:
        return {
            "answer": self.alpha,
            "format": self.format_weight,
            "memory_length": self.beta if self.memory_penalty else 0.0,
        }


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


def _summary(
    tree: RolloutTree, memory_tokens: list[int], format_ok: list[bool], num_prompts: int
) -> dict[str, float]:
    nodes = tree.nodes
    if not nodes:
        return {}
    adv = torch.tensor([n.advantage for n in nodes], dtype=torch.float64)
    stats = {
        "reward/total": sum(n.reward for n in nodes) / len(nodes),
        "advantage/abs_mean": float(adv.abs().mean()),
        "advantage/std": float(adv.std(unbiased=False)),
        "advantage/zero_fraction": float((adv == 0).double().mean()),
        "format_valid": sum(format_ok) / len(format_ok),
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
    gen = GenerationConfig(cfg.max_new_tokens, True, cfg.temperature, cfg.top_p)
    tree = RolloutTree()
    samples: list[RolloutSample] = []
    memory_tokens: list[int] = []
    format_ok: list[bool] = []
    num_prompts = 0
    chains = 1 if cfg.psp else cfg.group_size
    per_prompt = cfg.group_size if cfg.psp else 1
    frontiers = [[_Frontier(None, "") for _ in range(chains)] for _ in qas]
    continued: dict[tuple[int, int, str], str | None] = {}  # the greedy chains' states, this rollout
    for t in range(max(qa.num_clips for qa in qas)):
        active = [i for i, qa in enumerate(qas) if t < qa.num_clips]
        prompts = [(i, f) for i in active for f in frontiers[i]]
        num_prompts += len(prompts)
        outputs = generate_step(
            policy,
            [qas[i] for i, _ in prompts],
            t,
            [f.memory for _, f in prompts],
            gen,
            num_samples=per_prompt,
            generator=generator,
            return_ids=True,
        )
        scored = None
        if reward.answer_target == "continuation" and reward.tcr:
            scored = _continuation_answers(policy, qas, t, prompts, outputs, cfg, continued)
        for i in active:
            qa = qas[i]
            rows = [(f, outs) for (j, f), outs in zip(prompts, outputs) if j == i]
            texts = [o for _, outs in rows for o, _ in outs]
            token_ids = [ids for _, outs in rows for _, ids in outs]
            parents = [f for f, outs in rows for _ in outs]
            parsed = [parse_output(o, len(qa.options)) for o in texts]
            extra = {}
            if scored is not None and t < qa.num_clips - 1:
                extra["answer_texts"] = [
                    scored[(i, p.memory if p.memory is not None else f.memory)]
                    for p, f in zip(parsed, parents)
                ]
            tokens = [policy.count_tokens(p.memory) if p.memory is not None else 0 for p in parsed]
            totals, terms = compute_rewards(
                texts,
                [qa.answer] * len(texts),
                weights=reward.weights(),
                clip_index=t,
                num_clips=qa.num_clips,
                tcr=reward.tcr,
                answer_weight_schedule=reward.answer_weight_schedule,
                memory_tokens=tokens,
                max_memory_tokens=reward.max_memory_tokens,
                num_options=len(qa.options),
                **extra,
            )
            # groups: siblings of one parent with PSP; all G chains of this clip without
            gids = group_ids_from_keys([id(f) if cfg.psp else 0 for f in parents])
            adv = group_advantages(
                torch.tensor(totals, dtype=torch.float64), gids, scale=reward.scale_advantages
            ).tolist()
            nodes = []
            messages_of = {id(f): step_messages(qa, t, f.memory, policy.system_prompt) for f, _ in rows}
            for k, (text, p, f) in enumerate(zip(texts, parsed, parents)):
                node = tree.add(
                    parent_id=f.node_id,
                    example_index=i,
                    clip_index=t,
                    memory_in=f.memory,
                    output=text,
                    memory_out=p.memory,
                    reward=totals[k],
                    advantage=adv[k],
                    reward_terms={name: vals[k] for name, vals in terms.items()},
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
                        adv[k],
                        f.node_id,
                        token_ids[k],
                    )
                )
            memory_tokens += tokens
            format_ok += [p.format_ok for p in parsed]
            frontiers[i] = _next_frontier(nodes, parsed, parents, cfg, t, generator, train_step)
    return Rollout(tree, samples, _summary(tree, memory_tokens, format_ok, num_prompts))


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
