"""The read-only HTTP API (Starlette)."""
