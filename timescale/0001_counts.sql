-- Counts at three resolutions, written by the flusher as absolute values.
--
-- The primary key (counter, key, bucket) is what makes flushing idempotent:
-- the flusher upserts each bucket, so writing it twice cannot double-count.
-- Chunk intervals follow retention (7 days of minutes, 1 year of hours, days
-- forever) so expiry drops whole chunks instead of deleting rows, and the
-- (counter, bucket, value DESC) indexes serve "top keys of a counter in a
-- window". TimescaleDB's default bucket-only index is skipped: no query reads
-- across counters by time alone, and it would cost every write.

CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE TABLE IF NOT EXISTS tally_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE counts_1m (
    bucket  timestamptz NOT NULL,
    counter text NOT NULL,
    key     text NOT NULL,
    value   bigint NOT NULL,
    uniques bigint,
    PRIMARY KEY (counter, key, bucket)
);
CREATE TABLE counts_1h (LIKE counts_1m INCLUDING ALL);
CREATE TABLE counts_1d (LIKE counts_1m INCLUDING ALL);

SELECT create_hypertable('counts_1m', by_range('bucket', INTERVAL '1 day'),
                         create_default_indexes => false);
SELECT create_hypertable('counts_1h', by_range('bucket', INTERVAL '30 days'),
                         create_default_indexes => false);
SELECT create_hypertable('counts_1d', by_range('bucket', INTERVAL '365 days'),
                         create_default_indexes => false);

CREATE INDEX counts_1m_top ON counts_1m (counter, bucket, value DESC);
CREATE INDEX counts_1h_top ON counts_1h (counter, bucket, value DESC);
CREATE INDEX counts_1d_top ON counts_1d (counter, bucket, value DESC);
