"""The one in-memory record every layer above the data layer consumes: a video question with its clips.

`VideoQA` holds one (video, question) pair after decoding: the question, its option texts and gold letter
(multiple-choice) or its free-text reference answer (open-ended), the frames of each clip (never the whole
video at once) and, when the shard carries them, oracle or teacher memories M_1..M_T for the SFT cold
start. It deliberately holds no tokens and no model inputs: the model layer turns frames into patches and
text into ids.

A question's kind follows from its options: a multiple-choice question has 2..5 of them, an open-ended one
none. Every layer that needs the kind asks ``VideoQA.kind`` (or, below it, the number of options: the
parser and the rewards take ``num_options`` and read 0 as open-ended).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

LETTERS = "ABCDE"
MULTIPLE_CHOICE, OPEN_ENDED = "mc", "open"
KINDS = (MULTIPLE_CHOICE, OPEN_ENDED)


def kind_of(num_options: int) -> str:
    """The kind of a question with ``num_options`` options: open-ended when it has none."""
    return OPEN_ENDED if num_options == 0 else MULTIPLE_CHOICE


@dataclass
class VideoQA:
    """One question (multiple-choice or open-ended) about one video, split in T clips.

    Attributes:
        video_id: Source video id (unique within a dataset).
        qid: Question id (unique within a dataset).
        question: Question text, without options.
        options: Option texts WITHOUT letter prefixes, 2..5 entries (option i has letter LETTERS[i]); empty
            for an open-ended question.
        answer: Gold letter ("A".."E") of a multiple-choice question, the reference answer text of an
            open-ended one, or None when unknown (unlabelled benchmark splits).
        category: Question family / first benchmark category.
        clips: T uint8 tensors [F, H, W, 3]; clip t holds clip t's frames only.
        spans: (start_s, end_s) of each clip in the source video.
        memories: Oracle / teacher memories M_1..M_T, if the shard has them.
        categories: All categories (LVBench questions are multi-label).
        meta: Everything else (duration group, source, per-benchmark keys, ...).
    """

    video_id: str
    qid: str
    question: str
    options: list[str]
    answer: str | None
    category: str
    clips: list[torch.Tensor]
    spans: list[tuple[float, float]]
    memories: list[str] | None = None
    categories: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """``"mc"`` (multiple-choice) or ``"open"`` (open-ended: no options, a free-text answer)."""
        return kind_of(len(self.options))

    @property
    def num_clips(self) -> int:
        """Number of clips T."""
        return len(self.clips)
