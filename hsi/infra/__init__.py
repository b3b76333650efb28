"""What HSI runs on: PostgreSQL and Redis clients, the embedded servers, telemetry and TLS."""
