"""Client webhooks: subscriptions, client events, signed delivery, dead letters."""
