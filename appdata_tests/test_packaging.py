"""The install holds together and the code location loads."""

from importlib.metadata import distributions, version

import dagster as dg


def test_dagster_family_is_coherent():
    """dagster-* libraries are versioned 0.(minor+16).patch against dagster 1.minor.patch."""
    core = version("dagster")
    major, minor, patch = (int(p) for p in core.split(".")[:3])
    assert major == 1
    libraries = {"dagster-aws", "dagster-pipes", "dagster-shared", "dagster-graphql", "dagster-webserver",
                 "dagster-dg-cli", "dagster-dg-core"}
    versioned_as_core = {"dagster", "dagster-webserver", "dagster-graphql", "dagster-pipes", "dagster-shared",
                         "dagster-dg-cli", "dagster-dg-core", "dagster-cloud-cli"}  # the dg CLI brings the last
    found = {}
    for dist in distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name.startswith("dagster"):
            found[name] = dist.version
    assert libraries <= set(found), f"missing Dagster packages: {libraries - set(found)}"
    for name, ver in found.items():
        if name in versioned_as_core:
            assert ver == core, f"{name} {ver} does not match dagster {core}"
        else:
            assert ver == f"0.{minor + 16}.{patch}", f"{name} {ver} does not match dagster {core}"


def test_definitions_load_and_validate():
    from appdata.definitions import defs

    dg.Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"playstore_apps_raw", "playstore_apps", "users_batch", "users_stream",
            "users_app_batch_client_data", "users_app_stream_client_data"} <= keys


def test_sources_group_has_descriptions_and_kinds():
    from appdata.definitions import defs

    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if node.group_name == "sources":
            assert node.description, f"{key} has no description"
            assert node.kinds, f"{key} has no kinds"


def test_a_production_install_runs_the_cli_and_names_the_missing_emulator():
    """requirements/production.txt has no moto: the pipeline's commands work and `appdata up` says
    what to install instead of a traceback (a fresh interpreter where moto cannot be imported)."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "sys.modules.update(moto=None, werkzeug=None)\n"
        "from click.testing import CliRunner\n"
        "from appdata.cli import main\n"
        "assert CliRunner().invoke(main, ['reconcile', '--help']).exit_code == 0\n"
        "result = CliRunner().invoke(main, ['up', '--no-ui'])\n"
        "print(result.exit_code, result.output)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("1 Error: the local AWS emulator needs moto (moto is not installed)")
    assert "requirements/local.txt" in done.stdout
