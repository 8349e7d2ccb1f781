"""Analytics: see defs.py for its Dagster definitions."""
