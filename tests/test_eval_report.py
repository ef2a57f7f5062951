"""eval/report.py: the HTML page beside make eval's JSON, read back as a person would, in headless Chromium.

The fast test checks the page's text as written; the slow ones load it in Debian's ``chromium`` (installed
by ``.ci/run``) and read the DOM after the page's script ran: the frames it shows per clip and the
questions each filter leaves visible.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from videomem.data.shards import VideoSample, write_shards
from videomem.data.video import encode_mp4
from videomem.eval.report import render_report, verdict, write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CLIPS, FRAMES = 2, 3


def _records() -> list[dict]:
    base = {"memories": ["m1", "m2 <b>not bold</b>"], "categories": []}
    return [
        {**base, "video_id": "v0", "qid": "count", "kind": "mc", "category": "count", "question": "How many?",
         "options": ["1", "2"], "answer": "B", "pred": "B", "score": 1.0, "step_answers": ["A", "B"],
         "step_scores": [0.0, 1.0]},
        {**base, "video_id": "v0", "qid": "order", "kind": "open", "category": "order",
         "question": "Which colours, in order?", "options": [], "answer": "red blue", "pred": "red",
         "score": 4 / 9, "step_answers": ["red", "red"], "step_scores": [4 / 9, 4 / 9], "judge_score": 0.5},
        {**base, "video_id": "v1", "qid": "order", "kind": "open", "category": "order",
         "question": "Which colours, in order?", "options": [], "answer": "green", "pred": None,
         "score": 0.0, "step_answers": [None, None], "step_scores": [0.0, 0.0]},
    ]  # fmt: skip


def test_the_page_holds_every_question_with_its_answers_escaped_and_each_video_once():
    frames = {"v0": [["data:image/jpeg;base64,AAA"] * FRAMES] * CLIPS}
    page = render_report(_records(), {"n": 3, "per_kind": {"mc": 1.0, "open": 2 / 9}}, frames)
    assert page.count("<section class=q") == 3
    assert "&lt;b&gt;not bold&lt;/b&gt;" in page and "<b>not bold</b>" not in page
    assert "reference: <b>red blue</b>" in page and "<li class=gold>B. 2</li>" in page
    assert "judge 0.50" in page and "<i>unparsable</i>" in page
    assert page.count("data:image/jpeg;base64,AAA") == FRAMES * CLIPS  # stored once, shown by the script
    assert [verdict(s) for s in (1.0, 0.3, 0.0)] == ["right", "partly", "wrong"]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """A written report over two real two-clip videos."""
    root = tmp_path_factory.mktemp("report")
    videos = []
    for i in range(2):
        clips = [
            encode_mp4(np.full((4, 32, 32, 3), 40 + 80 * t + 20 * i, np.uint8), fps=2) for t in range(CLIPS)
        ]
        meta = {"duration": 4.0, "clips": [[0, 2], [2, 4]], "questions": [
            {"qid": "q", "question": "?", "options": ["a", "b"], "answer": "A", "category": "c"}]}  # fmt: skip
        videos.append(VideoSample(f"v{i}", clips, meta))
    write_shards(videos, root / "shards")
    write_report([root / "eval.html"], _records(), {"n": 3}, str(root / "shards"), frames_per_clip=FRAMES)
    return root / "eval.html"


def dump_dom(page: Path, fragment: str, tmp_path: Path) -> str:
    """The DOM of ``page#fragment`` after its scripts ran, from headless Chromium."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium; .ci/run does)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=2000"]  # fmt: skip
    proc = subprocess.run(
        [CHROMIUM, *flags, "--dump-dom", f"{page.as_uri()}#{fragment}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def _visible(dom: str) -> list[str]:
    """Ids of the question sections the page shows (the script sets ``hidden`` on the others)."""
    tags = re.findall(r'<section class="q" [^>]*>', dom)
    return [re.search(r'id="(q\d)"', t).group(1) for t in tags if " hidden" not in t]


@pytest.mark.slow
def test_chromium_shows_the_frames_of_every_clip(report, tmp_path):
    dom = dump_dom(report, "", tmp_path)
    assert _visible(dom) == ["q0", "q1", "q2"]
    cells = re.findall(r'<td class="frames" data-video="(v\d)" data-clip="\d">(.*?)</td>', dom)
    assert len(cells) == 3 * CLIPS
    assert all(c.count('<img src="data:image/jpeg;base64,') == FRAMES for _, c in cells)
    assert 'showing <span id="shown">3</span> of 3' in dom


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fragment", "visible"),
    [("kind=open", ["q1", "q2"]), ("kind=mc", ["q0"]), ("verdict=wrong", ["q2"]),
     ("kind=open&verdict=partly", ["q1"]), ("category=count&verdict=wrong", [])],
)  # fmt: skip
def test_chromium_filters_by_kind_category_and_verdict(report, tmp_path, fragment, visible):
    dom = dump_dom(report, fragment, tmp_path)
    assert _visible(dom) == visible
    assert f'showing <span id="shown">{len(visible)}</span>' in dom
