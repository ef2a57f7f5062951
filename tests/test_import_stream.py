"""The streaming JSON list reader (data/importers/stream.py) gives exactly ``json.loads``'s elements."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from videomem.data.importers.stream import iter_json_array

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=30, deadline=None)
@given(
    data=st.lists(JSON, max_size=8),
    indent=st.sampled_from([None, 0, 2]),
    chunk=st.sampled_from([1, 2, 5, 64]),
)
def test_elements_equal_json_loads_whatever_the_buffer(tmp_path_factory, data, indent, chunk):
    path = tmp_path_factory.mktemp("s") / "a.json"
    path.write_text(json.dumps(data, indent=indent), encoding="utf-8")
    assert list(iter_json_array(path, chunk=chunk)) == json.loads(path.read_text(encoding="utf-8"))


def test_a_number_cut_by_the_buffer_is_read_whole(tmp_path):
    path = tmp_path / "n.json"
    path.write_text("[-2.5e10, 12345678901234567890, 0.125]")
    assert list(iter_json_array(path, chunk=1)) == [-2.5e10, 12345678901234567890, 0.125]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty"),
        ('{"a": 1}', "starts with '{'"),
        ("[1, 2", "',' or ']' expected at character 5, the file ends"),
        ("[1 2]", "',' or ']' expected at character 3, found '2'"),
        ('[{"a": 1}, {"a": ]', "not valid JSON in the element starting at character 11"),
        ("[1] x", "text after the closing ']'"),
    ],
)
def test_broken_files_say_where_in_one_line(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        list(iter_json_array(path, chunk=2))
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_elements_come_one_at_a_time(tmp_path):
    """The first element is yielded before the rest of the file is read: a stream, not a load."""
    path = tmp_path / "big.json"
    path.write_text(json.dumps([{"i": i, "pad": "x" * 100} for i in range(2000)]))
    reader = iter_json_array(path, chunk=256)
    assert next(reader) == {"i": 0, "pad": "x" * 100}
    frame = reader.gi_frame.f_locals["r"]
    assert len(frame.buf) < 1024 and frame.offset + frame.pos < 1024
