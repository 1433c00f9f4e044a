"""theorycheck.io's JSON writer: standard JSON (no NaN/Infinity tokens), the same content as
json.dumps would carry, non-finite floats as the strings "inf", "-inf", "nan"."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from theorycheck.io import JSON_INDENT_DEPTH, dumps_json, write_json


def reference(obj):
    """The expected parsed value, written independently of theorycheck.io."""
    if isinstance(obj, np.ndarray):
        return [reference(v) for v in obj.tolist()]
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, dict):
        return {str(k): reference(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [reference(v) for v in obj]
    return obj


def strict_loads(text: str):
    def refuse(token):
        raise AssertionError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


floats = st.floats(allow_nan=True, allow_infinity=True)
leaves = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), floats, st.text(max_size=5),
                   floats.map(np.float64), st.integers(-100, 100).map(np.int64),
                   st.lists(floats, max_size=4).map(np.array))
documents = st.recursive(leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.tuples(inner, inner),
    st.dictionaries(st.text(max_size=4), inner, max_size=4)), max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(documents)
def test_dumps_json_is_standard_and_carries_the_content(doc):
    assert strict_loads(dumps_json(doc)) == reference(doc)


def test_layout_is_indented_to_the_stated_depth_and_compact_below():
    doc = {"vocabulary": ["a", "b"], "queries": [{"sccs": [["a", "b"], ["c"]], "levels": [0, 1]}],
           "path": [{"R": 1.0, "loss": float("inf")}]}
    text = dumps_json(doc)
    lines = text.splitlines()
    assert lines[0] == "{" and lines[-1] == "}"
    assert '    {"sccs": [["a", "b"], ["c"]], "levels": [0, 1]}' in lines  # one line per query
    assert '    {"R": 1.0, "loss": "inf"}' in lines
    assert '    "a",' in lines  # depth-1 list: one item per line
    assert max(len(line) - len(line.lstrip(" ")) for line in lines) == 2 * JSON_INDENT_DEPTH


def test_non_string_keys_are_written_as_json_dumps_writes_them():
    doc = {1: "a", 2.5: "b", False: "c", None: "d"}
    assert strict_loads(dumps_json(doc)) == json.loads(json.dumps(doc))


def test_write_json_is_deterministic_and_atomic(tmp_path):
    doc = {"x": np.arange(4.0), "y": [float("nan")]}
    path = tmp_path / "out.json"
    write_json(path, doc)
    first = path.read_bytes()
    write_json(path, doc)
    assert path.read_bytes() == first and first.endswith(b"\n")
    assert strict_loads(first.decode()) == {"x": [0.0, 1.0, 2.0, 3.0], "y": ["nan"]}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporary file left behind


def test_a_circular_structure_is_refused_as_json_dumps_refuses_it():
    loop: list = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular reference"):
        dumps_json({"a": {"b": loop}})
