"""Event validation: every problem of every event reported, with the field and why."""

import pytest

from tally.errors import ValidationError
from tally.events import (
    MAX_PROBLEMS,
    Event,
    InvalidBatch,
    validate_batch,
    validate_event,
)

NOW = 1_800_000_000.0


def problems(raw: object) -> list[tuple[str, str]]:
    """(field, message) problems of one raw event."""
    return validate_event(raw, NOW, 3600, 300)[1]


@pytest.mark.parametrize(("raw", "expected"), [
    ({"counter": "Views", "key": "k"}, [("counter", "must match [a-z0-9_]{1,64}")]),
    ({"counter": "v"}, [("key", "is required")]),
    ({"counter": "v", "key": "a\nb"}, [("key", "must be printable UTF-8 (no control characters)")]),
    ({"counter": "v", "key": "k" * 257}, [("key", "must be at most 256 bytes of UTF-8")]),
    ({"counter": "v", "key": "k", "value": 1.0}, [("value", "must be a positive integer")]),
    ({"counter": "v", "key": "k", "value": True}, [("value", "must be a positive integer")]),
    ({"counter": "v", "key": "k", "value": 2**53},
     [("value", "must be between 1 and 9007199254740991")]),
    ({"counter": "v", "key": "k", "ts": 10**400},
     [("ts", "must be a finite number of epoch seconds")]),
    ({"counter": "v", "key": "k", "ts": "٢٠٢٦-11-28T10:15:03Z"},
     [("ts", "must be RFC 3339 with a time zone, e.g. 2026-11-28T10:15:03Z")]),
    ({"counter": "v", "key": "k", "ts": NOW - 3601},
     [("ts", "is older than the accepted lateness of 3600 s")]),
    ({"counter": "v", "key": "k", "ts": NOW + 301},
     [("ts", "is more than 300 s in the future (allowed clock skew)")]),
    ({"counter": "v", "key": "k", "vaule": 5}, [("vaule", "is not a known field")]),
    ({"counter": "v", "key": "k", "id": None},
     [("id", "must not be null; leave the field out for an event without id")]),
    ({"counter": None, "key": None, "user": None, "value": None, "ts": None},
     [("counter", "must not be null"), ("key", "must not be null"),
      ("user", "must not be null; leave the field out for an event without user"),
      ("value", "must not be null; leave the field out for the value 1"),
      ("ts", "must not be null; leave the field out for the time of arrival")]),
    ({"counter": "v", "key": "\U0001FAE8\u0378"},
     [("key", "must be printable UTF-8 (no control characters)")]),
    ([1], [("", "event must be a JSON object")]),
])
def test_bad_events_name_the_field_and_why(raw, expected):
    assert problems(raw) == expected


def test_good_event_defaults_value_and_time():
    event, found = validate_event({"counter": "v", "key": "k/é 🎬"}, NOW, 3600, 300)
    assert (event, found) == (Event("v", "k/é 🎬", int(NOW)), [])


def test_emoji_of_unicode_15_and_later_are_printable():
    raw = {"counter": "v", "key": "\U0001FAE8", "id": "\U0001FADF", "user": "\U0001FAE9"}
    event, found = validate_event(raw, NOW, 3600, 300)
    assert (event, found) == (Event("v", "\U0001FAE8", int(NOW), id="\U0001FADF",
                                    user="\U0001FAE9"), [])


def test_a_batch_reports_every_problem_with_its_index():
    with pytest.raises(ValidationError) as caught:
        validate_batch([{"counter": "v", "key": "k"}, {"key": 1}], NOW, 3600, 300)
    assert caught.value.problems == [(1, "counter", "is required"),
                                     (1, "key", "must be a string")]


def test_a_batch_is_checked_lazily_and_lists_at_most_max_problems():
    taken = []

    def raws():
        for n in range(300):
            taken.append(n)
            yield {"counter": "v", "key": "k", "a": 1, "b": 2} if n % 2 else {"counter": "v",
                                                                            "key": "k"}
    with pytest.raises(InvalidBatch) as caught:
        validate_batch(raws(), NOW, 3600, 300)
    assert taken == list(range(300))
    assert (caught.value.invalid, caught.value.total, caught.value.all_listed) == (150, 300, False)
    assert len(caught.value.problems) == MAX_PROBLEMS
    assert caught.value.problems[:3] == [(1, "a", "is not a known field"),
                                         (1, "b", "is not a known field"),
                                         (3, "a", "is not a known field")]
