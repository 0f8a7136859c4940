"""The batch parsers (tally.ingest.api.body) agree with parsing the whole text at once.

`json_values` parses a top-level array one element at a time from bounded
windows of the text, and `ndjson` one line at a time: both must give the same
values as `loads` of the whole text (or of each line), and the same error,
at the same line and column, wherever an element falls across a window.
"""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tally.ingest.api.batch_json import MAX_VALUE_CHARS, json_values, ndjson
from tally.ingest.api.body import loads
from tally.ingest.api.problems import Problem


def outcome(parse, text: str):
    """("ok", values) or (status, slug, detail) of a parse."""
    try:
        return "ok", list(parse(text))
    except Problem as problem:
        return problem.status, problem.slug, problem.detail


def whole(text: str) -> list:
    """The reference: one parse of the whole text."""
    value = loads(text)
    return value if isinstance(value, list) else [value]


scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**60, 2**60),
                    st.floats(allow_nan=False, allow_infinity=False),
                    st.text(alphabet="ab\"\\\n é😀\u2028", max_size=8))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.text(alphabet="abc", min_size=1, max_size=3), inner, max_size=4)),
    max_leaves=12)
spaces = st.text(alphabet=" \t\r\n", max_size=3)


@st.composite
def arrays(draw) -> str:
    """A JSON array text with arbitrary whitespace, sometimes corrupted at one place."""
    items = draw(st.lists(values, max_size=6))
    parts = [draw(spaces) + json.dumps(item, ensure_ascii=draw(st.booleans())) + draw(spaces)
             for item in items]
    text = draw(spaces) + "[" + ",".join(parts) + "]" + draw(spaces)
    if draw(st.booleans()):
        at = draw(st.integers(0, len(text)))
        cut = draw(st.sampled_from(["", ",", "]", "[", "{", '"', "x", " 1", "\\"]))
        text = text[:at] + cut + text[at + draw(st.integers(0, 2)):]
    return text


@settings(max_examples=400, deadline=None)
@given(arrays(), st.booleans())
def test_small_arrays_parse_as_a_whole_text_does(text, padded):
    """Padded past MAX_VALUE_CHARS, a body is parsed value by value, else whole: same outcome."""
    if padded:
        text += " " * MAX_VALUE_CHARS
    expected = outcome(whole, text)
    got = outcome(json_values, text)
    if got[:2] == (400, "invalid-body"):  # a top-level scalar: not a batch
        assert expected[0] == "ok" and not isinstance(loads(text), dict | list)
        assert got[2].startswith("body must be a JSON array of event objects or one event ")
        return
    assert got == expected


def big_array(rng: random.Random, size: int) -> str:
    """An array of about `size` characters of varied elements and whitespace."""
    parts, total = [], 0
    while total < size:
        length = rng.choice([1, 10, 300, 5000, 9000])  # each element under the limit
        kind = rng.random()
        if kind < 0.3:
            item = json.dumps({"counter": "v", "key": "é\\\"" * (length // 6) + "x"})
        elif kind < 0.5:
            item = json.dumps(["\u2028" * length], ensure_ascii=rng.random() < 0.5)
        elif kind < 0.7:
            item = " " * length + str(rng.randrange(10**15))
        else:
            item = json.dumps([[i, {"a": None}] for i in range(length // 16)])
        parts.append(item + "\n" * rng.randrange(3))
        total += len(parts[-1])
    return "[" + ",".join(parts) + "]"


@pytest.mark.parametrize("seed", range(6))
def test_large_arrays_parse_as_a_whole_text_does_across_windows(seed):
    """Megabytes of elements, so that many fall across window boundaries."""
    rng = random.Random(seed)
    text = big_array(rng, 1_500_000)
    assert outcome(json_values, text) == ("ok", whole(text))
    for _ in range(10):  # one corruption at a time, anywhere, gives the whole text's error
        at = rng.randrange(len(text))
        broken = text[:at] + rng.choice(["x", "{", '"', "]", ",,", "\\u12"]) + text[at + 1:]
        expected, got = outcome(whole, broken), outcome(json_values, broken)
        if got[:2] == (413, "too-large"):  # a string left open: an element past the limit
            assert expected[0] == 400 and "Unterminated string" in expected[2], expected
        else:
            assert got == expected


def test_an_element_at_the_limit_parses_and_one_past_it_is_refused():
    at_limit = json.dumps(["x" * (MAX_VALUE_CHARS - 4)])
    assert len(at_limit) == MAX_VALUE_CHARS
    text = "[" + ",".join([at_limit] * 5) + "]"
    assert outcome(json_values, text) == ("ok", [["x" * (MAX_VALUE_CHARS - 4)]] * 5)
    past = "[1, " + json.dumps(["x" * (MAX_VALUE_CHARS - 3)]) + "]"
    assert outcome(json_values, past) == (
        413, "too-large", f"body has a value (at line 1 column 5) longer than {MAX_VALUE_CHARS} "
                          "characters of JSON, the limit for one event")


@pytest.mark.parametrize("before", [0, 1000, 200_000, 250_000])
def test_a_number_cut_by_the_window_is_not_taken_short(before):
    """A long number is read whole or refused, never read as the part inside a window."""
    padding = " " * before
    at_limit = "0." + "1" * (MAX_VALUE_CHARS - 2)
    text = f"[{padding}{at_limit}, {padding}{at_limit}, 7]" + " " * 300_000
    assert outcome(json_values, text) == ("ok", whole(text))
    past = "0." + "1" * (MAX_VALUE_CHARS + 100)
    assert outcome(json_values, f"[{padding}{past}]" + " " * 300_000)[:2] == (413, "too-large")


def old_ndjson(text: str) -> list:
    """The reference: every line split at once, each non-blank one parsed."""
    return [loads(line, f"line {n}") for n, line in enumerate(text.split("\n"), 1)
            if line.strip(" \t\r")]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(values.map(json.dumps), spaces, st.just("{oops"), st.just("\x0c")),
                max_size=6))
def test_ndjson_parses_line_by_line_as_before(lines):
    text = "\n".join(lines)
    assert outcome(ndjson, text) == outcome(old_ndjson, text)


@pytest.mark.parametrize("seed", range(4))
def test_ndjson_of_many_lines_is_searched_line_by_line_with_the_same_result(seed):
    """Over 65,536 lines (mostly blank here) take the line-by-line path: same values, errors."""
    rng = random.Random(seed)
    lines = [rng.choice(["", " ", "\t\r", json.dumps({"n": n, "s": "é\u2028"}, ensure_ascii=False),
                         "\x0c"])
             for n in range(90_000)]
    if seed % 2:
        lines = [line for line in lines if line != "\x0c"]
    text = "\n".join(lines)
    assert text.count("\n") >= 65_536
    assert outcome(ndjson, text) == outcome(old_ndjson, text)
