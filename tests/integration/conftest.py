"""Fixtures for integration tests: a live gateway over real HTTP and API keys."""

from __future__ import annotations

import pytest

from tests.api_client import ApiClient, ThreadedGateway
from waorch import apikeys


@pytest.fixture
def gateway(redis_url):
    from app import create_app

    with ThreadedGateway(create_app()) as server:
        yield server


@pytest.fixture
def api_key(r) -> str:
    return apikeys.create_key(r, "acme", "send,read")


@pytest.fixture
def admin_key(r) -> str:
    return apikeys.create_key(r, "acme", "send,read,admin")


@pytest.fixture
def api_client(gateway, api_key) -> ApiClient:
    return ApiClient(gateway.url, api_key)
