"""Cluster tests: the session cluster comes from tests/conftest.py (`redis_cluster`)."""
