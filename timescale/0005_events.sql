-- The raw event log: every event Tally counted, once, moved here from the
-- Redis log streams by the flusher's archiver (ingest/flusher/archive.py).
--
-- Columns follow tally/backends.py EVENT_COLUMNS: the log lines are COPY text
-- in this order. `received` is when the ingest service accepted the batch.
--
-- Exactly once without a unique index on the events themselves: an event
-- without an id has no identity, and a unique index over every row would
-- cost the table its size again and COPY its speed. Instead the archiver
-- records, in the same transaction as its COPY, the last log entry it stored
-- per stream (event_log_positions, locked FOR UPDATE), and skips entries at
-- or below it: re-archiving after a crash, or a second archiver racing the
-- first, inserts nothing twice.
--
-- Chunks of one day: the retention (TALLY_EVENTS_RETENTION, 35 days by
-- default) drops whole days, and a day's chunk of a busy counter stays a
-- fraction of memory. Indexes serve "one counter and key over a time range"
-- and "one counter over a time range"; TimescaleDB's default time-only index
-- is skipped, no query reads across counters.

CREATE TABLE events (
    ts       timestamptz NOT NULL,
    counter  text NOT NULL,
    key      text NOT NULL,
    id       text,
    "user"   text,
    value    bigint NOT NULL,
    props    jsonb,
    received timestamptz NOT NULL
);
SELECT create_hypertable('events', by_range('ts', INTERVAL '1 day'),
                         create_default_indexes => false);
CREATE INDEX events_counter_key_ts ON events (counter, key, ts DESC);
CREATE INDEX events_counter_ts ON events (counter, ts DESC);

-- The archive position of each log stream: the ID (ms, seq) of the last
-- entry committed to `events`.
CREATE TABLE event_log_positions (
    stream   text PRIMARY KEY,
    last_ms  bigint NOT NULL,
    last_seq bigint NOT NULL
);

GRANT SELECT ON events TO tally_reader;
