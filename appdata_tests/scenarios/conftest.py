"""Fixtures of the end-to-end scenarios: the real ingest API served for a whole module."""

from __future__ import annotations

import os

import pytest

from appdata_tests.support.api import LocalApi


@pytest.fixture(scope="module")
def local_api(module_env):
    api = LocalApi(module_env, os.environ["APPDATA_API_KEYS"])
    yield api
    api.stop()
