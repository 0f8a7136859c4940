"""Event props: the limits of names, values and entries, through validate_event and the API."""

from __future__ import annotations

import string

import jsonschema_rs
import pytest
import unicodedata2
from hypothesis import given, settings
from hypothesis import strategies as st

from tally.events import Event, validate_event
from tally.ingest.api.batch_json import MAX_VALUE_CHARS
from tally.ingest.api.openapi import document
from tests.test_api_support import W

NOW = 1_800_000_000.0
BASE = {"counter": "v", "key": "k"}
NOT_A_NUMBER = "must be a string (props values are text; send numbers as strings)"
NOT_A_BOOLEAN = "must be a string (props values are text; send booleans as strings)"
NOT_NESTED = "must be a string (props values are text, not lists or objects)"


def check(props: object) -> tuple[Event | None, list]:
    """validate_event on an event with these props."""
    return validate_event({**BASE, "props": props}, NOW, 3600, 300)


def problems(props: object) -> list[tuple[str, str]]:
    """(field, message) problems of an event with these props."""
    return check(props)[1]


@pytest.mark.parametrize("props", [
    {f"p{n}": "x" for n in range(16)},
    {"n" * 64: "x"},
    {"a_1": "é" * 128},  # 256 bytes of UTF-8
    {"a": "\U0001F3AC" * 64},  # 64 characters, 256 bytes
    {"a": "€" * 85 + "a"},
    {"a": " spaced out ", "b": "\U0001FAE8"},  # the space is printable; an emoji of Unicode 15
])
def test_props_at_the_limits_are_kept_as_a_plain_dict(props):
    event, found = check(props)
    assert found == []
    assert event == Event("v", "k", int(NOW), props=props)
    assert type(event.props) is dict


def test_empty_props_mean_no_props():
    assert check({}) == (Event("v", "k", int(NOW)), [])
    assert validate_event(BASE, NOW, 3600, 300) == (Event("v", "k", int(NOW)), [])


@pytest.mark.parametrize(("props", "expected"), [
    ({f"p{n}": "x" for n in range(17)}, [("props", "must have at most 16 entries, not 17")]),
    ({"n" * 65: "x"}, [("props", f"name {'n' * 65!r} must match [a-z0-9_]{{1,64}}")]),
    ({"n" * 100: "x"}, [("props", f"name {'n' * 64 + '…'!r} must match [a-z0-9_]{{1,64}}")]),
    ({"Country": "de"}, [("props", "name 'Country' must match [a-z0-9_]{1,64}")]),
    ({"": "de"}, [("props", "name '' must match [a-z0-9_]{1,64}")]),
    ({"a-b": "x", "a.b": "x", "a b": "x", "ä": "x", "a\n": "x"},
     [("props", f"name {name!r} must match [a-z0-9_]{{1,64}}")
      for name in ["a-b", "a.b", "a b", "ä", "a\n"]]),
    ({"a": "é" * 128 + "a"}, [("props.a", "must be at most 256 bytes of UTF-8")]),
    ({"a": "\U0001F3AC" * 64 + "a"}, [("props.a", "must be at most 256 bytes of UTF-8")]),
    ({"a": ""}, [("props.a", "must not be empty")]),
    ({"a": "x\ny"}, [("props.a", "must be printable UTF-8 (no control characters)")]),
    ({"a": "\x00"}, [("props.a", "must be printable UTF-8 (no control characters)")]),
    ({"a": "x\u200by"}, [("props.a", "must be printable UTF-8 (no control characters)")]),
    ({"a": "x\ud800"}, [("props.a", "must be printable UTF-8 (no control characters)")]),
    ({"country": 49}, [("props.country", NOT_A_NUMBER)]),
    ({"ratio": 0.5}, [("props.ratio", NOT_A_NUMBER)]),
    ({"paid": True}, [("props.paid", NOT_A_BOOLEAN)]),
    ({"paid": False}, [("props.paid", NOT_A_BOOLEAN)]),
    ({"tags": ["a"]}, [("props.tags", NOT_NESTED)]),
    ({"geo": {"country": "de"}}, [("props.geo", NOT_NESTED)]),
    ({"plan": None}, [("props.plan", "must not be null; leave the entry out for no value")]),
    ({"ok": "x", "Bad": "x", "n": 1, "e": ""},
     [("props", "name 'Bad' must match [a-z0-9_]{1,64}"), ("props.n", NOT_A_NUMBER),
      ("props.e", "must not be empty")]),
    (None, [("props", "must not be null; leave the field out for an event without props")]),
    (["a", "b"], [("props", "must be a JSON object of names to text values")]),
    ("country=de", [("props", "must be a JSON object of names to text values")]),
    (1, [("props", "must be a JSON object of names to text values")]),
])
def test_bad_props_name_the_field_and_why(props, expected):
    assert problems(props) == expected


def test_a_prop_value_breaks_the_same_rules_as_a_key_with_the_same_message():
    for text in ["", "a\tb", "\ud800", "\u0378", "k" * 257]:
        assert [m for _, m in problems({"a": text})] == [
            m for _, m in validate_event({"counter": "v", "key": text}, NOW, 3600, 300)[1]]


def test_prop_problems_come_with_the_other_fields_problems():
    raw = {"counter": "V", "key": "k", "props": {"n": 1}}
    assert validate_event(raw, NOW, 3600, 300)[1] == [
        ("counter", "must match [a-z0-9_]{1,64}"), ("props.n", NOT_A_NUMBER)]


# --- a property: validate_event accepts props exactly when an independent reading of the rules does

NAME_CHARS = frozenset(string.ascii_lowercase + string.digits + "_")


def reference_valid(props: object) -> bool:
    """The rules of docs/events.md, written out again without tally's code."""
    def good_value(value: object) -> bool:
        return (type(value) is str and 1 <= len(value.encode("utf-8", "surrogatepass")) <= 256
                and all(c == " " or unicodedata2.category(c)[0] not in "CZ" for c in value))
    return type(props) is dict and len(props) <= 16 and all(
        1 <= len(name) <= 64 and set(name) <= NAME_CHARS and good_value(value)
        for name, value in props.items())


good_names = st.from_regex(r"[a-z0-9_]{1,64}", fullmatch=True)
good_values = st.text(st.characters(exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl",
                                                        "Zp", "Zs")) | st.just(" "),
                      min_size=1, max_size=90)  # up to 360 bytes: on both sides of 256
tricky_text = st.text(st.sampled_from(["a", "Z", "_", "-", " ", "é", "\U0001F3AC", "\x00",
                                       "\n", "\u200b", "\ud800", "\u0378"]), max_size=70)
any_values = (good_values | tricky_text | st.text() | st.integers() | st.floats()
              | st.booleans() | st.none() | st.lists(st.text(max_size=3), max_size=2)
              | st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2))
valid_props = st.dictionaries(good_names, good_values, max_size=16)
mixed_props = st.dictionaries(good_names | tricky_text, any_values, max_size=20)
not_objects = st.none() | st.text(max_size=5) | st.integers() | st.lists(st.text(max_size=3))


@given(props=valid_props | mixed_props | not_objects)
@settings(max_examples=500, deadline=None)
def test_validate_event_accepts_exactly_the_props_the_rules_allow(props):
    event, found = check(props)
    assert (found == []) == reference_valid(props), found
    if found:
        assert all(field == "props" or field.startswith("props.") for field, _ in found)
    else:
        assert event.props == (props or None)


# --- the OpenAPI document says the same where JSON Schema can say it

def document_allows(event: dict) -> bool:
    """Whether the document's Event schema (JSON Schema 2020-12, as OpenAPI 3.1) allows it."""
    schema = document()["components"]["schemas"]["Event"]
    return jsonschema_rs.Draft202012Validator(schema).is_valid(event)


@pytest.mark.parametrize("props", [{}, {f"p{n}": "x" for n in range(16)}, {"n" * 64: "é" * 128}])
def test_the_document_allows_valid_props(props):
    assert document_allows({**BASE, "props": props})


@pytest.mark.parametrize("props", [{f"p{n}": "x" for n in range(17)}, {"n" * 65: "x"},
                                   {"Country": "x"}, {"a": 1}, {"a": True}, {"a": None},
                                   {"a": ["x"]}, {"a": ""}, {"a": "x" * 257}, None, ["x"]])
def test_the_document_refuses_what_it_can_express(props):
    assert not document_allows({**BASE, "props": props})


# --- through the real API and Redis

EVENT = {"counter": "views", "key": "video:1", "id": "e1"}


def total(redis_client, key: str = "video:1") -> int:
    """All-time count of a key, read from Redis through the core."""
    from tally.ingest.counting import reads
    from tally.ingest.counting.config import CountingConfig
    return reads.total(redis_client, CountingConfig(), "views", key)


def test_a_batch_with_props_counts(api, redis_client):
    batch = [{**EVENT, "props": {"country": "de", "plan": "pro"}},
             {**EVENT, "id": "e2", "props": {}}, {**EVENT, "id": "e3"}]
    response = api.post("/v1/events", json=batch, headers=W)
    assert (response.status_code, response.json) == (200, {"accepted": 3, "duplicates": 0})
    assert total(redis_client) == 3


@pytest.mark.parametrize(("props", "error"), [
    ({"country": 49}, {"field": "props.country", "message": NOT_A_NUMBER}),
    ({"Country": "de"}, {"field": "props",
                         "message": "name 'Country' must match [a-z0-9_]{1,64}"}),
    ({"note": "a" * 300}, {"field": "props.note", "message": "must be at most 256 bytes of UTF-8"}),
    (None, {"field": "props",
            "message": "must not be null; leave the field out for an event without props"}),
])
def test_a_bad_prop_refuses_the_whole_batch_and_changes_nothing(api, redis_client, props, error):
    batch = [{**EVENT, "props": {"country": "de"}}, {**EVENT, "id": "e2", "props": props}]
    response = api.post("/v1/events", json=batch, headers=W)
    assert (response.status_code, response.mimetype) == (400, "application/problem+json")
    assert response.json["type"] == "urn:tally:problem:validation"
    assert response.json["errors"] == [{"index": 1, **error}]
    assert total(redis_client) == 0
    assert redis_client.dbsize() == 0  # no count, no dedup mark, no event log entry


def escaped(text: str) -> str:
    """A JSON string of BMP text with every character written as a \\u escape."""
    return '"' + "".join(f"\\u{ord(c):04x}" for c in text) + '"'


def test_an_event_at_every_limit_fully_escaped_fits_the_one_event_limit(api, redis_client):
    texts = {"counter": "c" * 64, "key": "k" * 256, "id": "i" * 128, "user": "u" * 128}
    props = ", ".join(f"{escaped(f'{n:02}' + 'n' * 62)}: {escaped('v' * 256)}" for n in range(16))
    fields = [f"{escaped(name)}: {escaped(text)}" for name, text in texts.items()]
    data = "{" + ", ".join([*fields, f'"value": {2**53 - 1}', f'"props": {{{props}}}']) + "}"
    assert 32 * 1024 < len(data) < MAX_VALUE_CHARS
    response = api.post("/v1/events", data=data, headers={**W, "Content-Type": "application/json"})
    assert (response.status_code, response.json) == (200, {"accepted": 1, "duplicates": 0})
