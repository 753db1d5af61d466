"""The `waorch` command: one small module per subcommand (waorch/cli/<name>.py)."""
