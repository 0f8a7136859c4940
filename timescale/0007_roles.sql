-- The application role: what ingest, the flusher and the exporter log in as.
--
-- tally_app reads and writes rows and nothing more: no DDL (it cannot create,
-- alter, drop or truncate a table; the schema belongs to the role running the
-- migrations, tally_owner in the local stack), and no writes to
-- tally_migrations. Retention needs drop_chunks, which only a table's owner
-- may call, so the two retention routines run as their owner (SECURITY
-- DEFINER, with a fixed search_path) and only tally_app may execute them.
-- ALTER DEFAULT PRIVILEGES gives tables made by later migrations the same
-- grants. A later migration that replaces one of the routines must repeat
-- SECURITY DEFINER and the EXECUTE grants below.
--
-- The role is created NOLOGIN when missing (compose); the local stack creates
-- it beforehand with a login and its generated password (stack/pg_roles.py).

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tally_app') THEN
        CREATE ROLE tally_app NOLOGIN;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA public TO tally_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO tally_app;
REVOKE INSERT, UPDATE, DELETE ON tally_migrations FROM tally_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO tally_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO tally_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO tally_app;

ALTER PROCEDURE tally_drop_expired_chunks() SECURITY DEFINER SET search_path = public, pg_temp;
REVOKE ALL ON PROCEDURE tally_drop_expired_chunks() FROM PUBLIC;
GRANT EXECUTE ON PROCEDURE tally_drop_expired_chunks() TO tally_app;

-- The events' retention is a setting (TALLY_EVENTS_RETENTION), so it is an argument.
CREATE OR REPLACE FUNCTION tally_drop_event_chunks(days integer)
RETURNS SETOF text
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT drop_chunks('events', older_than => make_interval(days => days))
$$;
REVOKE ALL ON FUNCTION tally_drop_event_chunks(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tally_drop_event_chunks(integer) TO tally_app;
