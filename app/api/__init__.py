"""Blueprints of the gateway; each module registers one flask-smorest Blueprint."""

from importlib import import_module

# module path -> attribute; add one line per blueprint module
BLUEPRINTS = (
    "app.api.health:blp",
    "app.api.send:blp",
    "app.api.messages:blp",
    "app.api.worker:blp",
    "app.api.sessions:blp",
    "app.api.proxies:blp",
    "app.api.suppressions:blp",
    "app.api.policy:blp",
    "app.api.webhooks:blp",
    "app.api.inbound:blp",
    "app.api.alerts:blp",
    "app.api.dashboard:blp",
)


def load_blueprints() -> list:
    """Every blueprint of BLUEPRINTS (a missing module is an error, not a smaller API)."""
    found = []
    for target in BLUEPRINTS:
        module, _, attr = target.partition(":")
        found.append(getattr(import_module(module), attr))
    return found
