"""Operator alerts: events, sinks (Telegram, webhook) and their delivery."""
