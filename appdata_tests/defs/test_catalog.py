"""Every asset the code location serves is owned, tagged, referenced to its code, and the event
tables carry the contract's columns."""

import dagster as dg

from appdata.contract.schema import FIELDS
from appdata.definitions import build_definitions
from appdata.defs.catalog import EVENT_TABLES, annotate


def _specs(defs: dg.Definitions) -> dict[str, dg.AssetSpec]:
    graph = defs.resolve_asset_graph()
    return {key.to_user_string(): graph.get(key).to_asset_spec() for key in graph.get_all_asset_keys()}


def test_every_asset_has_owner_layer_description_and_code_reference():
    specs = _specs(build_definitions())
    assert len(specs) >= 19
    for name, spec in specs.items():
        assert spec.owners, name
        assert spec.tags.get("layer"), name
        assert spec.description, name
        if name != "kinesis_downloads":  # external: no code of ours materializes it
            assert "dagster/code_references" in spec.metadata, name


def test_event_tables_carry_the_contracts_columns():
    specs = _specs(build_definitions())
    for name in EVENT_TABLES:
        schema = specs[name].metadata["dagster/column_schema"]
        assert [c.name for c in schema.columns] == [f.name for f in FIELDS], name
        nullable = {c.name: c.constraints.nullable for c in schema.columns}
        assert nullable == {f.name: not f.required for f in FIELDS}, name


def test_an_unclassified_asset_fails_the_load():
    @dg.asset(group_name="analytics")
    def unclassified() -> None: ...

    try:
        annotate(dg.Definitions(assets=[unclassified]))
    except dg.DagsterInvariantViolationError as exc:
        assert "unclassified" in str(exc)
    else:
        raise AssertionError("an asset missing from the catalog must fail the load")
