"""Dagster definitions of the `api` group (filled in by its issue)."""

import dagster as dg


def defs() -> dg.Definitions:
    return dg.Definitions()
