"""Is the asked object's shape in a trained policy's hidden state? A linear probe on frozen features.

For each `shape` question this feeds a policy the clip where the asked object appears, with the oracle
memory of the clip before and the oracle output up to the shape word (teacher forcing), and takes the
final hidden state that predicts the shape word. It reports (1) how often the policy's own logits rank
the right shape word first among the four and (2) the test accuracy of a linear probe (logistic
regression, standardised features) trained on those hidden states from training questions, and (3)
the policy's distribution over the four shape words there (entropy, p(right), and how often G = 8
samples would all agree, i.e. give a group no learning signal). If the probe
is not much better than the policy, the shape is not in the representation, and an RL stage that only
reweights what the policy can already tell apart cannot lift `shape` (docs/notes/prpo_tuning.md).

    .venv/bin/python analysis/policy_shape_probe.py --ckpt logs/sft/latest   # ~2 min on 2 cores
"""

from __future__ import annotations

import argparse

import torch

from videomem.data.datamodule import EvalStream, VideoQADecoder
from videomem.data.shapes import SHAPES
from videomem.data.shards import expand_shards
from videomem.memory.loop import step_messages
from videomem.model.policy import Policy


def features(
    policy: Policy, shards: str, n: int, batch: int = 16
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Hidden states before the shape word [N, H], true shape indices [N], the policy's own accuracy.

    The hidden states are the final (normed) ones, so ``hidden @ lm_head.T`` are the policy's logits.
    """
    word_ids = [policy._encode(" " + s)[0] for s in SHAPES]  # " circle" etc. are single tokens
    xs, ys, hits, rows = [], [], 0, []

    def flush() -> None:
        nonlocal hits
        inputs = policy.build_inputs(
            [r[0] for r in rows], [r[1] for r in rows], completions=[r[2] for r in rows]
        )
        with torch.no_grad():
            hidden = policy.hidden_states(inputs)  # [B, L, H]
        for i, (*_, tail, label) in enumerate(rows):
            pos = inputs.input_ids.shape[1] - len(policy._encode(tail)) - 3  # [..., pos, word, *tail, im_end]
            assert int(inputs.input_ids[i, pos + 1]) == word_ids[label]
            xs.append(hidden[i, pos].float())
            ys.append(label)
            hits += int((hidden[i, pos] @ policy.lm_head_weight[word_ids].T).argmax()) == label
        rows.clear()

    decoder = VideoQADecoder(8, (56, 56), "decord")
    for qa in EvalStream(expand_shards(shards), decoder):
        if qa.category != "shape":
            continue
        t = next(k for k, m in enumerate(qa.memories) if "not seen" not in m)
        head, word = (p.strip() for p in qa.memories[t].split(":", 1))
        tail = f"</memory><answer>{qa.answer}</answer>"
        completion = f"<memory>{head}: {word}{tail}"
        messages = step_messages(qa, t, qa.memories[t - 1] if t else "", policy.system_prompt)
        rows.append((messages, qa.clips[t], completion, tail, SHAPES.index(word)))
        if len(rows) == batch:
            flush()
        if len(xs) + len(rows) >= n:
            break
    if rows:
        flush()
    return torch.stack(xs), torch.tensor(ys), hits / len(ys)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ckpt", default="logs/sft/latest")
    p.add_argument("--root", default="data/synthetic")
    p.add_argument("--train", type=int, default=1500, help="training questions for the probe")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    policy = Policy.from_pretrained(args.ckpt).eval()
    x_tr, y_tr, own_tr = features(policy, f"{args.root}/train", args.train)
    x_te, y_te, own_te = features(policy, f"{args.root}/test", 10**9)
    with torch.no_grad():
        logits_te = x_te @ policy.lm_head_weight.T  # the policy's own logits, before standardising
    mean, std = x_tr.mean(0), x_tr.std(0) + 1e-6
    x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
    head = torch.nn.Linear(x_tr.shape[1], len(SHAPES))
    opt = torch.optim.Adam(head.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(args.steps):
        loss = torch.nn.functional.cross_entropy(head(x_tr), y_tr)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        probe_tr = (head(x_tr).argmax(1) == y_tr).float().mean().item()
        probe_te = (head(x_te).argmax(1) == y_te).float().mean().item()
    print(f"{len(y_tr)} train / {len(y_te)} test shape questions (chance {1 / len(SHAPES):.2f})")
    print(f"policy's own shape word: train {own_tr:.3f}  test {own_te:.3f}")
    print(f"linear probe on its hidden state: train {probe_tr:.3f}  test {probe_te:.3f}")
    # How much RL has to explore: the policy's distribution over the four shape words (renormalised).
    word_ids = [policy._encode(" " + s)[0] for s in SHAPES]
    probs = torch.softmax(logits_te, -1)[:, word_ids]
    q = probs / probs.sum(1, keepdim=True)  # [N, 4]
    entropy = -(q * q.clamp_min(1e-12).log()).sum(1).mean().item()
    print(
        f"policy's shape-word distribution (test): mass {probs.sum(1).mean().item():.3f}, entropy "
        f"{entropy:.3f} nats (uniform {torch.log(torch.tensor(4.0)).item():.3f}), p(right) "
        f"{q[torch.arange(len(y_te)), y_te].mean().item():.3f}, P(8 samples agree) "
        f"{(q**8).sum(1).mean().item():.4f}"
    )


if __name__ == "__main__":
    main()
