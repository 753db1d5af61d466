"""waorch: a self-hosted orchestrator for many WhatsApp accounts."""

__version__ = "0.1.0"
