"""What tests share: servers, clients, waiting, stand-ins for the outside (never for waorch)."""
