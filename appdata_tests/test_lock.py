"""The locks in requirements/ agree with pyproject.toml, with each other, and with what is installed.

Regenerate them with `bash requirements/update` (README "Dependencies")."""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from appdata_tests.support.lock import fingerprint, normalize, pins, stamped_fingerprint

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
LOCKS = {"production": (), "local": ("local",), "test": ("test",)}  # lock -> the extras it holds
REGENERATE = "pyproject.toml changed without `bash requirements/update`"


def lock_path(name: str) -> Path:
    return ROOT / "requirements" / f"{name}.txt"


def requirements_of(extras: tuple[str, ...]) -> list[Requirement]:
    """The project's requirements with these extras, the project's own extras (appdata[local]) expanded."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    wanted, seen, found = list(extras), set(), [Requirement(text) for text in project["dependencies"]]
    while wanted:
        extra = wanted.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in project["optional-dependencies"][extra]:
            requirement = Requirement(text)
            if normalize(requirement.name) == normalize(project["name"]):
                wanted.extend(requirement.extras)
            else:
                found.append(requirement)
    return found


@pytest.mark.parametrize("name", LOCKS)
def test_lock_is_generated_from_this_pyproject(name):
    assert stamped_fingerprint(lock_path(name)) == fingerprint(PYPROJECT), f"requirements/{name}.txt: {REGENERATE}"


SUPPORTED = [{"python_version": minor, "python_full_version": f"{minor}.0", "sys_platform": platform,
              "platform_system": system, "os_name": os_name, "platform_python_implementation": "CPython",
              "implementation_name": "cpython", "platform_machine": "x86_64"}
             for minor in ("3.11", "3.12", "3.13")
             for platform, system, os_name in (("linux", "Linux", "posix"), ("darwin", "Darwin", "posix"))]


@pytest.mark.parametrize("name,extras", LOCKS.items())
def test_every_requirement_is_locked_once_within_its_range_for_every_supported_python(name, extras):
    """A universal lock may split a package by Python version; each supported Python and platform
    must still find exactly one pin of every requirement, inside its range."""
    from packaging.markers import Marker

    locked = pins(lock_path(name))
    for requirement in requirements_of(extras):
        key = normalize(requirement.name)
        assert key in locked, f"{requirement.name} is not in requirements/{name}.txt: {REGENERATE}"
        for environment in SUPPORTED:
            if requirement.marker and not requirement.marker.evaluate(environment):
                continue
            chosen = [v for marker, v in locked[key].items() if marker is None or Marker(marker).evaluate(environment)]
            where = f"Python {environment['python_version']} on {environment['sys_platform']}"
            assert len(chosen) == 1, (f"requirements/{name}.txt pins {requirement.name} {len(chosen)} times for "
                                      f"{where}: {REGENERATE}, or a hand edit")
            assert requirement.specifier.contains(chosen[0], prereleases=True), (
                f"requirements/{name}.txt locks {requirement.name}=={chosen[0]} for {where}, outside "
                f"{requirement} (pyproject.toml): regenerate with `bash requirements/update`")


def test_a_package_has_one_version_in_every_lock():
    locks = {name: pins(lock_path(name)) for name in LOCKS}
    for package, versions in locks["test"].items():
        for name, other in locks.items():
            if package in other:
                assert other[package] == versions, (
                    f"{package}: requirements/{name}.txt locks {other[package]}, requirements/test.txt "
                    f"{versions}; regenerate all three with `bash requirements/update`")
    assert set(locks["production"]) <= set(locks["local"]) <= set(locks["test"]), (
        "a lock holds a package its superset lacks; regenerate with `bash requirements/update`")


def test_production_needs_no_emulator_and_every_lock_can_build_the_project():
    """`pip install --no-build-isolation` builds the project with the locked setuptools."""
    build = [Requirement(text) for text in tomllib.loads(PYPROJECT.read_text())["build-system"]["requires"]]
    for name in LOCKS:
        locked = pins(lock_path(name))
        for requirement in build:
            versions = locked.get(normalize(requirement.name), {}).values()
            assert versions and all(requirement.specifier.contains(v) for v in versions), (
                f"requirements/{name}.txt locks {requirement.name} {list(versions) or 'nowhere'}, but "
                f"[build-system] requires {requirement}: the README's --no-build-isolation install builds "
                "with the locked one; widen the range or add the build requirement to the locks")
    assert "moto" not in pins(lock_path("production"))
    assert "moto" in pins(lock_path("local"))


def test_this_environment_is_installed_from_the_test_lock():
    """The tests run on the locked versions (the README's test command), not on whatever pip found today."""
    from packaging.markers import Marker

    drifted = []
    for package, versions in pins(lock_path("test")).items():
        here = [v for marker, v in versions.items() if marker is None or Marker(marker).evaluate()]
        if not here:
            continue
        locked_version = here[0]
        try:
            installed = version(package)
        except PackageNotFoundError:
            drifted.append(f"{package} not installed (locked {locked_version})")
            continue
        if not SpecifierSet(f"=={locked_version}").contains(installed, prereleases=True):
            drifted.append(f"{package} {installed} (locked {locked_version})")
    assert not drifted, "installed differently from requirements/test.txt: " + ", ".join(drifted)


def test_the_readme_commands_install_from_the_locks_and_ci_runs_the_test_command():
    readme, ci = (ROOT / "README.md").read_text(), (ROOT / ".ci" / "run").read_text()
    commands = [line for line in readme.splitlines() if line.startswith("python3.11 -m venv .venv && ")][:2]
    assert [command.rsplit(" && ", 1)[1] for command in commands] == ["appdata up", "pytest"]
    for command, lock in zip(commands, ("local", "test")):
        assert f"pip install -r requirements/{lock}.txt && pip install --no-deps --no-build-isolation -e . && " in command
    assert commands[1] in ci
