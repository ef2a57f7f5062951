"""``make eval`` under torchrun on the CPU (gloo): the same JSON as one process, written once by rank 0.

One node x 2 ranks, and 2 nodes x 1 rank (two launchers on 127.0.0.1, as a cluster's nodes would be),
each against a single-process run of the same policy on the same shards; batches of 2 questions, so
a video's questions are split between ranks, and a ``limit`` that cuts a video. Each run starts its
own processes (about 15 s each on 2 busy cores), hence the ``distributed`` marker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serving import free_port

pytestmark = pytest.mark.distributed

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
TIMEOUT_S = 300


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny random policy and 4 synthetic test videos (12 questions) in 3 shards."""
    from videomem.data.synthetic import generate_dataset
    from videomem.model.policy import build_policy

    root = tmp_path_factory.mktemp("dist")
    build_policy(
        "qwen2_5_vl", tiny={"hidden_size": 64, "num_hidden_layers": 1}, system_prompt=""
    ).save_pretrained(root / "policy")
    generate_dataset(root / "data", splits={"test": 4}, num_clips=2, seed=3, workers=1, max_per_shard=2)
    return root / "policy", root / "data" / "test"


def eval_args(setup, run_dir: Path, *extra: str) -> list[str]:
    policy, shards = setup
    return [
        "-m",
        "videomem.run_eval",
        f"ckpt={policy}",
        f"shards={shards}",
        "batch_size=2",
        "frame_size=[28,28]",
        "frames_per_clip=2",
        "decode.eval.max_new_tokens=6",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]


def torchrun(nodes: int, per_node: int, args: list[str]) -> None:
    """``torchrun`` with ``nodes`` launchers (node ranks 0..nodes-1) on the loopback address."""
    port = free_port()
    launch = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nnodes={nodes}",
        f"--nproc-per-node={per_node}",
    ]
    launch += ["--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=eval"]
    procs = [
        subprocess.Popen(
            [*launch, f"--node-rank={n}", *args], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for n in range(nodes)
    ]
    outputs = [p.communicate(timeout=TIMEOUT_S)[0].decode() for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]


@pytest.fixture(scope="module")
def single(setup, tmp_path_factory):
    """The single-process eval.json per ``limit`` (run once, compared with every layout)."""
    runs: dict[str, dict] = {}

    def get(limit: str) -> dict:
        if limit not in runs:
            run_dir = tmp_path_factory.mktemp("one")
            cmd = [sys.executable, *eval_args(setup, run_dir, f"limit={limit}")]
            subprocess.run(cmd, env=ENV, check=True, capture_output=True, timeout=TIMEOUT_S)
            runs[limit] = {"json": json.loads((run_dir / "eval.json").read_text()), "dir": run_dir}
        return runs[limit]

    return get


@pytest.mark.parametrize(("nodes", "per_node", "limit"), [(1, 2, "null"), (1, 2, "5"), (2, 1, "5")])
def test_ranks_give_the_json_of_one_process(setup, single, tmp_path, nodes, per_node, limit) -> None:
    one = single(limit)
    torchrun(nodes, per_node, eval_args(setup, tmp_path, f"limit={limit}"))
    ranks = json.loads((tmp_path / "eval.json").read_text())
    assert one["json"]["n"] == (16 if limit == "null" else 5)  # 4 videos x (3 multiple-choice + 1 open-ended)
    assert [r["qid"] for r in ranks["records"]] == [r["qid"] for r in one["json"]["records"]]
    assert ranks == one["json"]  # records, metrics, skips and settings
    assert (tmp_path / "eval.md").read_text() == (one["dir"] / "eval.md").read_text()
    assert len(list((tmp_path / "tensorboard").iterdir())) == 1  # rank 0 alone wrote TensorBoard
