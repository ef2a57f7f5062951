"""``OUT/spot_check.html``: a sample of questions to check the teacher's chains by eye, as the paper did by hand.

One self-contained page (frames inline as base64 JPEG): at the top the answerability rate of all
chains in OUT; per question its text, options and gold letter, what the reader answered from M_T alone
(flagged when wrong), then per clip a few frames, the captioner's description d_t and the memory M_t.
The sample is drawn with a fixed seed from the questions whose chains this pipeline wrote (their
descriptions are in ``OUT/.teacher/*.jsonl``), half of it from the flagged chains when there are any,
so both kinds are seen.
"""

from __future__ import annotations

import base64
import html
import io
import random
from pathlib import Path

from PIL import Image

from videomem.data.shards import clip_fields, expand_shards, iter_samples, read_meta
from videomem.data.types import LETTERS
from videomem.data.video import decode_frames
from videomem.teacher.pipeline import STATE_DIR, read_progress


def _img(frame, height: int) -> str:
    image = Image.fromarray(frame.numpy())
    image = image.resize((max(1, round(image.width * height / image.height)), height))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=80)
    return f'<img src="data:image/jpeg;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _pick(chains: dict, num_questions: int, seed: int) -> set:
    """Up to ``num_questions`` keys: half from the flagged chains (as many as there are), the rest from the others."""
    flagged = sorted(k for k, c in chains.items() if c.get("answerable") is False)
    others = sorted(k for k in chains if chains[k].get("answerable") is not False)
    rng = random.Random(seed)
    bad = rng.sample(flagged, min(len(flagged), max(num_questions // 2, num_questions - len(others))))
    return set(bad) | set(rng.sample(others, min(len(others), num_questions - len(bad))))


def _reader_line(chain: dict, gold: str | None) -> str:
    flag = chain.get("answerable")
    if flag is None:
        return "<p><i>answerability not checked (no gold answer)</i></p>"
    said = chain.get("reader_answer") or "no answer"
    verdict = "answerable" if flag else "<b style='color:#b00'>FLAGGED: not answerable from M<sub>T</sub></b>"
    return f"<p>reader, from M<sub>T</sub> alone: {html.escape(said)} (gold {html.escape(str(gold))}): {verdict}</p>"


def write_spot_check(
    out_dir: str | Path,
    num_questions: int = 8,
    frames_per_clip: int = 3,
    height: int = 96,
    seed: int = 0,
    name: str = "spot_check.html",
    shards: str | list[str] | None = None,
) -> Path:
    """Write ``out_dir/<name>`` for up to ``num_questions`` questions; returns its path.

    ``shards``: where the clips are read (the run's input, which still holds the questions a filter
    left out of OUT); None: OUT's own shards.
    """
    out = Path(out_dir)
    chains = {}
    for progress in sorted((out / STATE_DIR).glob("*.jsonl")):
        chains.update(read_progress(progress))
    keys = sorted(chains)
    picked = _pick(chains, num_questions, seed)
    flags = [c.get("answerable") for c in chains.values() if c.get("answerable") is not None]
    rate = (
        f"{sum(flags)} of {len(flags)} checked chains answerable from their last memory "
        f"({100 * sum(flags) / len(flags):.1f}%); {len(flags) - sum(flags)} flagged"
        if flags
        else "no chain checked for answerability"
    )
    sections = []
    if shards is None:
        shards = sorted(str(p) for p in out.glob("*.tar"))
    for sample in iter_samples(expand_shards(shards)) if shards else []:
        meta = read_meta(sample)
        questions = [q for q in meta["questions"] if (meta["video_id"], str(q["qid"])) in picked]
        if not questions:
            continue
        frames = [
            decode_frames(sample[k], num_frames=frames_per_clip, backend="pyav") for k in clip_fields(sample)
        ]
        for q in questions:
            chain = chains[(meta["video_id"], str(q["qid"]))]
            options = "<br>".join(
                f"{'<b>' if LETTERS[i] == q.get('answer') else ''}{LETTERS[i]}. {html.escape(o)}{'</b>' if LETTERS[i] == q.get('answer') else ''}"
                for i, o in enumerate(q["options"])
            )
            rows = []
            for t, clip in enumerate(frames):
                a, b = meta["clips"][t]
                rows.append(
                    f"<tr><td>clip {t + 1}<br>{a:.1f}-{b:.1f}s</td><td>{''.join(_img(f, height) for f in clip)}</td>"
                    f"<td>{html.escape(chain['descriptions'][t])}</td><td>{html.escape(chain['memories'][t])}</td></tr>"
                )
            sections.append(
                f"<h2>{html.escape(meta['video_id'])} / {html.escape(str(q['qid']))}</h2>"
                f"<p>{html.escape(q['question'])}<br>{options}</p>{_reader_line(chain, q.get('answer'))}"
                "<table><tr><th>clip</th><th>frames</th><th>description d<sub>t</sub></th><th>memory M<sub>t</sub></th></tr>"
                + "".join(rows)
                + "</table>"
            )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>teacher spot check</title><style>"
        "body{font-family:sans-serif;max-width:1400px}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px;vertical-align:top}img{margin:1px}</style></head><body>"
        f"<h1>Teacher memories: {len(sections)} of {len(keys)} questions</h1><p>Answerability: {rate}.</p>"
        "<p>Check that each memory keeps what the question needs from its clip's description and drops the rest.</p>"
        + "".join(sections)
        + "</body></html>"
    )
    path = out / name
    path.write_text(page, encoding="utf-8")
    return path
