"""Leaderboards: set/incr, score-descending order with ties by member, ranks, around, bounds."""

from __future__ import annotations

import pytest

from tally.errors import IdempotencyKeyReusedError, ValidationError
from tally.ingest.counting import leaderboard as lb
from tally.ingest.counting.leaderboard import Entry


@pytest.fixture
def board(redis_client):
    """A board with ties: carol 30, alice 20, bob 20, dave 20, erin 5."""
    for member, score in [("bob", 20), ("erin", 5), ("dave", 20), ("carol", 30), ("alice", 20)]:
        lb.update(redis_client, "game", member, score)
    return redis_client


def test_top_orders_ties_by_member(board):
    """Score descending, then member ascending; ranks are ordinal."""
    assert lb.top(board, "game", 4) == [Entry(1, "carol", 30), Entry(2, "alice", 20),
                                        Entry(3, "bob", 20), Entry(4, "dave", 20)]


def test_incr_and_set(board):
    """Increment moves a member up; set replaces its score."""
    assert lb.update(board, "game", "erin", 26, increment=True) == Entry(1, "erin", 31.0)
    assert lb.update(board, "game", "erin", 1) == Entry(5, "erin", 1.0)
    assert lb.update(board, "game", "zoe", 0.5, increment=True) == Entry(6, "zoe", 0.5)


def test_entry_and_around(board):
    """A member's rank, and its neighbours on each side clipped at the top."""
    assert lb.entry(board, "game", "bob") == Entry(3, "bob", 20)
    assert lb.entry(board, "game", "nobody") is None
    assert [e.member for e in lb.around(board, "game", "bob", 1)] == ["alice", "bob", "dave"]
    assert [e.rank for e in lb.around(board, "game", "carol", 2)] == [1, 2, 3]
    assert lb.around(board, "game", "nobody", 2) == []


def test_remove_and_size(board):
    """Removing a member closes the gap."""
    assert lb.remove(board, "game", "alice") is True
    assert lb.remove(board, "game", "alice") is False
    assert lb.size(board, "game") == 4
    assert lb.entry(board, "game", "bob") == Entry(2, "bob", 20)


def test_capacity_keeps_the_best(redis_client):
    """A bounded board keeps its best N; a member that does not make it is reported as None."""
    for i in range(10):
        lb.update(redis_client, "small", f"m{i}", i, capacity=3)
    assert [e.member for e in lb.top(redis_client, "small", 10)] == ["m9", "m8", "m7"]
    assert lb.update(redis_client, "small", "low", 1, capacity=3) is None
    assert lb.size(redis_client, "small") == 3


@pytest.mark.parametrize("score", [float("nan"), float("inf"), "7", True, None])
def test_bad_scores_are_refused(redis_client, score):
    """Only finite numbers are scores."""
    with pytest.raises(ValueError, match="finite number"):
        lb.update(redis_client, "game", "x", score)


def test_hostile_members_and_cluster(redis_cluster_client):
    """Members with braces, colons and emoji work on a cluster; the board lives in its own slot."""
    for member, score in [("{a}", 1), ("a:b c", 2), ("😀", 2)]:
        lb.update(redis_cluster_client, "b{1}", member, score)
    assert lb.top(redis_cluster_client, "b{1}", 3) == [Entry(1, "a:b c", 2), Entry(2, "😀", 2),
                                                       Entry(3, "{a}", 1)]


def test_increment_past_2_53_is_refused_and_changes_nothing(redis_client):
    lb.update(redis_client, "g", "ann", 2**53 - 1)
    with pytest.raises(ValidationError) as caught:
        lb.update(redis_client, "g", "ann", 1, increment=True)
    assert caught.value.problems == [
        (None, "delta", "the resulting score must stay below 2^53 in magnitude")]
    assert lb.entry(redis_client, "g", "ann") == (1, "ann", 2.0**53 - 1)


def test_an_idempotent_increment_applies_once_and_repeats_its_answer(board):
    """The repeat returns the first answer (rank then), not the board's state now."""
    first = lb.update(board, "game", "erin", 26, increment=True, idempotency_key="a")
    assert first == Entry(1, "erin", 31.0)
    lb.update(board, "game", "zed", 99)
    assert lb.update(board, "game", "erin", 26, increment=True, idempotency_key="a") == first
    assert lb.entry(board, "game", "erin") == Entry(2, "erin", 31.0)


def test_an_idempotent_increment_that_was_not_kept_repeats_none(redis_client):
    lb.update(redis_client, "small", "top", 10, capacity=1)
    assert lb.update(redis_client, "small", "low", 1, increment=True, capacity=1,
                     idempotency_key="k") is None
    assert lb.update(redis_client, "small", "low", 1, increment=True, capacity=1,
                     idempotency_key="k") is None


def test_an_idempotency_key_for_another_request_is_refused(redis_client):
    lb.update(redis_client, "g", "ann", 1, increment=True, idempotency_key="k")
    with pytest.raises(IdempotencyKeyReusedError):
        lb.update(redis_client, "g", "bob", 1, increment=True, idempotency_key="k")
    assert lb.entry(redis_client, "g", "bob") is None


def test_an_idempotent_increment_on_a_cluster(redis_cluster_client):
    """The record shares the board's hash tag, so the script stays in one slot."""
    for _ in range(2):
        assert lb.update(redis_cluster_client, "b{2}", "m", 2, increment=True,
                         idempotency_key="x") == Entry(1, "m", 2.0)
