"""Prometheus metrics: the read-only collector and the writers of the hot paths."""
