"""Deployment helpers: the Lambda package, the Lambda entry point, and the stack's outputs.

The CloudFormation template is `infra/appdata.yaml`. This module holds what the template
needs from Python: a zip of the API for the Lambda runtime (`build_lambda_package`), an entry
point that reads the API keys from Secrets Manager before the app is built (`lambda_handler`),
so keys never sit in the template or the function's environment, and the mapping from stack
outputs to the `APPDATA_*` variables every other process reads (`environment_from_outputs`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from importlib.metadata import distributions, packages_distributions, version
from pathlib import Path
from typing import Any, Iterable

from appdata.config import AwsEndpoints

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
TEMPLATE_PATH = REPO_ROOT / "infra" / "appdata.yaml"

# What the API imports at run time; pinned to the versions installed here, i.e. the ones tested.
# boto3 and its family are in the Lambda Python runtime already and are left out.
LAMBDA_REQUIREMENTS = ("fastapi", "mangum", "pydantic", "pandas", "numpy")
LAMBDA_RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer", "jmespath")
# ...and what those bring along, importable in the runtime too (used to smoke-test a package locally).
LAMBDA_RUNTIME_EXTRAS = ("python-dateutil", "six", "urllib3")
# Python 3.12 on Amazon Linux 2023 (glibc 2.34): pandas 3 and numpy 2.4 ship manylinux_2_28
# wheels only, which the python3.11 runtime's Amazon Linux 2 (glibc 2.26) cannot load.
LAMBDA_PYTHON = "3.12"
LAMBDA_PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_28_x86_64")
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024  # AWS limit for a zip package, unzipped, layers included

# Stack output -> environment variable of the pipeline, the CLI and the API.
ENV_FROM_OUTPUTS = {
    "BucketName": "APPDATA_BUCKET",
    "StreamName": "APPDATA_STREAM",
    "TableName": "APPDATA_TABLE",
    "LeaseTableName": "APPDATA_LEASE_TABLE",
    "RedshiftCopyRoleArn": "APPDATA_REDSHIFT_COPY_ROLE_ARN",
    "ApiUrl": "APPDATA_API_URL",
}


# ---------------------------------------------------------------- Lambda package

@dataclass
class LambdaPackage:
    path: Path
    zipped_bytes: int
    unzipped_bytes: int
    files: int
    requirements: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return self.unzipped_bytes <= LAMBDA_UNZIPPED_LIMIT

    def summary(self) -> str:
        mb = 1024 * 1024
        return (f"{self.path}: {self.zipped_bytes / mb:.1f} MB zipped, {self.unzipped_bytes / mb:.1f} MB unzipped "
                f"({self.files:,} files; Lambda limit {LAMBDA_UNZIPPED_LIMIT // mb} MB unzipped)")


def lambda_requirements(extra: Iterable[str] = ()) -> list[str]:
    """The API's runtime requirements pinned to the installed versions (or as given in `extra`)."""
    pinned = [f"{name}=={version(name)}" for name in LAMBDA_REQUIREMENTS]
    return pinned + list(extra)


def _copy_appdata(target: Path) -> None:
    shutil.copytree(
        PACKAGE_DIR, target / "appdata",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
    )


def _prune(target: Path) -> None:
    """Drop what the runtime never imports: bytecode caches and third-party test suites."""
    for path in sorted(target.rglob("*"), reverse=True):
        if not path.is_dir() or not path.exists():
            continue
        relative = path.relative_to(target)
        if relative.parts[0] == "appdata":
            continue
        if path.name in ("__pycache__", "tests") and path.parent != target:
            shutil.rmtree(path, ignore_errors=True)
    shutil.rmtree(target / "bin", ignore_errors=True)  # console scripts: never run in Lambda
    for provided in LAMBDA_RUNTIME_PROVIDED:  # pulled in transitively? the runtime has its own
        for top in _top_level_names(provided):
            shutil.rmtree(target / top, ignore_errors=True)


def _top_level_names(distribution: str) -> list[str]:
    wanted = distribution.lower().replace("_", "-")
    return [top for top, dists in packages_distributions().items()
            if any(d.lower().replace("_", "-") == wanted for d in dists)]


def _zip_dir(source: Path, output: Path) -> tuple[int, int]:
    """Deterministic zip (sorted names, fixed timestamps); returns (files, unzipped bytes)."""
    files = sorted(p for p in source.rglob("*") if p.is_file())
    total = 0
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_suffix(output.suffix + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for path in files:
            info = zipfile.ZipInfo(path.relative_to(source).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            data = path.read_bytes()
            total += len(data)
            archive.writestr(info, data)
    tmp.replace(output)
    return len(files), total


def installed_constraints() -> list[str]:
    """name==version of everything installed here: transitive deps resolve to the tested versions."""
    pins = {}
    for dist in distributions():
        name = dist.metadata["Name"]
        if name and name.lower() != "appdata":
            pins[name.lower()] = f"{name}=={dist.version}"
    return sorted(pins.values())


def install_lambda_dependencies(target: Path, requirements: list[str], *, python_version: str = LAMBDA_PYTHON,
                                platforms: Iterable[str] = LAMBDA_PLATFORMS) -> None:
    """pip install wheels built for the Lambda runtime (never the build machine's)."""
    constraints = target.parent / "constraints.txt"
    constraints.write_text("\n".join(installed_constraints()) + "\n")
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
        "--constraint", str(constraints),
        "--target", str(target), *(arg for p in platforms for arg in ("--platform", p)), "--implementation", "cp",
        "--python-version", python_version, "--only-binary=:all:", *requirements,
    ]
    subprocess.run(command, check=True)


def build_lambda_package(output: Path | str = "dist/lambda.zip", *, python_version: str = LAMBDA_PYTHON,
                         platforms: Iterable[str] = LAMBDA_PLATFORMS, extra_requirements: Iterable[str] = (),
                         keep_dir: Path | None = None) -> LambdaPackage:
    """Zip the appdata package and the API's runtime deps for the Lambda Python runtime.

    Raises when the unzipped size exceeds Lambda's 250 MB limit, so a deploy never fails late.
    `keep_dir` keeps the unzipped tree there (to smoke-test the package locally).
    """
    output = Path(output).resolve()
    requirements = lambda_requirements(extra_requirements)
    with tempfile.TemporaryDirectory(prefix="appdata-lambda-") as tmp:
        target = Path(tmp) / "package"
        target.mkdir()
        install_lambda_dependencies(target, requirements, python_version=python_version, platforms=platforms)
        _prune(target)
        _copy_appdata(target)
        files, unzipped = _zip_dir(target, output)
        if keep_dir is not None:
            shutil.rmtree(keep_dir, ignore_errors=True)
            shutil.copytree(target, keep_dir)
    package = LambdaPackage(output, output.stat().st_size, unzipped, files, requirements)
    if not package.fits:
        raise RuntimeError(f"Lambda package too large: {package.summary()}")
    return package


def runtime_provided_paths() -> list[Path]:
    """Local copies of the modules the Lambda runtime provides (boto3 & co), for smoke tests."""
    import boto3

    site = Path(boto3.__file__).resolve().parents[1]
    names = {top for dist in LAMBDA_RUNTIME_PROVIDED + LAMBDA_RUNTIME_EXTRAS for top in _top_level_names(dist)}
    return [site / name if (site / name).is_dir() else site / f"{name}.py" for name in sorted(names)
            if (site / name).exists() or (site / f"{name}.py").exists()]


# ---------------------------------------------------------------- Lambda entry point

_handler: Any = None


def api_keys_from_secret(secret_id: str) -> list[str]:
    """Keys from a Secrets Manager secret: JSON {"api_key": k} or {"api_keys": "k1,k2"}, or plain text."""
    from appdata import aws
    from appdata.config import Settings, aws_client_kwargs

    client = aws.client("secretsmanager", **aws_client_kwargs(Settings.from_env(), "secretsmanager"))
    value = client.get_secret_value(SecretId=secret_id)["SecretString"]
    try:
        data = json.loads(value)
    except json.JSONDecodeError:
        data = value
    if isinstance(data, dict):
        raw = ",".join(str(data[k]) for k in ("api_key", "api_keys") if data.get(k))
    else:
        raw = str(data)
    return [key.strip() for key in raw.split(",") if key.strip()]


def lambda_handler(event: dict, context: Any) -> dict:
    """Lambda entry: on a cold start put the secret's keys into APPDATA_API_KEYS, then serve.

    The keys are read once per container; rotate by updating the secret and publishing a new
    version of the function (or waiting for containers to recycle).
    """
    global _handler
    if _handler is None:
        secret_id = os.environ.get("APPDATA_API_KEYS_SECRET_ARN")
        if secret_id and not os.environ.get("APPDATA_API_KEYS"):
            os.environ["APPDATA_API_KEYS"] = ",".join(api_keys_from_secret(secret_id))
        from appdata.api.lambda_handler import handler

        _handler = handler
    return _handler(event, context)


# ---------------------------------------------------------------- stack outputs

def stack_outputs(cloudformation: Any, stack_name: str) -> dict[str, str]:
    stack = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def environment_from_outputs(outputs: dict[str, str], *, region: str,
                             endpoints: AwsEndpoints | None = None) -> dict[str, str]:
    """The APPDATA_* variables that point every process at the deployed stack (at real AWS's
    endpoints unless `endpoints` says otherwise)."""
    env = {**(endpoints or AwsEndpoints.everything_at(None)).environment(), "APPDATA_AWS_REGION": region}
    for output, variable in ENV_FROM_OUTPUTS.items():
        if outputs.get(output):
            env[variable] = outputs[output]
    return env
