"""TimescaleDB migrations: numbered SQL files, applied in order by `tally migrate`."""
