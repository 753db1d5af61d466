"""Foundations every package uses: settings, Redis keys and client, Lua, signing, phones, jobs."""
