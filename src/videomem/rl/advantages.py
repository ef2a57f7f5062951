"""Group advantages and Progressive State Propagation (PSP, method.md section 3, Eqs. 2-3).

- ``group_advantages``: A_i = (R_i - mean_g(R)) / (std_g(R) + eps) within each group g (step 3);
  ``step_advantages`` applies it to one example's outputs at one clip with PRPO's grouping.
- ``psp_temperature`` / ``psp_select``: which memories are carried to the next clip,
  p_j = softmax(A_j / tau_t) over format-valid samples, tau_t = tau_0 * gamma^t (step 4).
- ``RolloutNode`` / ``RolloutTree``: the rollout as a typed tree (node and parent ids), for logging
  and inspection. With K = 1 kept memory per clip it is the paper's single carried state;
  K > 1 is the project's tree extension; ``psp=false`` is G independent chains stored in the same tree.

Grouping: with PSP a group is (example, clip, parent) -- the G siblings sampled from one prompt;
without PSP it is (example, clip) across the G chains. This module does not generate, score or
optimise anything. Clip indices are 0-based; the paper's t is ``clip_index + 1``.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor


def group_advantages(rewards: Tensor, group_ids: Tensor, eps: float = 1e-6, scale: bool = True) -> Tensor:
    """Group-normalised advantages (method.md section 3, step 3).

    A_i = (R_i - mean_g R) / (std_g R + eps), with the POPULATION standard deviation
    std_g = sqrt(mean_g (R - mean_g R)^2) (divide by |g|, not |g| - 1), so rewards [1, 0, 0, 1]
    give [1, -1, -1, 1] up to eps. Groups of size 1 and groups whose rewards are all equal get exactly 0.
    With ``scale=False`` the advantage is only mean-centred, A_i = R_i - mean_g R (Dr. GRPO): the scale
    of the rewards then survives, so a per-clip reward weight (``answer_weight_schedule``) changes how
    much a clip counts, and one lucky sample among G wrong ones gets 1 - 1/G rather than sqrt(G - 1).

    Args:
        rewards: [N] rewards.
        group_ids: [N] long, any integer labels; equal labels form a group.
        eps: Added to the standard deviation.
        scale: Divide by the group standard deviation (the paper); False: mean-centred only.

    Returns:
        [N] advantages, same dtype as ``rewards``.
    """
    rewards = rewards.reshape(-1)  # [N]
    _, inverse = torch.unique(group_ids.reshape(-1), return_inverse=True)  # [N] in 0..K-1
    num_groups = int(inverse.max()) + 1 if inverse.numel() else 0
    zeros = torch.zeros(num_groups, dtype=rewards.dtype, device=rewards.device)  # [K]
    count = zeros.index_add(0, inverse, torch.ones_like(rewards))  # [K]
    mean = zeros.index_add(0, inverse, rewards) / count  # [K]
    centred = rewards - mean[inverse]  # [N]
    std = (zeros.index_add(0, inverse, centred**2) / count).sqrt()  # [K] population std
    r_max = zeros.scatter_reduce(0, inverse, rewards, "amax", include_self=False)  # [K]
    r_min = zeros.scatter_reduce(0, inverse, rewards, "amin", include_self=False)  # [K]
    informative = (count > 1) & (r_max > r_min)  # [K]
    advantages = centred / (std[inverse] + eps) if scale else centred  # [N]
    return torch.where(informative[inverse], advantages, torch.zeros_like(advantages))  # [N]


def group_ids_from_keys(keys: Sequence[Hashable]) -> Tensor:
    """[N] long group ids, numbered in order of first appearance of each distinct key."""
    index: dict[Hashable, int] = {}
    return torch.tensor([index.setdefault(key, len(index)) for key in keys], dtype=torch.long)


def step_advantages(
    rewards: Sequence[float], parent_ids: Sequence[int | None], *, psp: bool = True, scale: bool = True
) -> list[float]:
    """Advantages of one example's outputs at one clip step, grouped as PRPO groups them.

    With PSP a group is the siblings of one parent node (the G samples of one prompt); without PSP
    (independent chains) it is every output of the clip, whatever chain it continues.

    Args:
        rewards: [N] TCR totals of the step's outputs.
        parent_ids: [N] the node each output's prompt carried the memory of (None at the first clip).
        psp: Group by parent (PSP) or over the whole clip (chains).
        scale: As in ``group_advantages``.

    Returns:
        [N] advantages as floats.
    """
    keys = list(parent_ids) if psp else [0] * len(parent_ids)
    totals = torch.tensor(list(rewards), dtype=torch.float64)  # [N]
    return group_advantages(totals, group_ids_from_keys(keys), scale=scale).tolist()


def psp_temperature(
    clip_index: int,
    tau0: float = 1.0,
    gamma: float = 0.7,
    train_step: int | None = None,
    step_gamma: float | None = None,
    min_tau: float = 1e-3,
) -> float:
    """PSP temperature tau_t = tau_0 * gamma^t (Eq. 3), t = clip_index + 1 (paper's 1-based segment index).

    Optionally also annealed with training: times ``step_gamma ** train_step`` when both are given.
    Clamped below at ``min_tau``. Defaults are method.md's DECISION (tau_0 = 1.0, gamma = 0.7).
    """
    tau = tau0 * gamma ** (clip_index + 1)
    if train_step is not None and step_gamma is not None:
        tau *= step_gamma**train_step
    return max(tau, min_tau)


def psp_select(
    advantages: Tensor,
    valid: Tensor,
    *,
    tau: float,
    k: int = 1,
    generator: torch.Generator | None = None,
) -> list[int]:
    """Sample up to ``k`` distinct carried memories, p_j = softmax(A_j / tau) over valid j (Eq. 2).

    Sampling without replacement uses the Gumbel-top-k trick (exactly sequential sampling from the
    renormalised softmax), which stays well defined when tau -> 0 (then it is the arg-top-k of A).
    ``tau <= 0`` means deterministic top-k.

    Args:
        advantages: [G] advantages of the G siblings.
        valid: [G] bool, format-valid samples (the only eligible ones, method.md DECISION).
        tau: Temperature.
        k: How many to keep (K = 1 is the paper); fewer if fewer are valid.
        generator: Seeded generator for reproducible selection.

    Returns:
        Selected indices in selection order; ``[]`` when none is valid (the caller carries the parent's memory).
    """
    advantages = advantages.detach().reshape(-1).double().cpu()  # [G]
    valid = valid.reshape(-1).bool().cpu()  # [G]
    n = min(k, int(valid.sum()))
    if n <= 0:
        return []
    keys = advantages.clone() if tau <= 0 else advantages / tau  # [G]
    if tau > 0:
        u = torch.rand(advantages.shape, generator=generator, dtype=torch.float64)  # [G]
        keys = keys - torch.log(-torch.log(u.clamp(1e-12, 1 - 1e-12)))  # + Gumbel(0, 1)
    keys = keys.masked_fill(~valid, -math.inf)  # [G]
    return torch.topk(keys, n).indices.tolist()


@dataclass
class RolloutNode:
    """One sampled output of one clip step.

    Attributes:
        node_id: Index of this node in its tree.
        parent_id: Node whose ``memory_out`` is this node's ``memory_in``; None at the first clip.
        example_index: Which training example (video, question) of the batch.
        clip_index: 0-based clip step.
        memory_in: M_{t-1} shown in the prompt.
        output: The decoded completion.
        memory_out: Parsed M_t, or None when the output had no valid memory block.
        reward: TCR total reward.
        advantage: Group advantage.
        selected: True if PSP carried this node's memory to the next clip.
        reward_terms: Unweighted reward components by name, for logging.
    """

    node_id: int
    parent_id: int | None
    example_index: int
    clip_index: int
    memory_in: str
    output: str
    memory_out: str | None
    reward: float = 0.0
    advantage: float = 0.0
    selected: bool = False
    reward_terms: dict[str, float] = field(default_factory=dict)


@dataclass
class RolloutTree:
    """All nodes of a rollout batch (several examples), in creation order."""

    nodes: list[RolloutNode] = field(default_factory=list)

    def add(
        self,
        *,
        parent_id: int | None,
        example_index: int,
        clip_index: int,
        memory_in: str,
        output: str,
        memory_out: str | None,
        **extra,
    ) -> RolloutNode:
        """Append a node (``node_id`` = its position) and return it; ``extra`` sets reward etc."""
        if parent_id is not None and not 0 <= parent_id < len(self.nodes):
            raise ValueError(f"unknown parent {parent_id}")
        node = RolloutNode(
            len(self.nodes), parent_id, example_index, clip_index, memory_in, output, memory_out, **extra
        )
        self.nodes.append(node)
        return node

    def __len__(self) -> int:
        return len(self.nodes)

    def children(self, node_id: int) -> list[RolloutNode]:
        """Nodes sampled from the memory of ``node_id``."""
        return [n for n in self.nodes if n.parent_id == node_id]

    def roots(self, example_index: int | None = None) -> list[RolloutNode]:
        """First-clip nodes (no parent), optionally of one example."""
        return [n for n in self.nodes if n.parent_id is None and example_index in (None, n.example_index)]

    def to_dict(self) -> dict:
        """JSON-serialisable form: ``{"nodes": [node fields...]}``."""
        return {"nodes": [asdict(n) for n in self.nodes]}

    def to_text(self, max_chars: int = 80) -> str:
        """Indented tree, one line per node; ``*`` marks selected (carried) nodes."""

        def short(text: str | None) -> str:
            text = "None" if text is None else text.replace("\n", " ")
            return text if len(text) <= max_chars else text[: max_chars - 3] + "..."

        lines: list[str] = []
        kids: dict[int | None, list[RolloutNode]] = {}
        for n in self.nodes:
            kids.setdefault(n.parent_id, []).append(n)

        def visit(node: RolloutNode, depth: int) -> None:
            mark = "*" if node.selected else " "
            lines.append(
                f"{'  ' * depth}{mark}[{node.node_id}] ex{node.example_index} clip{node.clip_index} "
                f"R={node.reward:+.3f} A={node.advantage:+.3f} out={short(node.output)!r}"
            )
            for child in kids.get(node.node_id, []):
                visit(child, depth + 1)

        for root in kids.get(None, []):
            visit(root, 0)
        return "\n".join(lines)
