"""``OUT/spot_check.html``: a sample of questions to check the teacher's chains by eye, as the paper did by hand.

One self-contained page (frames inline as base64 JPEG): per question its text, options and gold letter,
then per clip a few frames, the captioner's description d_t and the memory M_t. The sample is drawn
with a fixed seed from the questions whose chains this pipeline wrote (their descriptions are in
``OUT/.teacher/*.jsonl``).
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


def write_spot_check(
    out_dir: str | Path, num_questions: int = 8, frames_per_clip: int = 3, height: int = 96, seed: int = 0
) -> Path:
    """Write ``out_dir/spot_check.html`` for up to ``num_questions`` questions; returns its path."""
    out = Path(out_dir)
    chains = {}
    for progress in sorted((out / STATE_DIR).glob("*.jsonl")):
        chains.update(read_progress(progress))
    keys = sorted(chains)
    picked = set(random.Random(seed).sample(keys, min(num_questions, len(keys))))
    sections = []
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
                f"<p>{html.escape(q['question'])}<br>{options}</p>"
                "<table><tr><th>clip</th><th>frames</th><th>description d<sub>t</sub></th><th>memory M<sub>t</sub></th></tr>"
                + "".join(rows)
                + "</table>"
            )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>teacher spot check</title><style>"
        "body{font-family:sans-serif;max-width:1400px}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px;vertical-align:top}img{margin:1px}</style></head><body>"
        f"<h1>Teacher memories: {len(sections)} of {len(keys)} questions</h1>"
        "<p>Check that each memory keeps what the question needs from its clip's description and drops the rest.</p>"
        + "".join(sections)
        + "</body></html>"
    )
    path = out / "spot_check.html"
    path.write_text(page, encoding="utf-8")
    return path
