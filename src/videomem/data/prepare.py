"""A pipeline stage that prepares each decoded clip for the model in the DataLoader workers.

``PrepareClips(transform)`` replaces every clip of every question with ``transform(frames)``, e.g. the
vision patches, grid and normalisation a Qwen-VL policy wants (``videomem.model.vision.FramePatcher``,
built by Hydra from the model config and handed to the datamodule as ``transform``), so that the
training step only moves tensors to its device. The questions of one video arrive together and share
their frame tensors; they share the prepared clips too (one transform per clip, and the rows that show
a clip still share one vision encode downstream).

It deliberately knows nothing of models: the transform is any picklable callable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from torch.utils.data import IterableDataset

from videomem.data.types import VideoQA


class PrepareClips:
    """Pipeline stage: ``qa.clips[t]`` -> ``transform(qa.clips[t])`` for every question.

    Args:
        transform: Frames ``[F, H, W, 3]`` uint8 -> whatever the model consumes.
    """

    def __init__(self, transform: Callable) -> None:
        self.transform = transform

    def __call__(self, questions: Iterable[VideoQA | None]) -> Iterator[VideoQA | None]:
        done: dict[int, tuple[object, object]] = {}  # id(frames) -> (frames, prepared), this video
        for qa in questions:
            if qa is None:  # an evaluation stream's padding slot (eval_stream.py): nothing to prepare
                yield qa
                continue
            if not any(id(c) in done for c in qa.clips):  # a new video: forget the last one's clips
                done = {}
            for c in qa.clips:
                if id(c) not in done:
                    done[id(c)] = (c, self.transform(c))  # the frames kept: their id stays theirs
            qa.clips = [done[id(c)][1] for c in qa.clips]
            yield qa


class PreparedStream(IterableDataset):
    """A stream of questions (``TrainStream``, ``EvalStream``) with ``PrepareClips`` applied in whichever
    process iterates it (a DataLoader worker). Its length is the wrapped stream's."""

    def __init__(self, stream: IterableDataset, transform: Callable) -> None:
        self.stream, self.prepare = stream, PrepareClips(transform)

    def __len__(self) -> int:
        return len(self.stream)

    def __iter__(self) -> Iterator[VideoQA | None]:
        return self.prepare(iter(self.stream))
