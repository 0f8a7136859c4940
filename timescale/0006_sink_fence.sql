-- The newest fencing token each TimescaleDB writer of the flusher has seen:
-- sink 'timescale' (the counts tables) and 'events' (the archiver).
--
-- A flusher that takes a sink's lock in Redis gets a fence one larger than
-- the last holder's and records it here at once; every write transaction
-- records it again just before it commits, with
--   ... DO UPDATE SET fence = EXCLUDED.fence WHERE sink_fence.fence <= EXCLUDED.fence
-- and aborts when that changes no row. So a flusher that lost its lock while
-- frozen (SIGSTOP, swap, a long pause) cannot commit after its successor
-- took over: its fence is smaller (ingest/flusher/fence.py, docs/flusher.md).

CREATE TABLE sink_fence (
    sink  text PRIMARY KEY,
    fence bigint NOT NULL
);
