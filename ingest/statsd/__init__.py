"""`tally statsd`: a StatsD-compatible listener counting through the batch step (docs/statsd.md)."""
