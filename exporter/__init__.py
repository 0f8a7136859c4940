"""Tally exporter: live counters for Prometheus."""
