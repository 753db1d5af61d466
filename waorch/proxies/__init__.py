"""The proxy inventory (sticky allocation) and real health checks."""
