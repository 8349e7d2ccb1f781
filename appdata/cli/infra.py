"""`appdata` subcommands for deploying: package-lambda, stack-env."""

from __future__ import annotations

import shlex
from pathlib import Path

import click


def register(group: click.Group) -> None:
    """Add the deploy commands to the `appdata` group."""
    group.add_command(package_lambda)
    group.add_command(stack_env)


@click.command("package-lambda")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=Path("dist/lambda.zip"),
              show_default=True, help="Where to write the deployment zip.")
@click.option("--python-version", default="3.12", show_default=True,
              help="Python of the Lambda runtime (the stack's LambdaRuntime parameter).")
@click.option("--platform", "platforms", multiple=True,
              default=("manylinux2014_x86_64", "manylinux_2_28_x86_64"), show_default=True,
              help="Wheel platforms of the Lambda architecture (repeat; *_aarch64 for arm64).")
def package_lambda(output: Path, python_version: str, platforms: tuple[str, ...]) -> None:
    """Build the ingest API's Lambda zip: appdata + FastAPI, Mangum, pydantic, pandas, numpy.

    Wheels are fetched for the Lambda runtime, not this machine; boto3 comes with the runtime.
    Upload the zip to S3 and pass its bucket and key to the stack (see README, "Deploy to AWS").
    """
    from appdata.infra import build_lambda_package

    try:
        package = build_lambda_package(output, python_version=python_version, platforms=platforms)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(package.summary())
    click.echo("requirements: " + " ".join(package.requirements))


@click.command("stack-env")
@click.argument("stack_name")
@click.option("--format", "fmt", type=click.Choice(["shell", "dotenv"]), default="shell", show_default=True)
def stack_env(stack_name: str, fmt: str) -> None:
    """Print the APPDATA_* variables pointing at a deployed stack, from its outputs.

    `eval "$(appdata stack-env appdata)"` then configures the CLI, Dagster and `appdata send`.
    Uses the configured endpoints: real AWS when APPDATA_AWS_ENDPOINT_URL is empty.
    """
    from appdata import aws
    from appdata.config import Settings, aws_client_kwargs
    from appdata.infra import environment_from_outputs, stack_outputs

    settings = Settings.from_env()
    outputs = stack_outputs(aws.client("cloudformation", **aws_client_kwargs(settings, "cloudformation")), stack_name)
    env = environment_from_outputs(outputs, region=settings.aws_region, endpoints=settings.aws_endpoints)
    for name, value in env.items():
        click.echo(f"export {name}={shlex.quote(value)}" if fmt == "shell" else f"{name}={value}")
