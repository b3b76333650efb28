"""Tests of the read-only query API."""
