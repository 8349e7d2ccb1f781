"""Reliability: dead letters you can act on, and reconciliation of every sink per day."""
