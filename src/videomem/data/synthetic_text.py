"""The words of the synthetic question families: questions, oracle memories, answers, tokenizer corpus.

Memories are computed from per-clip object lists ({"colour", "shape", "onset"} dicts, the scene that
synthetic.py builds and renders), clip by clip, as an exact oracle of what M_t should hold:

| family | question | memory M_t | answer |
|---|---|---|---|
| count | How many red objects appear in the whole video? | "red objects so far: 2" | a count (letter) |
| first | What colour was the first object to appear? | "nothing seen yet" -> "first object: blue" | a colour (letter) |
| shape | What shape was the green object? | "green object: not seen yet" -> "green object: circle" | a shape (letter) |
| order | What colour was the first object of each clip, in order? | "nothing seen yet" -> "first colours so far: red blue" | "red blue" (free text) |

``order`` is open-ended: its reference answer is the colours of the first object (onset 0, unique per
clip) of every clip that has objects, in clip order, repeats kept; clips before the first object are
skipped. No single clip holds it, so it needs the memory, and a partial answer earns a partial rule
score (the ROUGE mean of ``memory.scoring`` rewards the right colours and their order).

Deliberately not here: pixels (shapes.py), scenes and shards (synthetic.py).
"""

from __future__ import annotations

from videomem.data.shapes import COLOURS, SHAPES
from videomem.data.types import LETTERS

COUNT_OPTIONS = ("1", "2", "3", "4")
MC_FAMILIES = ("count", "first", "shape")
OPEN_FAMILIES = ("order",)
FAMILIES = MC_FAMILIES + OPEN_FAMILIES
NOTHING = "nothing seen yet"
_ORDER_PREFIX = "first colours so far:"


def _first_colour(objs: list[dict]) -> str | None:
    return min(objs, key=lambda o: o["onset"])["colour"] if objs else None


def oracle_memories(family: str, clips: list[list[dict]], target: str | None) -> list[str]:
    """Oracle memories M_1..M_T from per-clip object lists ({"colour", "shape", "onset"} dicts).

    Args:
        family: One of ``FAMILIES``.
        clips: Objects of each clip, in clip order.
        target: The colour the question names (count, shape); None for first and order.
    """
    out, count, first, shape, firsts = [], 0, None, None, []
    for objs in clips:
        if family == "count":
            count += sum(o["colour"] == target for o in objs)
            out.append(f"{target} objects so far: {count}")
        elif family == "first":
            first = first or _first_colour(objs)
            out.append(NOTHING if first is None else f"first object: {first}")
        elif family == "shape":
            shape = shape or next((o["shape"] for o in objs if o["colour"] == target), None)
            out.append(f"{target} object: {shape or 'not seen yet'}")
        elif family == "order":
            firsts += [c] if (c := _first_colour(objs)) else []
            out.append(f"{_ORDER_PREFIX} {' '.join(firsts)}" if firsts else NOTHING)
        else:
            raise ValueError(f"unknown family {family!r}")
    return out


def answer_from_memory(memory: str, options: list[str]) -> str | None:
    """Letter of the option the memory's final value names, None if it names none (e.g. 'so far: 0')."""
    value = memory.rsplit(":", 1)[-1].strip()
    return LETTERS[options.index(value)] if value in options else None


def reference_from_memory(memory: str) -> str | None:
    """The open-ended answer an ``order`` memory gives ("red blue"), None before any object."""
    return memory[len(_ORDER_PREFIX) :].strip() if memory.startswith(_ORDER_PREFIX) else None


def question_text(family: str, target: str | None) -> str:
    """The question sentence of a family."""
    return {
        "count": f"How many {target} objects appear in the whole video?",
        "first": "What colour was the first object to appear?",
        "shape": f"What shape was the {target} object?",
        "order": "What colour was the first object of each clip, in order?",
    }[family]


def tokenizer_corpus() -> list[str]:
    """Every sentence the generator can emit (questions, options, memories, answers), for the tiny tokenizer."""
    lines = [question_text("first", None), question_text("order", None), NOTHING, *COUNT_OPTIONS, *SHAPES]
    for c in COLOURS:
        lines += [question_text("count", c), question_text("shape", c), c, f"first object: {c}"]
        lines += [f"{c} objects so far: {n}" for n in range(len(COUNT_OPTIONS) + 1)]
        lines += [f"{c} object: {s}" for s in (*SHAPES, "not seen yet")]
        lines += [f"{_ORDER_PREFIX} {c}", *(f"{c} {d}" for d in COLOURS)]  # colour sequences
    return lines
