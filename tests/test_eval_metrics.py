"""MemoryQAMetrics on hand-built predictions with worked numbers."""

from __future__ import annotations

import math

import pytest

from videomem.data.types import VideoQA
from videomem.eval.evaluate import result_text
from videomem.eval.metrics import MemoryQAMetrics, flatten_metrics, update_metrics
from videomem.memory.loop import LoopResult, advance

# Three questions, T = 3 clips.
#   q1 gold A: a = B, A, A        cats x, z   format T T T   memory 10 20 30
#   q2 gold C: a = C, C, None     cats x, y   format T T F   memory  5  5  5
#   q3 gold B: a = None, B, B     cats y      format F T T   memory  0 12 18
BATCH1 = dict(
    step_answers=[["B", "A", "A"], ["C", "C", None]],
    gold=["A", "C"],
    categories=[["x", "z"], ["x", "y"]],
    format_ok=[[True, True, True], [True, True, False]],
    memory_tokens=[[10, 20, 30], [5, 5, 5]],
)
BATCH2 = dict(
    step_answers=[[None, "B", "B"]],
    gold=["B"],
    categories=[["y"]],
    format_ok=[[False, True, True]],
    memory_tokens=[[0, 12, 18]],
)


def _check_worked_numbers(out: dict) -> None:
    assert out["n"] == 3
    assert out["accuracy"] == pytest.approx(2 / 3)  # q1 right, q2 unparsable (wrong), q3 right
    assert out["seg_accuracy"] == pytest.approx([1 / 3, 1.0, 2 / 3])
    assert out["per_category"]["x"] == pytest.approx(0.5)  # q1 right, q2 wrong
    assert out["per_category"]["y"] == pytest.approx(0.5)  # q2 wrong, q3 right
    assert out["per_category"]["z"] == pytest.approx(1.0)
    assert out["parse_failure_rate"] == pytest.approx(1 / 3)
    assert out["format_valid_rate"] == pytest.approx(7 / 9)
    assert out["mean_memory_tokens"] == pytest.approx(105 / 9)
    assert out["per_kind"] == pytest.approx({"mc": 2 / 3}) and out["n_per_kind"] == {"mc": 3}


@pytest.mark.parametrize("categories", [["x", "y", "z"], None])
def test_worked_numbers_over_two_updates(categories):
    m = MemoryQAMetrics(num_clips=3, categories=categories)
    m.update(**BATCH1)
    m.update(**BATCH2)
    _check_worked_numbers(m.compute())


def test_fixed_categories_report_unseen_as_nan_and_ignore_unknown():
    m = MemoryQAMetrics(num_clips=3, categories=["x", "w"])
    m.update(**BATCH1)
    out = m.compute()
    assert list(out["per_category"]) == ["x", "w"]
    assert out["per_category"]["x"] == 0.5 and math.isnan(out["per_category"]["w"])


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_reset_and_merge_state_match_one_pass():
    for categories in (["x", "y", "z"], None):
        a, b = MemoryQAMetrics(3, categories), MemoryQAMetrics(3, categories)
        a.update(**BATCH1)
        b.update(**BATCH2)
        a.merge_state(b)  # the same sums DDP's all-reduce performs
        _check_worked_numbers(a.compute())
        a.reset()
        out = a.compute()
        assert out["n"] == 0 and math.isnan(out["accuracy"])
        assert all(math.isnan(v) for v in out["per_category"].values())
        assert categories is not None or out["per_category"] == {}


def test_forward_accumulates_and_keeps_discovered_categories():
    m = MemoryQAMetrics(num_clips=3)
    m(**BATCH1)
    m(**BATCH2)
    _check_worked_numbers(m.compute())


def test_unanswerable_gold_is_never_right_and_shapes_are_checked():
    m = MemoryQAMetrics(num_clips=1)
    m.update([[None]], [None], [["c"]], [[False]], [[0]])  # None == None must not count as right
    assert m.compute()["accuracy"] == 0.0
    with pytest.raises(ValueError, match="num_clips"):
        m.update([["A", "B"]], ["A"], [["c"]], [[True, True]], [[1, 1]])
    with pytest.raises(ValueError, match="one entry per question"):
        m.update([["A"]], ["A", "B"], [["c"]], [[True]], [[1]])


def _ddp_worker(rank: int, world: int, port: int, categories, queue) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    m = MemoryQAMetrics(3, categories)
    m.update(**(BATCH1 if rank == 0 else BATCH2))
    out = m.compute()
    dist.destroy_process_group()
    queue.put((rank, out))


@pytest.mark.distributed
@pytest.mark.parametrize("categories", [["x", "y", "z"], None])
def test_ddp_two_processes_sync_to_the_worked_numbers(categories):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, port, categories, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    for rank in (0, 1):
        _check_worked_numbers(results[rank])


def test_memory_match_against_teacher_memories_worked_numbers():
    m = MemoryQAMetrics(num_clips=3)
    m.update(**BATCH2)  # no memories given: no memory_match figure
    assert "memory_match" not in m.compute()
    m.update(
        **BATCH1,
        memories=[["red: 1", "red:  2", "red: 2"], ["", "first: blue", "first: red"]],
        teacher_memories=[["red: 1", "red: 2", "red: 3"], ["", "first: blue", "first: blue"]],
    )
    # a question without teacher memories is left out of memory_match (but counts for accuracy)
    m.update(**BATCH2, memories=[["a", "b", "c"]], teacher_memories=[None])
    out = m.compute()
    # clip 1: both match; clip 2: both ("red:  2" matches after whitespace normalisation); clip 3: neither
    assert out["memory_match"] == pytest.approx([1.0, 1.0, 0.0])
    assert out["n"] == 4


class _Counter:
    def count_tokens(self, text: str) -> int:
        return len(text.split())


def _loop_result(qid: str, gold: str, categories: list[str], outputs: list[str]) -> LoopResult:
    qa = VideoQA("v", qid, "How many?", ["1", "2", "3", "4"], gold, categories[0], [], None)
    qa.categories = categories
    result, memory = LoopResult(qa), ""
    for text in outputs:
        result.steps.append(advance(_Counter(), memory, text, 4))
        memory = result.steps[-1].memory_out
    return result


def _out(memory: str, answer: str) -> str:
    return f"<memory>{memory}</memory><answer>{answer}</answer>"


def test_update_metrics_from_loop_results_gives_the_worked_numbers():
    """The three worked questions as memory-loop results (memory lengths in words)."""
    q1 = _loop_result(
        "q1", "A", ["x", "z"], [_out("a " * 10, "B"), _out("a " * 20, "A"), _out("a " * 30, "A")]
    )
    q2 = _loop_result("q2", "C", ["x", "y"], [_out("b " * 5, "C"), _out("b " * 5, "C"), "<answer>?</answer>"])
    q3 = _loop_result("q3", "B", ["y"], ["no tags", _out("c " * 12, "B"), _out("c " * 18, "B")])
    metrics = MemoryQAMetrics(num_clips=3)
    update_metrics(metrics, [q1, q2])
    update_metrics(metrics, [q3])
    _check_worked_numbers(metrics.compute())


def test_flatten_metrics_names_clips_and_categories():
    values = {"accuracy": 0.5, "seg_accuracy": [0.25, 0.5], "per_category": {"count": 1.0}, "n": 3}
    assert flatten_metrics(values, "val") == {
        "val/accuracy": 0.5,
        "val/seg_accuracy/clip_1": 0.25,
        "val/seg_accuracy/clip_2": 0.5,
        "val/per_category/count": 1.0,
        "val/n": 3.0,
    }


def test_result_text_shows_each_clip_answer_and_memory():
    text = result_text(_loop_result("q1", "A", ["x"], [_out("one", "B"), "broken"]))
    assert text.splitlines() == [
        "**v / q1** (x) How many? gold=A",
        "",
        "- clip 1: answer=B format_ok=True memory: `one`",
        "- clip 2: answer=None format_ok=False memory: `one`",
    ]


def test_open_ended_questions_score_by_the_rule_and_report_per_kind():
    m = MemoryQAMetrics(num_clips=3)
    m.update(**BATCH1, num_options=[4, 4])
    # q4 open-ended, reference "red blue": a = "red", "red blue", "blue red" -> 4/9, 1, 1/2
    m.update(
        step_answers=[["red", "red blue", "blue red"]],
        gold=["red blue"],
        categories=[["order"]],
        format_ok=[[True, True, True]],
        memory_tokens=[[1, 2, 3]],
        num_options=[0],
    )
    out = m.compute()
    assert out["per_kind"] == pytest.approx({"mc": 1 / 2, "open": 1 / 2})
    assert out["n_per_kind"] == {"mc": 2, "open": 1}
    assert out["accuracy"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert out["seg_accuracy"] == pytest.approx([(0 + 1 + 4 / 9) / 3, (1 + 1 + 1) / 3, 1.5 / 3])
    assert out["per_category"]["order"] == pytest.approx(0.5)
    assert flatten_metrics({"per_kind": out["per_kind"]}, "eval") == pytest.approx(
        {"eval/per_kind/mc": 0.5, "eval/per_kind/open": 0.5}
    )


def test_judge_records_scores_the_open_ended_records_only():
    from tests.test_rl_judge import PROMPT, Replies
    from videomem.eval.metrics import judge_records
    from videomem.rl.judge import Judge

    records = [
        {"kind": "open", "question": "Q", "answer": "red blue", "pred": "red blue"},
        {"kind": "open", "question": "Q", "answer": "red blue", "pred": "red"},  # judge down: rule 4/9
        {"kind": "open", "question": "Q", "answer": "red blue", "pred": None},  # unparsable: 0, no request
        {"kind": "mc", "question": "Q", "answer": "A", "pred": "A"},
    ]
    endpoint = Replies({"red blue": "correct"})
    assert judge_records(records, Judge(endpoint, "", PROMPT)) == pytest.approx((1 + 4 / 9 + 0) / 3)
    assert [r.get("judge_score") for r in records] == pytest.approx([1.0, 4 / 9, 0.0, None])
    assert len(endpoint.sent) == 2
