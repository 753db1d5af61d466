"""The session registry, device profiles and worker request authentication."""
