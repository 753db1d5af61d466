"""Running the fleet: session lifecycle, worker events, watchdog, proxy failover, overview."""
