"""Message records (reading, listing, retention) and inbound messages."""
