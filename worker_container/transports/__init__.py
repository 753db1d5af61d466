"""Transports: how a worker talks to WhatsApp (`neonize`) or to the simulator (`sim`)."""

from __future__ import annotations

from importlib import import_module

from worker_container.transports.base import Transport

_IMPLEMENTATIONS = {
    "sim": "worker_container.transports.sim:SimTransport",
    "neonize": "worker_container.transports.neonize_adapter:NeonizeTransport",
}


def transport_class(name: str) -> type[Transport]:
    """The Transport class for TRANSPORT=`name`, imported lazily (neonize loads a Go library)."""
    try:
        target = _IMPLEMENTATIONS[name]
    except KeyError:
        raise ValueError(f"unknown transport {name!r}; use one of {sorted(_IMPLEMENTATIONS)}") from None
    module, _, attr = target.partition(":")
    return getattr(import_module(module), attr)
