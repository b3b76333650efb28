"""Test doubles for the AI services: real HTTP servers speaking the real contracts."""
