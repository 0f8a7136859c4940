-- Hour counts expire after 365 days, as in InfluxDB (hour_1y) and tally/resolutions.py.
--
-- 0003 said INTERVAL '1 year', a calendar year (366 days after a leap day)
-- where every other place said 365 days. Retention is counted in days only.

CREATE OR REPLACE PROCEDURE tally_drop_expired_chunks()
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM drop_chunks('counts_1m', older_than => INTERVAL '7 days');
    PERFORM drop_chunks('counts_1h', older_than => INTERVAL '365 days');
END
$$;

DO $$
BEGIN
    IF current_setting('timescaledb.license', true) = 'timescale' THEN
        PERFORM remove_retention_policy('counts_1h', if_exists => true);
        PERFORM add_retention_policy('counts_1h', INTERVAL '365 days');
    END IF;
END
$$;
