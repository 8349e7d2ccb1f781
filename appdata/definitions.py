"""The code location: every Dagster object under `appdata/defs/`, found by Dagster's own loader.

`[tool.dg]` in pyproject.toml names `appdata.defs` as the defs module, so `dagster dev`,
`dg check defs`, `dg list defs` and `appdata up` all load the same tree. Pure libraries live
beside it (`appdata/contract`, `appdata/batch`, ...) and import no Dagster; nothing here does
AWS or warehouse I/O at load time.
"""

from pathlib import Path

import dagster as dg

from appdata.defs.catalog import annotate


def build_definitions() -> dg.Definitions:
    """Load the defs folder, with the catalog's owners, tags, column schemas and code references;
    resources are built from the environment at this moment."""
    return annotate(dg.load_from_defs_folder(path_within_project=Path(__file__).parent))


defs = build_definitions()
