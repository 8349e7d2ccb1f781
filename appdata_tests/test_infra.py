"""infra/appdata.yaml: lint-clean, secure as declared, and deployable into the emulator where the
pipeline then runs against the names the stack created."""

from __future__ import annotations

import json
import shutil
import sys
import uuid
from pathlib import Path

import boto3
import pytest
from click.testing import CliRunner

from appdata import infra
from appdata.config import Settings
from appdata.infra import TEMPLATE_PATH, environment_from_outputs, lambda_handler, stack_outputs
from appdata_tests.support.api import proxy_event
from appdata_tests.support.events import make_event


def _template() -> dict:
    from cfnlint.decode import decode

    template, problems = decode(str(TEMPLATE_PATH))
    assert not problems, problems
    return template


@pytest.fixture(scope="module")
def template() -> dict:
    return _template()


def _statements(template: dict, role: str) -> list[dict]:
    out = []
    for policy in template["Resources"][role]["Properties"]["Policies"]:
        for statement in policy["PolicyDocument"]["Statement"]:
            if "Fn::If" in statement:  # conditional statement: [condition, statement, NoValue]
                statement = statement["Fn::If"][1]
            out.append(statement)
    return out


def _actions(statement: dict) -> set[str]:
    action = statement["Action"]
    return {action} if isinstance(action, str) else set(action)


def _resources(statement: dict) -> list:
    resource = statement["Resource"]
    return resource if isinstance(resource, list) else [resource]


def test_cfn_lint_is_clean():
    import subprocess

    script = Path(sys.executable).with_name("cfn-lint")
    command = [str(script)] if script.exists() else [shutil.which("cfn-lint") or "cfn-lint"]
    result = subprocess.run([*command, str(TEMPLATE_PATH)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_bucket_is_encrypted_private_and_expires_dead_letters(template):
    bucket = template["Resources"]["LakeBucket"]["Properties"]
    sse = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    assert sse["SSEAlgorithm"] in ("AES256", "aws:kms")
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert len(bucket["PublicAccessBlockConfiguration"]) == 4
    rules = {r["Id"]: r for r in bucket["LifecycleConfiguration"]["Rules"] if isinstance(r, dict) and "Id" in r}
    rejected = rules["rejected-dead-letters"]
    assert rejected["Prefix"] == "rejected/" and rejected["Status"] == "Enabled"
    assert rejected["ExpirationInDays"] == {"Ref": "RejectedExpirationDays"}
    tls = template["Resources"]["LakeBucketTlsOnly"]["Properties"]["PolicyDocument"]["Statement"][0]
    assert tls["Effect"] == "Deny" and tls["Condition"]["Bool"]["aws:SecureTransport"] == "false"


def test_stream_and_table_as_the_contract_says(template):
    stream = template["Resources"]["DownloadStream"]["Properties"]
    assert stream["StreamEncryption"]["EncryptionType"] == "KMS"
    assert stream["RetentionPeriodHours"] == {"Ref": "StreamRetentionHours"}
    assert template["Parameters"]["StreamRetentionHours"]["Default"] == 24
    table = template["Resources"]["UserTable"]["Properties"]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert {(k["AttributeName"], k["KeyType"]) for k in table["KeySchema"]} == {("user_id", "HASH"), ("sk", "RANGE")}
    assert {(a["AttributeName"], a["AttributeType"]) for a in table["AttributeDefinitions"]} == {("user_id", "S"), ("sk", "S")}


def test_no_role_grants_wildcards(template):
    for name, resource in template["Resources"].items():
        if resource["Type"] != "AWS::IAM::Role":
            continue
        for statement in _statements(template, name):
            assert statement["Effect"] == "Allow"
            assert not any(a == "*" or a.endswith(":*") for a in _actions(statement)), (name, statement)
            assert "*" not in _resources(statement), (name, statement)


def test_api_role_may_only_put_to_stream_read_table_and_its_prefixes(template):
    by_sid = {s["Sid"]: s for s in _statements(template, "ApiFunctionRole")}
    assert _actions(by_sid["PutToStream"]) == {"kinesis:PutRecord", "kinesis:PutRecords"}
    assert _resources(by_sid["PutToStream"]) == [{"Fn::GetAtt": ["DownloadStream", "Arn"]}]
    assert _actions(by_sid["ReadTable"]) == {"dynamodb:Query", "dynamodb:GetItem"}
    assert _resources(by_sid["ReadTable"]) == [{"Fn::GetAtt": ["UserTable", "Arn"]}]
    assert _actions(by_sid["WriteRejected"]) == {"s3:PutObject"}
    assert _resources(by_sid["WriteRejected"]) == [{"Fn::Sub": "${LakeBucket.Arn}/rejected/api/*"}]
    assert _actions(by_sid["ReadReports"]) == {"s3:GetObject"}
    assert _resources(by_sid["ReadReports"]) == [{"Fn::Sub": "${LakeBucket.Arn}/reports/*"}]
    assert _actions(by_sid["ReadApiKeys"]) == {"secretsmanager:GetSecretValue"}
    everything = set().union(*(_actions(s) for s in by_sid.values()))
    assert not any(a.startswith(("dynamodb:Put", "dynamodb:Batch", "kinesis:Get", "s3:Delete")) for a in everything)


def test_redshift_copy_role_reads_only_what_copy_loads(template):
    """Curated Parquet (batch) and the stream lake with its manifests; nothing else."""
    statements = _statements(template, "RedshiftCopyRole")
    trust = template["Resources"]["RedshiftCopyRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]
    assert trust["Principal"] == {"Service": "redshift.amazonaws.com"}
    gets = [s for s in statements if "s3:GetObject" in _actions(s)]
    assert [_resources(s) for s in gets] == [[{"Fn::Sub": "${LakeBucket.Arn}/curated/*"},
                                              {"Fn::Sub": "${LakeBucket.Arn}/lake/stream/*"},
                                              {"Fn::Sub": "${LakeBucket.Arn}/manifests/stream/*"}]]
    listing = next(s for s in statements if "s3:ListBucket" in _actions(s))
    assert listing["Condition"]["StringLike"]["s3:prefix"] == ["curated/*", "lake/stream/*", "manifests/stream/*"]


def test_dagster_role_touches_only_the_pipelines_stores(template):
    statements = _statements(template, "DagsterRole")
    services = {a.split(":")[0] for s in statements for a in _actions(s)}
    assert services == {"s3", "kinesis", "dynamodb", "kms"}
    kinesis = set().union(*(_actions(s) for s in statements if any(a.startswith("kinesis:") for a in _actions(s))))
    assert "kinesis:GetRecords" in kinesis and not {"kinesis:DeleteStream", "kinesis:PutRecords"} & kinesis


def test_api_gateway_needs_keys_throttles_and_proxies_to_lambda(template):
    resources = template["Resources"]
    for method in ("ProxyMethod", "RootMethod"):
        props = resources[method]["Properties"]
        assert props["ApiKeyRequired"] is True
        assert props["HttpMethod"] == "ANY" and props["Integration"]["Type"] == "AWS_PROXY"
    assert resources["ProxyResource"]["Properties"]["PathPart"] == "{proxy+}"
    plan = resources["UsagePlan"]["Properties"]
    assert plan["Throttle"] == {"RateLimit": {"Ref": "ApiRateLimit"}, "BurstLimit": {"Ref": "ApiBurstLimit"}}
    assert plan["Quota"]["Period"] == "DAY"
    assert resources["UsagePlanKey"]["Properties"]["KeyType"] == "API_KEY"
    stage_settings = resources["ApiStage"]["Properties"]["MethodSettings"][0]
    assert stage_settings["ThrottlingRateLimit"] == {"Ref": "ApiRateLimit"}


def test_lambda_code_from_s3_and_no_secret_inline(template):
    function = template["Resources"]["ApiFunction"]["Properties"]
    assert function["Code"]["S3Key"] == {"Ref": "LambdaCodeKey"}
    assert function["Runtime"] == {"Ref": "LambdaRuntime"}
    assert template["Parameters"]["LambdaRuntime"]["Default"] == f"python{infra.LAMBDA_PYTHON}"
    variables = function["Environment"]["Variables"]
    assert {"APPDATA_BUCKET", "APPDATA_STREAM", "APPDATA_TABLE", "APPDATA_API_KEYS_SECRET_ARN"} <= set(variables)
    assert "APPDATA_API_KEYS" not in variables and variables["APPDATA_AWS_ENDPOINT_URL"] == ""
    assert template["Parameters"]["LambdaHandler"]["Default"] == "appdata.infra.lambda_handler"
    key_value = template["Resources"]["ApiKey"]["Properties"]["Value"]["Fn::Sub"]
    assert key_value.startswith("{{resolve:secretsmanager:")
    secret = template["Resources"]["ApiKeySecret"]["Properties"]
    assert "GenerateSecretString" in secret and "SecretString" not in secret  # generated, never written down


# ---------------------------------------------------------------- the stack in the emulator

def _aws(settings: Settings, service: str):
    return boto3.client(service, endpoint_url=settings.aws_endpoints.url(service), region_name=settings.aws_region,
                        aws_access_key_id="emulator", aws_secret_access_key="emulator")


def _deploy_data_stores(settings: Settings, stack: str) -> dict[str, str]:
    cfn = _aws(settings, "cloudformation")
    parameters = {"DeployApi": "false", "BucketName": settings.bucket, "StreamName": settings.stream,
                  "TableName": settings.table, "StreamRetentionHours": "48", "StreamShardCount": "1"}
    cfn.create_stack(StackName=stack, TemplateBody=TEMPLATE_PATH.read_text(), Capabilities=["CAPABILITY_IAM"],
                     Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()])
    cfn.get_waiter("stack_create_complete").wait(StackName=stack, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    return stack_outputs(cfn, stack)


def test_stack_deploys_into_emulator_and_pipeline_runs_on_its_names(single_process_env, monkeypatch, lambda_event_loop):
    from appdata.api.app import app as lazy_app
    from appdata.cli import main
    from appdata.cli.infra import stack_env
    from appdata.defs.resources import build_resources
    from appdata.stream.drain import drain_records, read_shard
    from appdata.warehouse.loader import count_rows

    stack = f"appdata-{uuid.uuid4().hex[:8]}"
    outputs = _deploy_data_stores(single_process_env, stack)
    assert outputs["BucketName"] == single_process_env.bucket
    assert outputs["StreamName"] == single_process_env.stream and outputs["TableName"] == single_process_env.table
    assert outputs["RedshiftCopyRoleArn"].startswith("arn:aws:iam::") and "ApiUrl" not in outputs

    summary = _aws(single_process_env, "kinesis").describe_stream_summary(StreamName=single_process_env.stream)
    assert summary["StreamDescriptionSummary"]["RetentionPeriodHours"] == 48
    table = _aws(single_process_env, "dynamodb").describe_table(TableName=single_process_env.table)["Table"]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"

    # Point everything at the stack as a user would: `appdata stack-env` from its outputs.
    printed = CliRunner().invoke(stack_env, [stack, "--format", "dotenv"], catch_exceptions=False).output
    env = dict(line.split("=", 1) for line in printed.splitlines())
    assert env == environment_from_outputs(outputs, region="us-east-1", endpoints=single_process_env.aws_endpoints)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()

    provisioned = CliRunner().invoke(main, ["provision"], catch_exceptions=False).output
    assert f"s3://{settings.bucket}: exists" in provisioned
    assert f"kinesis:{settings.stream}: exists" in provisioned
    assert f"dynamodb:{settings.table}: exists" in provisioned

    # The Lambda entry point, fed API Gateway proxy events, with its key from Secrets Manager.
    key = f"k-{uuid.uuid4().hex}"
    secret = _aws(settings, "secretsmanager").create_secret(Name=f"{stack}-api-keys",
                                                            SecretString=json.dumps({"api_key": key}))
    monkeypatch.delenv("APPDATA_API_KEYS", raising=False)
    monkeypatch.setenv("APPDATA_API_KEYS_SECRET_ARN", secret["ARN"])
    monkeypatch.setattr(infra, "_handler", None)
    lazy_app.reset()
    try:
        events = [make_event(i, user_id=4242) for i in range(5)] + [make_event(9, age=7)]
        headers = {"x-api-key": key, "content-type": "application/json"}
        posted = lambda_handler(proxy_event("POST", "/v1/downloads", headers=headers,
                                            body=json.dumps({"records": events})), None)
        assert posted["statusCode"] == 207, posted["body"]  # multi-status: some accepted, one rejected
        body = json.loads(posted["body"])
        assert body["accepted"] == 5 and [r["field"] for r in body["rejected"]] == ["age"]
        refused = lambda_handler(proxy_event("POST", "/v1/downloads", headers={"x-api-key": "wrong"},
                                             body=json.dumps(events)), None)
        assert refused["statusCode"] in (401, 403)

        # Drain the stack's stream into its lake, table and the warehouse.
        resources = build_resources(settings)
        kinesis = resources["kinesis"].get_client()
        shard_id = kinesis.list_shards(StreamName=settings.stream)["Shards"][0]["ShardId"]
        read = read_shard(kinesis, settings.stream, shard_id)
        assert len(read.records) == 5
        engine = resources["warehouse"].get_engine()
        s3 = resources["s3"].get_client()
        result = drain_records(read.records, stream=settings.stream, shard_id=shard_id,
                               first_sequence=read.records[0]["SequenceNumber"],
                               last_sequence=read.records[-1]["SequenceNumber"], s3=s3, bucket=settings.bucket,
                               dynamodb=resources["dynamodb"].get_client(), table=settings.table, engine=engine)
        assert result.valid == 5 and result.rejected == 0
        assert count_rows(engine, "downloads_stream") == 5
        engine.dispose()
        lake = s3.list_objects_v2(Bucket=settings.bucket, Prefix="lake/stream/")["Contents"]
        assert lake and all(o["Key"].endswith(".jsonl.gz") for o in lake)
        dead = s3.list_objects_v2(Bucket=settings.bucket, Prefix="rejected/api/")["Contents"]
        assert len(dead) == 1

        # Read them back through the API, as the app user would.
        got = lambda_handler(proxy_event("GET", "/v1/users/4242/downloads", headers=headers), None)
        assert got["statusCode"] == 200, got["body"]
        downloads = json.loads(got["body"])["downloads"]
        assert sorted(d["event_id"] for d in downloads) == sorted(body["event_ids"])
    finally:
        lazy_app.reset()


def test_deploy_commands_register_on_the_cli_group():
    import click

    from appdata.cli.infra import register

    group = click.Group("appdata")
    register(group)
    assert {"package-lambda", "stack-env"} <= set(group.commands)
    shown = CliRunner().invoke(group, ["package-lambda", "--help"]).output
    assert "--output" in shown and "3.12" in shown and "manylinux_2_28_x86_64" in shown
