"""The archive watermark stops at the oldest unarchived log entry, never ahead of Redis."""

from __future__ import annotations

import time

from tally.events import Event
from tally.ingest.batch.watermark import archived_until, complete, complete_before, redis_time
from tally.ingest.counting.batch import apply_batch
from tally.ingest.counting.config import CountingConfig
from tests.flusher_support import make_settings
from tests.test_event_log import archive_all


def test_watermark_waits_for_the_archiver(redis_client, redis_url, pg_dsn):
    settings = make_settings(redis_url, pg_dsn, "http://127.0.0.1:1")
    config = CountingConfig.from_settings(settings)
    before = redis_time(redis_client)
    assert before <= archived_until(redis_client, settings) <= redis_time(redis_client)

    apply_batch(redis_client, config, [Event("views", "k", int(time.time()))])
    counted = redis_time(redis_client)
    time.sleep(0.05)
    held = archived_until(redis_client, config)
    # The unarchived entry holds W at its append time, however long ago that becomes.
    assert before <= held <= counted
    time.sleep(0.05)
    assert archived_until(redis_client, config) == held

    assert archive_all(redis_client, settings).rows == 1
    assert archived_until(redis_client, config) >= counted + 0.05


def test_watermark_of_a_flushed_redis_is_its_clock(redis_client, redis_url, pg_dsn):
    settings = make_settings(redis_url, pg_dsn, "http://127.0.0.1:1")
    apply_batch(redis_client, CountingConfig.from_settings(settings),
                [Event("views", "k", int(time.time()))])
    redis_client.flushall()
    now = redis_time(redis_client)
    assert now <= archived_until(redis_client, settings) <= redis_time(redis_client)


def test_a_bucket_is_complete_only_after_its_end_plus_lateness():
    assert complete(0, 60, 100, 160)
    assert not complete(0, 60, 100, 159.999)
    settings = make_settings("redis://127.0.0.1:1", "", "http://127.0.0.1:1",
                             accepted_lateness=100, clock_skew=7)
    assert complete_before(settings, 1000) == 893
