"""The small-cell rule's one constant, in a module light enough for the API to import (no pandas)."""

DEFAULT_K = 5  # no group of fewer than this many distinct users is published
