"""Dagster definitions of the `sources` group."""

import dagster as dg

from appdata.sources.assets import assets


def defs() -> dg.Definitions:
    return dg.Definitions(assets=assets)
