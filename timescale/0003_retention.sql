-- Expire minute counts after 7 days and hour counts after 1 year; days stay.
--
-- add_retention_policy schedules this inside TimescaleDB, but only under the
-- Timescale License; the Apache build has no job scheduler for it. Both builds
-- get tally_drop_expired_chunks(), which the flusher calls on its own schedule,
-- and which drops whole chunks (cheap) rather than deleting rows.

CREATE OR REPLACE PROCEDURE tally_drop_expired_chunks()
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM drop_chunks('counts_1m', older_than => INTERVAL '7 days');
    PERFORM drop_chunks('counts_1h', older_than => INTERVAL '1 year');
END
$$;

DO $$
BEGIN
    IF current_setting('timescaledb.license', true) = 'timescale' THEN
        PERFORM add_retention_policy('counts_1m', INTERVAL '7 days', if_not_exists => true);
        PERFORM add_retention_policy('counts_1h', INTERVAL '1 year', if_not_exists => true);
    END IF;
END
$$;
