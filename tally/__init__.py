"""Tally: shared settings, command line and local stack runner."""
