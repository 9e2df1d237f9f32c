"""The gateway's Prometheus metrics (documented in the README)."""

from prometheus_client import Counter, Gauge, Histogram

PACKS_RECEIVED = Counter("wattline_gateway_packs_received_total", "SenML packs received from the broker")
READINGS_RECEIVED = Counter("wattline_gateway_readings_received_total", "Valid readings decoded from packs")
READINGS_STORED = Counter("wattline_gateway_readings_stored_total", "Readings committed as new rows")
READINGS_DUPLICATE = Counter("wattline_gateway_readings_duplicate_total",
                             "Readings absorbed because (sensor, time) was already stored")
REJECTED = Counter("wattline_gateway_rejected_total", "Packs or records rejected, by reason", ["reason"])
LATE_MERGED = Counter("wattline_gateway_late_readings_merged_total",
                      "Readings of a packed day merged into their sensor's packed row")
RATE_LIMITED_BRIDGES = Gauge("wattline_gateway_rate_limited_bridges",
                             "Bridges over their byte rate now (their packs are rejected as rate_limited)")
SENSORS_DISCOVERED = Counter("wattline_gateway_sensors_discovered_total", "Unknown sensors first heard")
BATCH_SECONDS = Histogram("wattline_gateway_batch_seconds", "Decode + commit time of one batch",
                          buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
LAG_SECONDS = Gauge("wattline_gateway_lag_seconds", "Commit time minus broker receipt of the batch's oldest pack")
SPOOL_BYTES = Gauge("wattline_gateway_spool_bytes", "Bytes waiting in the local disk spool")
SPOOLED_PACKS = Counter("wattline_gateway_spooled_packs_total", "Packs written to the spool while the DB was down")
DB_UP = Gauge("wattline_gateway_database_up", "1 while the last database write succeeded")
UNACKED = Gauge("wattline_gateway_unacked_packs", "Packs received but not yet durable (not acked)")
DB_TIMEOUTS = Counter("wattline_gateway_database_timeouts_total",
                      "Database calls that did not answer within db_write_timeout_s (connection broken, batch spooled)")
UNPROCESSABLE_LOST = Counter("wattline_gateway_unprocessable_lost_total",
                             "Packs that could not be processed and whose rejection could not be stored either")
SPARKPLUG_REBIRTHS = Counter("wattline_gateway_sparkplug_rebirths_asked_total",
                             "Sparkplug B rebirth requests (NCMD) sent to edge nodes whose session the host lost")
