"""The batch layer: counts rebuilt exactly from the `events` log, sealed days, backfill import.

See docs/flusher.md, "Batch layer". watermark.py decides how far the log is
complete; rebuild.py recomputes counts_1m/1h/1d and the InfluxDB points of a
range from `events`; seal.py makes closed days final; importer.py loads
history of any age into `events`.
"""
