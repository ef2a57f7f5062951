"""The page ``make eval`` writes beside its JSON: what the memory did, question by question.

One self-contained HTML file (no network, nothing to install): a summary of the figures, then per question
its kind, category, text, options (the gold one in bold) or reference answer, and per clip a few frames
(small JPEG thumbnails), the memory after that clip and the provisional answer with its score; then the
final verdict: ``right`` (score 1), ``partly`` (between 0 and 1: an open-ended answer that shares some
words with the reference) or ``wrong`` (0), and the LLM judge's score when one was asked. Three menus
filter the questions by kind, category and verdict; the URL fragment holds the filter
(``report.html#kind=open&verdict=wrong``), so a filtered view can be linked or opened by a test.

The thumbnails are read back from the evaluated shards (``thumbnails``), so the page needs only the
records and the shards, which also suits an evaluation whose records were gathered from several ranks.
Each video's frames are stored once, as JSON the page's script turns into ``<img>`` elements, however
many questions share the video.

Deliberately not here: computing scores (``eval/metrics.py``, ``memory/scoring.py``), running the loop.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from videomem.data.shards import clip_fields, iter_samples, read_meta
from videomem.data.skips import SkipLog
from videomem.data.types import LETTERS
from videomem.data.video import VideoDecodeError, decode_frames


def verdict(score: float) -> str:
    """``right`` (1), ``partly`` (strictly between) or ``wrong`` (0) for a score in [0, 1]."""
    return "right" if score >= 1.0 else "wrong" if score <= 0.0 else "partly"


def _jpeg(frame, height: int) -> str:
    image = Image.fromarray(frame.numpy())
    image = image.resize((max(1, round(image.width * height / image.height)), height))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=75)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def thumbnails(
    shards, video_ids: Iterable[str], frames_per_clip: int = 3, height: int = 48
) -> dict[str, list[list[str]]]:
    """``{video_id: [[jpeg data URL] * frames_per_clip] * T}`` for the named videos found in ``shards``.

    A video that cannot be read is left out (its questions show no frames); nothing raises.
    """
    wanted, out = set(video_ids), {}
    samples = iter_samples(shards, skips=SkipLog())
    for sample in tqdm(samples, desc="report frames", unit="video", disable=not wanted):
        try:
            meta = read_meta(sample)
            if meta.get("video_id") not in wanted:
                continue
            clips = [
                decode_frames(sample[k], num_frames=frames_per_clip, backend="pyav")
                for k in clip_fields(sample)
            ]
        except (VideoDecodeError, ValueError):
            continue
        out[meta["video_id"]] = [[_jpeg(f, height) for f in clip] for clip in clips]
        if len(out) == len(wanted):
            break
    return out


def _e(value) -> str:
    return html.escape(str(value))


def _answer(value) -> str:
    return "<i>unparsable</i>" if value is None else _e(value)


def _question(i: int, r: dict) -> str:
    """One question's section (frames are filled in by the page's script from the video's thumbnails)."""
    kind, score = r.get("kind", "mc"), float(r.get("score", 0.0))
    if r.get("options"):
        gold = r.get("answer")
        choices = "".join(
            f"<li{' class=gold' if LETTERS[k] == gold else ''}>{LETTERS[k]}. {_e(o)}</li>"
            for k, o in enumerate(r["options"])
        )
        wanted = f"<ol class=options>{choices}</ol>"
    else:
        wanted = f"<p class=reference>reference: <b>{_answer(r.get('answer'))}</b></p>"
    steps = r.get("step_answers", [])
    step_scores = r.get("step_scores", [0.0] * len(steps))
    rows = "".join(
        f"<tr><td>clip {t + 1}</td><td class=frames data-video='{_e(r['video_id'])}' data-clip={t}></td>"
        f"<td class=memory>{_e(m)}</td><td class=answer>{_answer(a)}</td><td>{s:.2f}</td></tr>"
        for t, (m, a, s) in enumerate(zip(r.get("memories", []), steps, step_scores))
    )
    judge = f", judge {r['judge_score']:.2f}" if r.get("judge_score") is not None else ""
    v = verdict(score)
    return (
        f"<section class=q id=q{i} data-kind={_e(kind)} data-category='{_e(r.get('category', ''))}' data-verdict={v}>"
        f"<h2>{_e(r['video_id'])} / {_e(r['qid'])} <small>{_e(kind)} · {_e(r.get('category', ''))}</small></h2>"
        f"<p class=question>{_e(r.get('question', ''))}</p>{wanted}"
        "<table><tr><th>clip</th><th>frames</th><th>memory after the clip</th><th>answer</th><th>score</th></tr>"
        f"{rows}</table>"
        f"<p class=verdict>final answer {_answer(r.get('pred'))}: <b class={v}>{v}</b> (score {score:.2f}{judge})</p>"
        "</section>"
    )


def _options(name: str, values: Sequence[str]) -> str:
    choices = "".join(f"<option value='{_e(v)}'>{_e(v)}</option>" for v in values)
    return f"<label>{name} <select id={name}><option value=''>all</option>{choices}</select></label>"


_STYLE = """body{font-family:sans-serif;max-width:1400px;margin:auto}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:3px;vertical-align:top}img{margin:1px}.gold{font-weight:bold}
.right{color:#060}.partly{color:#a60}.wrong{color:#b00}section{border-top:2px solid #888;margin-top:1em}
#filters{position:sticky;top:0;background:#fff;padding:6px 0}.memory{max-width:520px}
.options{list-style:none;padding-left:1em}"""

_SCRIPT = """const frames = JSON.parse(document.getElementById('thumbs').textContent);
for (const cell of document.querySelectorAll('td.frames')) {
  for (const src of (frames[cell.dataset.video] || [])[cell.dataset.clip] || []) {
    const img = document.createElement('img'); img.src = src; cell.appendChild(img);
  }
}
const menus = ['kind', 'category', 'verdict'].map(id => document.getElementById(id));
function apply() {
  let shown = 0;
  for (const q of document.querySelectorAll('section.q')) {
    q.hidden = !menus.every(m => !m.value || q.dataset[m.id] === m.value);
    if (!q.hidden) shown += 1;
  }
  document.getElementById('shown').textContent = shown;
  location.replace('#' + menus.filter(m => m.value).map(m => m.id + '=' + encodeURIComponent(m.value)).join('&'));
}
for (const [k, v] of new URLSearchParams(location.hash.slice(1))) {
  const m = document.getElementById(k); if (m) m.value = v;
}
for (const m of menus) m.addEventListener('change', apply);
apply();"""


def render_report(records: list[dict], result: dict, frames: dict[str, list[list[str]]]) -> str:
    """The page (module docstring) for ``records``; ``result`` gives the summary figures."""
    rows = [
        ("questions", result.get("n", len(records))),
        ("accuracy (mean score of a_T)", result.get("accuracy")),
    ]
    names = {
        "mc": "multiple-choice accuracy",
        "open": "open-ended rule score",
        "open_judge": "open-ended judge score",
    }
    counts = result.get("n_per_kind", {})
    rows += [
        (f"{names.get(k, k)} ({counts.get(k.split('_')[0], '?')} questions)", v)
        for k, v in result.get("per_kind", {}).items()
    ]
    summary = "".join(
        f"<tr><td>{_e(k)}</td><td>{v:.4f}</td></tr>"
        if isinstance(v, float)
        else f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>"
        for k, v in rows
        if v is not None
    )
    kinds = sorted({r.get("kind", "mc") for r in records})
    categories = sorted({str(r.get("category", "")) for r in records})
    thumbs = json.dumps(frames).replace("</", "<\\/")  # no "</script>" inside the JSON
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>videomem evaluation</title>"
        f"<style>{_STYLE}</style></head><body><h1>Evaluation: {len(records)} questions</h1>"
        f"<table id=summary>{summary}</table>"
        f"<div id=filters>{_options('kind', kinds)} {_options('category', categories)} "
        f"{_options('verdict', ['right', 'partly', 'wrong'])} showing <span id=shown>{len(records)}</span> "
        f"of {len(records)}</div>"
        + "".join(_question(i, r) for i, r in enumerate(records))
        + f"<script type='application/json' id=thumbs>{thumbs}</script><script>{_SCRIPT}</script></body></html>"
    )


def write_report(
    paths: Sequence[str | Path],
    records: list[dict],
    result: dict,
    shards,
    frames_per_clip: int = 3,
    height: int = 48,
) -> None:
    """Render the page once (frames read from ``shards``) and write it to every path in ``paths``."""
    frames = thumbnails(shards, [r["video_id"] for r in records], frames_per_clip, height)
    page = render_report(records, result, frames)
    for path in paths:
        Path(path).write_text(page, encoding="utf-8")
