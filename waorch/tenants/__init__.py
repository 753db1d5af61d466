"""Tenants and their API keys and rate limits."""
