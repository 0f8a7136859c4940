"""The counting core: Tally's atomic batch step, reads, leaderboards and rate limits on Redis."""
