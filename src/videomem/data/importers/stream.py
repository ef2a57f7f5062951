"""Read a JSON array one element at a time, so a multi-GB annotation file never sits in memory whole.

``iter_json_array(path)`` yields the elements of the file's top-level list in order, holding only the
element being read and a read buffer (1 MiB, grown while one element is larger). Each element is
decoded by the standard library's ``json.JSONDecoder.raw_decode``, so values come out exactly as
``json.loads`` gives them (same numbers, same strings, same errors) at the speed of its C scanner.

Deliberately not here: what an element means (formats.py), JSON lines (read line by line instead).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

CHUNK = 1 << 20  # characters read at a time
MAX_ELEMENT = 64 << 20  # an element longer than this is taken for broken JSON, not read further
_WHITESPACE = " \t\n\r"
_ENDS = _WHITESPACE + ",]"


class _Reader:
    """A text file seen through a buffer that drops what was consumed."""

    def __init__(self, f, chunk: int) -> None:
        self.f, self.chunk = f, chunk
        self.buf, self.pos, self.offset, self.eof = "", 0, 0, False

    def more(self, at_least: int) -> bool:
        """Read at least ``at_least`` more characters (fewer at the end of the file); False at its end."""
        if self.eof:
            return False
        self.offset += self.pos
        self.buf, self.pos = self.buf[self.pos :], 0
        data = self.f.read(max(self.chunk, at_least))
        self.eof = not data
        self.buf += data
        return bool(data)

    def peek(self) -> str:
        """The next character that is not whitespace ("" at the end of the file), not consumed."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in _WHITESPACE:
                self.pos += 1
            if self.pos < len(self.buf) or not self.more(0):
                return self.buf[self.pos : self.pos + 1]


def iter_json_array(path: str | Path, *, chunk: int = CHUNK) -> Iterator[object]:
    """The elements of the top-level JSON list in ``path``, one at a time.

    Raises:
        ValueError: The file is not a JSON list (one line naming the file and the character where the
            JSON breaks).
    """
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8") as f:
        r = _Reader(f, chunk)
        first = r.peek()
        if first != "[":
            what = "is empty" if not first else f"starts with {first!r}"
            raise ValueError(f"{path}: a JSON list of records was expected, but the file {what}")
        r.pos += 1
        expect_comma = False
        while True:
            c = r.peek()
            if c == "]":
                r.pos += 1
                if r.peek():
                    raise ValueError(f"{path}: text after the closing ']' at character {r.offset + r.pos}")
                return
            if expect_comma:
                if c != ",":
                    where = "the file ends" if not c else f"found {c!r}"
                    raise ValueError(f"{path}: ',' or ']' expected at character {r.offset + r.pos}, {where}")
                r.pos += 1
                r.peek()
            start = r.offset + r.pos
            while True:
                try:
                    element, end = decoder.raw_decode(r.buf, r.pos)
                    # complete only if a delimiter follows: a number cut by the buffer ("-2." of
                    # "-2.5") decodes too
                    if (
                        r.eof
                        or len(r.buf) - r.pos > MAX_ELEMENT
                        or (end < len(r.buf) and r.buf[end] in _ENDS)
                    ):
                        break
                except json.JSONDecodeError as err:
                    if r.eof or len(r.buf) - r.pos > MAX_ELEMENT:
                        raise ValueError(
                            f"{path}: not valid JSON in the element starting at character {start}: {err.msg}"
                        ) from None
                # the element goes on past the buffer: read more (twice the element so far, so a
                # large element costs linear time)
                r.more(2 * (len(r.buf) - r.pos))
            r.pos = end
            expect_comma = True
            yield element
