"""The flusher: moves dirty buckets from Redis to the time-series sinks as absolute values."""
