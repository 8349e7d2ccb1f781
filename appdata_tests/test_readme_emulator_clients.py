"""The README's "The aws CLI and boto3 against the local emulator": its endpoints, keys, region and
names are the stack's own defaults, and its boto3 snippet runs against a real emulator."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

from appdata.config import DEFAULT_EMULATOR_PORT, AwsEndpoints, Settings, emulator_credentials

README = Path(__file__).resolve().parents[1] / "README.md"
HEADING = "### The aws CLI and boto3 against the local emulator"


def _section() -> str:
    text = README.read_text()
    start = text.index(HEADING)
    return text[start:text.index("\n## ", start)]


def _block(language: str, index: int = 0) -> str:
    return re.findall(rf"```{language}\n(.*?)```", _section(), flags=re.S)[index]


def _exports() -> dict[str, str]:
    return {name: value for line in _block("bash").splitlines() if line.startswith("export ")
            for name, value in re.findall(r"(\w+)=(\S+)", line.split("#")[0])}


def test_the_documented_values_are_the_stacks_defaults(monkeypatch):
    for name in ("APPDATA_AWS_ENDPOINT_URL", "APPDATA_AWS_ENDPOINT_URL_S3", "APPDATA_AWS_ENDPOINT_URL_KINESIS",
                 "APPDATA_AWS_ENDPOINT_URL_DYNAMODB", "APPDATA_EMULATOR_PORT", "APPDATA_AWS_REGION", "AWS_DEFAULT_REGION",
                 "APPDATA_BUCKET", "APPDATA_STREAM", "APPDATA_TABLE", "AWS_ACCESS_KEY_ID", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    endpoints = AwsEndpoints.from_env()
    assert endpoints == AwsEndpoints.emulator(DEFAULT_EMULATOR_PORT)
    keys = emulator_credentials()
    settings = Settings.from_env()
    assert _exports() == {
        "AWS_ACCESS_KEY_ID": keys["aws_access_key_id"], "AWS_SECRET_ACCESS_KEY": keys["aws_secret_access_key"],
        "AWS_DEFAULT_REGION": settings.aws_region, "AWS_ENDPOINT_URL": endpoints.others,
        "AWS_ENDPOINT_URL_S3": endpoints.s3, "AWS_ENDPOINT_URL_KINESIS": endpoints.kinesis,
        "AWS_ENDPOINT_URL_DYNAMODB": endpoints.dynamodb,
    }
    section = _section()
    for name in (settings.bucket, settings.stream, settings.table, settings.lease_table,
                 endpoints.s3, endpoints.kinesis, endpoints.dynamodb, endpoints.others):
        assert f"`{name}`" in section, name


def test_the_boto3_snippet_runs_against_the_emulator(provisioned):
    """The documented snippet with the test's own endpoints and names (the defaults are checked above)."""
    settings = Settings.from_env()
    default, mine = AwsEndpoints.emulator(DEFAULT_EMULATOR_PORT), settings.aws_endpoints
    code = _block("python")
    for service in ("s3", "kinesis", "dynamodb"):
        code = code.replace(f'"{default.url(service)}"', f'"{mine.url(service)}"')
    for documented, own in (("appdata-lake", settings.bucket), ("appdata-downloads", settings.stream),
                            ("appdata-user-downloads", settings.table)):
        code = code.replace(f'"{documented}"', f'"{own}"')
    assert not [url for url in default.by_service().values() if f'"{url}"' in code and url not in
                mine.by_service().values()], "a documented endpoint was not replaced"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - the README's own example
    assert printed.getvalue().split() == ["0", "ACTIVE", "0"]  # a provisioned, empty stack
