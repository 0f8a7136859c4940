-- A read-only role for dashboards (Grafana's TimescaleDB data source).
--
-- Roles belong to the whole PostgreSQL cluster, so the role is created only
-- when missing. It starts NOLOGIN; `tally migrate` gives it LOGIN and a
-- password when TALLY_READER_PASSWORD is set, keeping secrets out of SQL files.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tally_reader') THEN
        CREATE ROLE tally_reader NOLOGIN;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA public TO tally_reader;
GRANT SELECT ON counts_1m, counts_1h, counts_1d TO tally_reader;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO tally_reader;
