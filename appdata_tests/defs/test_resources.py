"""The resources talk to the endpoint they are given, each AWS one to its own service's, and the
tests only ever to loopback."""

from appdata.config import endpoint_variable, is_loopback_endpoint
from appdata.defs.resources import build_resources


def test_resources_point_at_loopback_only(offline_env):
    assert all(is_loopback_endpoint(url) for url in offline_env.aws_endpoints.by_service().values())
    assert not is_loopback_endpoint("https://s3.us-east-1.amazonaws.com")
    client = build_resources(offline_env)["s3"].get_client()
    assert client.meta.endpoint_url == offline_env.aws_endpoints.s3
    assert client.meta.service_model.service_name == "s3"


def test_each_aws_resource_gets_its_own_services_endpoint(offline_env, monkeypatch):
    for port, service in enumerate(("s3", "kinesis", "dynamodb"), start=2):
        monkeypatch.setenv(endpoint_variable(service), f"http://127.0.0.1:{port}")
    resources = build_resources()
    for port, service in enumerate(("s3", "kinesis", "dynamodb"), start=2):
        client = resources[service].get_client()
        assert (client.meta.service_model.service_name, client.meta.endpoint_url) == (service, f"http://127.0.0.1:{port}")
