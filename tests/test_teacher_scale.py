"""The teacher at scale: the answerability check and filter, one run per OUT (a lock that a killed run
does not leave behind), and PART=i/n. Scripted backends on real footage; the same check against a real
``transformers serve``: tests/test_teacher_serve.py."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.test_teacher import PROMPTS, qa, shards  # noqa: F401 - shards is a fixture
from videomem.data.shards import iter_shard_videoqa
from videomem.teacher.answerability import check_answers, read_letter
from videomem.teacher.chain import Chain, Prompts
from videomem.teacher.outdir import OutLocked, lock_out, my_shards
from videomem.teacher.pipeline import fill_memories
from videomem.teacher.spot_check import write_spot_check


class Fixed:
    """A backend giving one fixed reply to everything; counts its requests."""

    frames_per_clip, frame_size = 1, (56, 56)

    def __init__(self, reply: str) -> None:
        self.reply, self.requests = reply, 0

    def describe(self, requests):
        self.requests += len(requests)
        return [self.reply] * len(requests)

    write = describe


def test_read_letter_reads_free_text_like_the_benchmarks():
    cases = {
        "B": "B",
        "(C)": "C",
        "The answer is A.": "A",
        "Answer: B": "B",
        "Apple": None,
        "E": None,
        "": None,
    }
    assert {text: read_letter(text, 4) for text in cases} == cases


def test_check_answers_flags_what_the_reader_gets_wrong():
    questions = [qa("a", 2, answer="A"), qa("b", 2, answer="B"), qa("c", 2, answer=None), qa("d", 2)]
    chains = [Chain("v", q.qid, ["d"] * 2, ["m1", "m2"]) for q in questions]
    chains[3].error = "writer, clip 2: boom"
    reader = Fixed("The answer is A")
    assert check_answers(chains, questions, reader, PROMPTS) == 2  # no gold (c), failed (d): not asked
    assert [(c.answerable, c.reader_answer) for c in chains[:3]] == [(True, "A"), (False, "A"), (None, None)]
    failing = [Chain("v", "a", ["d"] * 2, ["m1", "m2"])]
    check_answers(failing, questions[:1], Fixed(""), PROMPTS)
    assert failing[0].error == "reader: BadReply: empty"  # a bad reader reply fails the question


def run(shards, out, reader="A", **kw):  # noqa: F811 - shards is the fixture's value
    captioner, writer = Fixed("a clip"), Fixed("a memory")
    summary = fill_memories(shards, out, captioner, writer, PROMPTS, lambda m: m, reader=Fixed(reader), **kw)
    return summary, captioner


def test_flagged_chains_are_marked_dropped_by_the_filter_and_shown(shards, tmp_path):  # noqa: F811
    """The reader always says A: gold-A questions are answerable, the others flagged."""
    out = tmp_path / "sft"
    summary, captioner = run(shards, out)
    assert (summary["answerable"], summary["flagged"], summary["answerability_rate"]) == (2, 2, 0.5)
    assert summary["reader_requests"] == 4 and summary["caption_requests"] == 4 == captioner.requests
    flags = {
        q.qid: q.meta.get("answerable") for q in iter_shard_videoqa(out, frames_per_clip=1, frame_size=None)
    }
    assert flags == {
        "line1": True,
        "line2": False,
        "line3": True,
        "line4": False,
        "line5": None,
    }  # line5: given

    filtered, captioner = run(shards, out, filter="answerable")  # outputs rewritten, no teacher runs again
    assert (filtered["new"], filtered["dropped"], captioner.requests) == (0, 2, 0)
    qids = sorted(q.qid for q in iter_shard_videoqa(out, frames_per_clip=1, frame_size=None))
    assert qids == ["line1", "line3", "line5"]
    page = write_spot_check(out, num_questions=4, frames_per_clip=1, height=16, shards=shards).read_text()
    assert "2 of 4 checked chains answerable from their last memory (50.0%); 2 flagged" in page
    assert (
        page.count("FLAGGED") == 2 and page.count("<h2>") == 4
    )  # the flagged ones are shown, from the input
    with pytest.raises(ValueError, match=r"teacher.min_open_score must be in \[0, 1\], got 1.5"):
        run(shards, out, min_open_score=1.5)


HOLD = """
import sys, time
from videomem.teacher.outdir import lock_out
with lock_out(sys.argv[1], (1, 1)):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_second_run_on_one_out_is_refused_and_a_killed_run_leaves_no_lock(shards, tmp_path):  # noqa: F811
    out = tmp_path / "sft"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HOLD), str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutLocked) as err:
            run(shards, out)
        message = str(err.value)
        assert f"pid {holder.pid}" in message and "\n" not in message and "give another OUT" in message
    finally:
        holder.kill()  # SIGKILL: no clean-up runs, the lock file stays behind
        holder.wait()
    assert (out / ".teacher" / "lock").exists()
    assert run(shards, out)[0]["done"] == 4  # the kernel dropped the dead run's lock


def test_parts_share_one_out_and_together_do_the_whole_run(shards, tmp_path):  # noqa: F811
    out, whole = tmp_path / "parts", tmp_path / "whole"
    paths = sorted(str(p) for p in shards.glob("*.tar"))
    assert [my_shards(paths, (i, 2)) for i in (1, 2)] == [paths[:1], paths[1:]]
    with lock_out(out, (1, 2)):  # part 1 running: part 2 may run beside it, a whole run may not
        second, _ = run(shards, out, part="2/2")
        with pytest.raises(OutLocked):
            run(shards, out)
        with pytest.raises(OutLocked):
            run(shards, out, part="1/3")  # another split would overlap
    first, _ = run(shards, out, part="1/2")
    run(shards, whole)
    assert first["done"] + second["done"] == 4 and (out / "summary.part2of2.json").exists()
    ids = lambda d: sorted(  # noqa: E731
        (q.video_id, q.qid) for q in iter_shard_videoqa(d, frames_per_clip=1, frame_size=None)
    )
    assert ids(out) == ids(whole) and len(ids(whole)) == 5
    assert json.loads((out / "summary.part1of2.json").read_text())["part"] == "1/2"


@pytest.mark.slow
def test_make_memories_refuses_a_busy_out_in_one_line(shards, tmp_path):  # noqa: F811
    out = tmp_path / "sft"
    with lock_out(out):
        proc = subprocess.run(
            [sys.executable, "-m", "videomem.run_memories", f"shards={shards}", f"out={out}", "teacher=tiny"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=300,
        )
    assert proc.returncode == 2
    (line,) = [x for x in proc.stderr.splitlines() if x.strip()]
    assert line.startswith("run_memories: error: ") and "is being written by make memories" in line


def test_an_open_ended_question_is_written_for_and_read_in_words():
    from videomem.teacher.answerability import read_words, reader_messages
    from videomem.teacher.chain import OPEN_ENDED_OPTIONS, writer_messages

    open_q = qa("o", 2, answer="a red car")
    open_q.options = []
    prompts = Prompts(
        **{**PROMPTS.__dict__, "writer_user": "{question} | {options} | {memory} | {description}"}
    )
    assert (
        writer_messages(prompts, open_q, 1, "m", "d")[-1]["content"]
        == f"question o? | {OPEN_ENDED_OPTIONS} | m | d"
    )
    assert (
        writer_messages(prompts, qa("q", 2), 1, "m", "d")[-1]["content"] == "question q? | A. x\nB. y | m | d"
    )
    # the reader gets the open-ended prompts: no options, the words asked for
    assert reader_messages(PROMPTS, open_q, "m2") == [
        {"role": "system", "content": "answer in words"},
        {"role": "user", "content": "notes: m2 | Q: question o?"},
    ]
    assert read_words("The answer is red car") == "red car"
    assert read_words("Answers vary") == "Answers vary"  # a prefix needs its separator
    replies = {  # the reader's reply -> answerable (the ROUGE mean against "a red car" >= 0.5)
        "Answer: the red car\nIt was parked.": True,  # first line, prefix and articles dropped: 1.0
        "a red truck": False,  # 1 of 2 words, no bigram: 0.33
        "A": False,  # a letter is no answer to an open-ended question
    }
    for reply, answerable in replies.items():
        chains = [Chain("v", "o", ["d"] * 2, ["m1", "m2"])]
        assert check_answers(chains, [open_q], Fixed(reply), PROMPTS) == 1
        assert chains[0].answerable is answerable and chains[0].error is None, reply
    chains = [Chain("v", "o", ["d"] * 2, ["m1", "m2"])]
    check_answers(chains, [open_q], Fixed("a red truck"), PROMPTS, min_open_score=0.3)
    assert chains[0].answerable is True and chains[0].reader_answer == "a red truck"  # the threshold's
