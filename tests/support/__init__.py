"""What tests share: servers, clients, waiting, machine-level setups (PostgreSQL, Sentinel, Swarm), and
stand-ins for the outside world (never for waorch itself)."""
