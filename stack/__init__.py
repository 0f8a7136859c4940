"""The local stack: Redis, PostgreSQL+TimescaleDB, InfluxDB, Prometheus, Tally's processes."""
