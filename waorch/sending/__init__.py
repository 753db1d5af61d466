"""A message's way out: acceptance, dispatch, per-session outbox, claims, rerouting."""
