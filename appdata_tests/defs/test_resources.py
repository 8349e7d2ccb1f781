"""The resources talk to the endpoint they are given, and the tests only ever to loopback."""

from appdata.config import is_loopback_endpoint
from appdata.defs.resources import build_resources


def test_resources_point_at_loopback_only(offline_env):
    assert is_loopback_endpoint(offline_env.aws_endpoint_url)
    assert not is_loopback_endpoint("https://s3.us-east-1.amazonaws.com")
    client = build_resources(offline_env)["s3"].get_client()
    assert client.meta.endpoint_url == offline_env.aws_endpoint_url
    assert client.meta.service_model.service_name == "s3"
