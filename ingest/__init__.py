"""Tally ingest: the counting core and the HTTP API."""
