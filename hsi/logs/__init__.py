"""Structured logs: setup, bound context, the PostgreSQL log table and secret redaction."""
