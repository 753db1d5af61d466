"""Backups of Redis and session data, and their all-or-nothing restore."""
