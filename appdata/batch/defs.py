"""Dagster definitions of the `batch` group (filled in by its issue)."""

import dagster as dg


def defs() -> dg.Definitions:
    return dg.Definitions()
