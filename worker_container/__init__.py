"""The per-session worker program: one process serves exactly one WhatsApp account."""
