"""Names inside the storage backends that more than one module spells.

TimescaleDB: every counts table (one per resolution, see resolutions.py) has
the same columns, created by timescale/0001_counts.sql; the writer's column
list and conflict target come from here, and tests/test_resolutions.py checks
the migrated tables have exactly these columns and this primary key.

InfluxDB: per-key points and counter totals are two measurements in the
database named by Settings.influx_db, one retention policy per resolution.
"""

from __future__ import annotations

# TimescaleDB counts tables, columns in table order.
COLUMNS = ("bucket", "counter", "key", "value", "uniques")
PRIMARY_KEY = ("counter", "key", "bucket")

# TimescaleDB `events` table (timescale/0005_events.sql), columns in table order: the
# event log's lines (tally.ingest.counting.eventlog) are COPY text in this order.
EVENT_COLUMNS = ("ts", "counter", "key", "id", "user", "value", "props", "received")

# InfluxDB measurements, tags and fields.
MEASUREMENT = "counts"  # per key: tags counter, key; fields value, uniques
TOTALS_MEASUREMENT = "counts_total"  # per counter: tag counter; field value
