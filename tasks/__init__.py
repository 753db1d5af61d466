"""Celery tasks: thin wrappers calling waorch functions."""
