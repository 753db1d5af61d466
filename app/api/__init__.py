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
)


def load_blueprints() -> list:
    found = []
    for target in BLUEPRINTS:
        module, _, attr = target.partition(":")
        try:
            found.append(getattr(import_module(module), attr))
        except ModuleNotFoundError as exc:
            if exc.name != module:  # a real import error inside an existing module
                raise
    return found
