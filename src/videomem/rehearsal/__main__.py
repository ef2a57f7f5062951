"""``python -m videomem.rehearsal`` (``make rehearse``): the dress rehearsal; see ``rehearsal/stages.py``."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from videomem.rehearsal.procs import probe_load
from videomem.rehearsal.stages import NODES, PER_NODE, Rehearsal, table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="logs/rehearsal", help="working directory (emptied first)")
    p.add_argument("--probe-load", nargs=2, metavar=("CKPT", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.probe_load:
        probe_load(*map(Path, args.probe_load))
        return 0
    out = Path(args.out).resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    rehearsal = Rehearsal(out)
    print(
        f"rehearsal of the paper recipe: {NODES} nodes x {PER_NODE} ranks on 127.0.0.1 (gloo), work in {out}\n"
    )
    print(table([]).rstrip("\n"), flush=True)
    ok = rehearsal.run()
    print("\n" + table(rehearsal.stages))
    for stage in rehearsal.stages:
        if not stage.ok and stage.detail:
            print(f"\n{stage.name} failed:\n{stage.detail}")
    report = {"ok": ok, "stages": [s.__dict__ for s in rehearsal.stages], "measured": rehearsal.measured}
    (out / "rehearsal.json").write_text(json.dumps(report, indent=1))
    print(f"\n{'all stages passed' if ok else 'FAILED'}; {out / 'rehearsal.json'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
