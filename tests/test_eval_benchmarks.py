"""Benchmark readers on fixture files in each published format, and the official scorers on worked examples."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from videomem.eval.benchmarks import (
    BENCHMARKS,
    egoschema,
    free_text_letter,
    longvideobench,
    lvbench,
    mlvu,
    videomme,
)
from videomem.eval.benchmarks.common import strip_option_prefix

FIX = Path(__file__).parent / "fixtures" / "benchmarks"


def _questions(videos) -> dict[str, dict]:
    return {q["qid"]: q for v in videos for q in v.questions}


def _rec(qid, pred, answer, categories=("c",), **keys) -> dict:
    return {"qid": qid, "pred": pred, "answer": answer, "categories": list(categories), **keys}


def test_benchmarks_dict_lists_the_five_modules():
    assert set(BENCHMARKS) == {"videomme", "lvbench", "mlvu", "longvideobench", "egoschema"}
    for name, mod in BENCHMARKS.items():
        assert name == mod.NAME and callable(mod.read_annotations) and callable(mod.official_score)


# ---- readers ------------------------------------------------------------------------------------------


def test_videomme_reads_parquet_and_json_alike(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = json.loads((FIX / "videomme" / "videomme.json").read_text())
    parquet = tmp_path / "videomme" / "test-00000-of-00001.parquet"
    parquet.parent.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    from_parquet = videomme.read_annotations(tmp_path)  # a directory: finds the parquet inside
    from_json = videomme.read_annotations(FIX / "videomme" / "videomme.json")
    assert [v.video_name for v in from_parquet] == ["vidgood1", "vidgood2", "vidmissing", "vidcorrupt"]
    assert [(v.video_name, v.questions) for v in from_parquet] == [
        (v.video_name, v.questions) for v in from_json
    ]
    q = _questions(from_parquet)
    assert q["001-2"]["options"] == [
        "A circle.",
        "A square.",
        "A triangle.",
        "A star.",
    ]  # only "B. " etc. stripped
    assert q["001-1"]["options"] == ["1.", "2.", "3.", "4."]
    assert q["001-1"]["answer"] == "C" and q["001-1"]["category"] == "Counting Problem"
    assert q["003-1"]["duration_group"] == "long" and "duration" not in q["003-1"]
    assert len(from_parquet[0].questions) == 2


def test_option_prefix_out_of_order_is_an_error():
    assert strip_option_prefix("(B) blue", 1) == "blue"
    assert strip_option_prefix("plain text", 0) == "plain text"
    with pytest.raises(ValueError):
        strip_option_prefix("C. three", 0)


def test_lvbench_splits_embedded_options_and_keeps_question_type_list():
    videos = lvbench.read_annotations(FIX / "lvbench")
    assert [v.video_name for v in videos] == ["sQPAt9Wt-Ik", "Ks9ZQw3bLmA"]
    assert videos[0].meta["video_type"] == "cartoon" and videos[0].meta["duration_minutes"] == 118.9
    q = _questions(videos)
    assert q["0"]["question"] == "What year appears in the opening caption of the video?"
    assert q["0"]["options"] == ["1636", "1716", "1134", "1326"] and q["0"]["answer"] == "D"
    assert q["1"]["question"] == "Why does the fox run away\nfrom the farm?"  # a two-line stem stays whole
    assert q["1"]["options"][0] == "It is chased by a dog"
    assert q["1"]["question_type"] == ["reasoning", "event understanding"] == q["1"]["categories"]
    assert q["1"]["category"] == "reasoning" and q["0"]["time_reference"] == "00:15-00:19"
    with pytest.raises(ValueError):
        lvbench.split_question("Q?\n(A) x\n(C) y")


def test_mlvu_maps_answer_text_to_letter_and_keeps_unanswerable_needle(tmp_path):
    videos = mlvu.read_annotations(FIX / "mlvu")  # the dataset root holding json/
    q = _questions(videos)
    assert sorted(q) == [
        "count_0",
        "needle_0",
        "needle_1",
        "plotQA_0",
        "plotQA_1",
        "sub_scene_0",
        "summary_0",
    ]
    assert q["plotQA_0"]["answer"] == "B" and q["plotQA_1"]["answer"] == "C"
    assert q["needle_0"]["answer"] == "C"
    assert q["needle_1"]["answer"] is None  # "A rabbit" is no candidate: unanswerable
    assert q["count_0"]["answer"] == "C"  # " 4 " matches "4" with whitespace ignored
    assert q["needle_1"]["task"] == "needle" == q["needle_1"]["category"]
    assert q["plotQA_0"]["duration"] == 246.0
    plot = next(v for v in videos if v.video_name == "movie101_66")
    assert plot.video_id == "1_plotQA-movie101_66" and plot.subdir == "1_plotQA" and len(plot.questions) == 2
    # the generation tasks: open-ended, the reference answer as text, scoring points kept as text
    summary, scene = q["summary_0"], q["sub_scene_0"]
    assert (summary["kind"], summary["options"], summary["answer"]) == ("open", [], "A man cooks dinner.")
    assert (
        scene["task"] == "sub_scene"
        and scene["scoring_points"] == "The hero lifts a rug\nA brass key is under it"
    )
    assert [v.video_id for v in videos if v.subdir == "9_summary"] == ["9_summary-summary_1"]


def _gen(qid, task, pred, answer, scores=None) -> dict:
    rec = _rec(qid, pred, answer, task=task, kind="open", question="Describe it.", scoring_points="points")
    return {**rec, "mlvu_scores": scores} if scores is not None else rec


def test_mlvu_generation_tasks_score_by_the_judge_or_by_the_rule_beside_m_avg():
    mc = [_rec("p0", "A", "A", task="plotQA"), _rec("p1", "B", "A", task="plotQA")]
    gen = [_gen("s0", "sub_scene", "a red key", "a red key"), _gen("s1", "sub_scene", None, "a key")]
    gen += [_gen("v0", "summary", "man cooks", "a man cooks dinner")]
    s = mlvu.official_score(mc + gen)  # no judge: the rule only, no G-Avg
    assert s["m_avg"] == s["score"] == 0.5 and s["n"] == 2  # M-Avg over the multiple-choice tasks only
    assert s["task/sub_scene/rule"] == pytest.approx(0.5) and s["task/summary/rule"] == pytest.approx(
        (0.8 + 2 / 3 + 0.8) / 3
    )
    assert "g_avg" not in s and "task/summary" not in s
    for r, scores in zip(gen, ([5, 4], [1, 1], [3, 5])):
        r["mlvu_scores"] = scores
    s = mlvu.official_score(mc + gen)
    assert s["task/sub_scene"] == pytest.approx(3 + 2.5) and s["task/sub_scene/score_accuracy"] == 3
    assert s["task/summary"] == 8 and s["g_avg"] == pytest.approx((5.5 + 8) / 2)
    with pytest.raises(ValueError, match="open-ended pred"):
        mlvu.official_score([_gen("x", "summary", 3, "a")])


@pytest.mark.parametrize(
    ("task", "reply", "scores"),
    [
        (
            "sub_scene",
            "Point 1 is met... {'score_accuracy': 4, 'score_relevance': 5, 'total_score': 9}",
            [4, 5],
        ),
        (
            "summary",
            'Fine. {"score_completeness": 2.5, "score_reliability": 3, "total_score": 5.5}',
            [2.5, 3],
        ),
        ("summary", "{'score_completeness': 3}", [3, 0]),  # a missing score counts 0, as in MLVU's tally
        ("sub_scene", "I cannot grade this.", [0, 0]),
    ],
)
def test_mlvu_judge_replies_parse_to_their_two_scores(task, reply, scores):
    assert mlvu.parse_judge_scores(task, reply) == scores


def test_mlvu_judge_requests_carry_the_rubric_the_points_and_the_answer():
    scene = mlvu.judge_messages(_gen("s", "sub_scene", None, "a key"))
    assert "score_accuracy" in scene[0]["content"] and scene[1]["content"].endswith(
        "Scoring points: points\nAnswer: "
    )
    summary = mlvu.judge_messages(_gen("v", "summary", "he cooks", "a man cooks"))
    assert summary[1]["content"] == "Standard summary: a man cooks\nSummary to grade: he cooks"


def test_longvideobench_int_answers_with_five_candidates():
    videos = longvideobench.read_annotations(FIX / "longvideobench" / "lvb_val.json")
    assert [v.video_name for v in videos] == ["86CxyhFV9MI", "cXnyKyaa-jY"]
    q = _questions(videos)
    assert len(q["86CxyhFV9MI_0"]["options"]) == 5 and q["86CxyhFV9MI_0"]["answer"] == "E"
    assert q["86CxyhFV9MI_1"]["answer"] == "B" and q["cXnyKyaa-jY_0"]["answer"] == "A"
    assert len(q["cXnyKyaa-jY_0"]["options"]) == 3
    assert q["86CxyhFV9MI_0"]["duration_group"] == 600 and q["86CxyhFV9MI_0"]["category"] == "TOS"


def test_egoschema_reads_only_the_answered_subset():
    videos = egoschema.read_annotations(FIX / "egoschema")
    assert [v.video_name for v in videos] == [
        "001934bb-81bd-4cd8-a574-0472ef3f6678",
        "0a1b2c3d-0000-4000-8000-000000000000",
    ]
    q = _questions(videos)
    assert q["001934bb-81bd-4cd8-a574-0472ef3f6678"]["answer"] == "B"
    assert q["0a1b2c3d-0000-4000-8000-000000000000"]["answer"] == "E"
    assert len(q["0a1b2c3d-0000-4000-8000-000000000000"]["options"]) == 5


# ---- scorers --------------------------------------------------------------------------------------------


def test_videomme_accuracy_per_duration():
    recs = [
        _rec("1", "A", "A", duration_group="short"),
        _rec("2", "B", "A", duration_group="short"),
        _rec("3", "C", "C", duration_group="medium"),
        _rec("4", "D", "A", duration_group="long"),
        _rec("5", None, "B", duration_group="long"),
    ]
    s = videomme.official_score(recs)
    assert s["duration/short"] == 0.5 and s["duration/medium"] == 1.0 and s["duration/long"] == 0.0
    assert s["score"] == s["accuracy"] == pytest.approx(2 / 5)
    assert s["parse_failure_rate"] == pytest.approx(1 / 5) and s["n"] == 5


def test_lvbench_counts_a_question_in_each_of_its_categories():
    recs = [
        _rec("1", "A", "A", ["KIR", "reasoning"]),
        _rec("2", "B", "C", ["KIR"]),
        _rec("3", "D", "D", ["reasoning", "EU"]),
        _rec("4", None, "A", ["EU"]),
    ]
    s = lvbench.official_score(recs)
    assert s["accuracy"] == 0.5
    assert s["category/KIR"] == 0.5 and s["category/reasoning"] == 1.0 and s["category/EU"] == 0.5
    assert s["parse_failure_rate"] == 0.25


def test_mlvu_macro_average_differs_from_pooled_and_unanswerable_is_wrong():
    recs = [_rec(f"p{i}", "A", "A", task="plotQA") for i in range(3)]
    recs += [_rec("n0", "B", "B", task="needle"), _rec("n1", None, None, task="needle")]
    s = mlvu.official_score(recs)
    assert s["task/plotQA"] == 1.0 and s["task/needle"] == 0.5
    assert s["m_avg"] == s["score"] == pytest.approx(0.75)  # (1.0 + 0.5) / 2
    assert s["accuracy"] == pytest.approx(0.8)  # 4 / 5 pooled
    assert s["unanswerable"] == 1


def test_longvideobench_overall_is_instance_weighted():
    recs = [_rec("a", "A", "A", duration_group=15), _rec("b", "B", "B", duration_group=15)]
    recs += [_rec("c", "C", "C", duration_group=3600), _rec("d", "A", "E", duration_group=3600)]
    recs += [_rec("e", None, "A", duration_group=3600)]
    s = longvideobench.official_score(recs)
    assert s["duration_group/15"] == 1.0 and s["duration_group/3600"] == pytest.approx(1 / 3)
    assert s["accuracy"] == pytest.approx(0.6)  # 3 / 5, not the mean of groups (0.667)
    assert list(k for k in s if k.startswith("duration_group/")) == [
        "duration_group/15",
        "duration_group/3600",
    ]


def test_egoschema_accuracy_and_record_checks():
    s = egoschema.official_score([_rec("a", "A", "A"), _rec("b", "E", "E"), _rec("c", "B", "C")])
    assert s["score"] == pytest.approx(2 / 3)
    assert math.isnan(egoschema.official_score([])["accuracy"])
    with pytest.raises(ValueError, match="duration_group"):
        videomme.official_score([_rec("a", "A", "A")])
    with pytest.raises(ValueError, match="pred"):
        egoschema.official_score([_rec("a", "answer A", "A")])


@pytest.mark.parametrize(
    ("text", "n", "expected"),
    [
        ("B", 4, "B"),
        ("(C) a red car", 4, "C"),
        ("The best answer is D.", 4, "D"),
        ("Answer: B", 4, "B"),
        ("Apples are red, so the answer is B", 4, "B"),  # the "A" of "Apples" is not standalone
        ("E", 4, None),  # not an option of a 4-option question
        ("E", 5, "E"),
        ("I am not sure.", 4, None),
        ("<answer>c</answer>", 4, None),  # lower case never counts
    ],
)
def test_free_text_letter(text, n, expected):
    assert free_text_letter(text, n) == expected
