"""The package's shape holds: Dagster objects under appdata/defs (loadable by `dg` and
`dagster`), pure libraries without Dagster, and a local stack that nothing else imports."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "appdata"
REPO = PACKAGE.parent
# Areas allowed to import Dagster; everything else under appdata/ is a pure library.
DAGSTER_AREAS = ("defs", "local", "cli", "definitions.py")


def imported_modules(source: str) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def violations(relative: Path, source: str) -> list[str]:
    """What `relative` (a path under appdata/) imports that its area may not."""
    area = relative.parts[0]
    found = []
    for module in sorted(imported_modules(source)):
        top = module.split(".")[0]
        if area not in DAGSTER_AREAS and (top == "dagster" or top.startswith("dagster_")):
            found.append(f"{relative}: pure library imports {module}")
        if area not in DAGSTER_AREAS and module.startswith(("appdata.defs", "appdata.cli", "appdata.definitions")):
            found.append(f"{relative}: pure library imports {module}")
        if area != "local" and module.startswith("appdata.local"):
            found.append(f"{relative}: imports the local stack ({module})")
    return found


def test_pure_libraries_import_no_dagster_and_nothing_imports_the_local_stack():
    found = [v for path in sorted(PACKAGE.rglob("*.py"))
             for v in violations(path.relative_to(PACKAGE), path.read_text(encoding="utf-8"))]
    assert found == []


def test_the_boundary_check_sees_a_violation():
    """Negative control: the checker above is not blind."""
    assert violations(Path("stream/drain.py"), "import dagster as dg\nfrom appdata.local.stack import python\n") == [
        "stream/drain.py: imports the local stack (appdata.local.stack)",
        "stream/drain.py: pure library imports dagster",
    ]
    assert violations(Path("defs/sources.py"), "from appdata.local import demo\n") == [
        "defs/sources.py: imports the local stack (appdata.local)"]


@pytest.mark.parametrize("command", [
    ["dg", "check", "defs"],
    ["dagster", "definitions", "validate", "-w", "workspace.yaml"],
], ids=["dg-check-defs", "dagster-definitions-validate"])
def test_the_code_location_loads_with_dagsters_own_tools(command, tmp_path):
    tool = Path(sys.executable).parent / command[0]
    result = subprocess.run([str(tool), *command[1:]], cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={"PATH": f"{tool.parent}:/usr/bin:/bin", "HOME": str(tmp_path),
                                 "APPDATA_HOME": str(tmp_path / "home"), "DAGSTER_HOME": str(tmp_path)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
