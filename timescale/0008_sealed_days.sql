-- The batch layer's record of sealed UTC days (docs/flusher.md, "Batch layer").
--
-- A day is sealed once it can no longer change: its events are past the
-- accepted lateness and the archiver has stored every event accepted up to
-- then, so `tally rebuild` has recomputed its counts rows exactly from
-- `events`. Sealed rows are final: the flusher no longer writes them and the
-- API serves them from the database. One row per day for every counter: a
-- day is sealed for all counters at once, because the watermark that decides
-- it (the archiver's progress) is one for the whole log.

CREATE TABLE sealed_days (
    day       date PRIMARY KEY,
    sealed_at timestamptz NOT NULL DEFAULT now(),
    events    bigint NOT NULL  -- events the rebuild read for this day
);

GRANT SELECT ON sealed_days TO tally_reader;
