"""Helpers the tests share (no tests, no fixtures: fixtures live in the conftest.py files)."""
