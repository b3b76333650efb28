"""Tests of the web dashboard."""
