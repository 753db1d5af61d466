"""Helpers for tests that need machine-level setup (a Swarm in network namespaces)."""
