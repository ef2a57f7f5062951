"""``make eval`` over ranks: every question once, in a single process's batches, merged back in order.

EvalStream with ``chunk`` deals the split's chunks of questions to the ranks in turn; the shares of
all ranks, ordered by the index each question carries, give exactly the single-process sequence for
any shard count, world size, chunk and ``limit``, bad data included (skips counted once). The real
multi-process run (torchrun, gloo) is tests/test_eval_distributed.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_faults import build_corpus
from videomem.data.datamodule import EvalStream
from videomem.data.shards import VideoQADecoder, expand_shards
from videomem.data.synthetic import generate_dataset
from videomem.data.synthetic_text import MC_FAMILIES
from videomem.run_eval import chunk_batches, merge_skips


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> dict[str, list[str]]:
    """The same 7 videos (21 questions) as 4 shards of <= 2 videos and as one shard."""
    root = tmp_path_factory.mktemp("split")
    kw = {"num_clips": 2, "seed": 0, "workers": 1, "families": MC_FAMILIES}  # 3 questions per video: 21
    generate_dataset(root / "four", splits={"test": 7}, max_per_shard=2, **kw)
    generate_dataset(root / "one", splits={"test": 7}, max_per_shard=8, **kw)
    return {name: expand_shards(str(root / name / "test")) for name in ("four", "one")}


def shares(urls: list[str], world: int, chunk: int | None, limit: int | None = None):
    """Each rank's ``(positions, qids)`` and its decoder's skip log."""
    out = []
    for rank in range(world):
        decoder = VideoQADecoder(frames_per_clip=1, frame_size=(32, 32), backend="pyav")
        items = list(EvalStream(urls, decoder, limit=limit, rank=rank, world=world, chunk=chunk).positioned())
        out.append(([i for i, _ in items], [qa.qid for _, qa in items], decoder.skips))
    return out


def merged(parts) -> list[str]:
    return [q for _, q in sorted((i, q) for positions, qids, _ in parts for i, q in zip(positions, qids))]


@pytest.mark.parametrize("layout", ["four", "one"])
@pytest.mark.parametrize(("chunk", "limit"), [(1, None), (4, None), (4, 13), (64, 5)])
def test_every_question_once_in_single_process_order_for_any_world(layouts, layout, chunk, limit) -> None:
    urls = layouts[layout]
    ((positions, single, _),) = shares(urls, 1, chunk, limit)
    assert len(single) == (21 if limit is None else limit) and positions == list(range(len(single)))
    for world in (2, 3):
        parts = shares(urls, world, chunk, limit)
        got = [i for p, _, _ in parts for i in p]
        assert sorted(got) == positions  # each question exactly once
        assert merged(parts) == single
        for rank, (p, _, _) in enumerate(parts):  # a rank holds whole chunks: the single process's batches
            assert all((i // chunk) % world == rank for i in p)


def test_a_rank_gets_the_batches_a_single_process_would_run(layouts) -> None:
    ((positions, qids, _),) = shares(layouts["four"], 1, chunk=4)
    single = [q for _, q in chunk_batches(zip(positions, qids), 4)]
    parts = shares(layouts["four"], 2, chunk=4)
    dealt = [q for p, qs, _ in parts for _, q in chunk_batches(zip(p, qs), 4)]
    assert sorted(dealt) == sorted(single) and len(dealt) == 6  # 21 questions: 5 batches of 4 and 1 of 1


def test_bad_data_is_skipped_and_counted_once_whatever_the_split(tmp_path) -> None:
    cases = build_corpus(tmp_path)  # every fault of tests/test_faults.py, one shard each
    urls = expand_shards(str(tmp_path))
    ((_, single, skips),) = shares(urls, 1, chunk=2)
    assert len(single) == sum(len(qids) for _, _, qids in cases.values()) + 2  # + zz_good.tar
    listed = [{"split": "test", **r} for r in skips.samples]
    for world in (2, 3):
        parts = shares(urls, world, chunk=2)
        assert merged(parts) == single
        count, samples = merge_skips(
            [(s.count, [{"split": "test", **r} for r in s.samples]) for *_, s in parts], urls
        )
        assert (count, samples) == merge_skips([(skips.count, listed)], urls) and count == skips.count
        assert {Path(r["url"]).stem for r in samples} == set(cases)
