"""Fixtures for integration tests: a live gateway over real HTTP, API keys, and the outside
endpoints the gateway talks to (a webhook receiver, a fake Telegram Bot API) on 127.0.0.1."""

from __future__ import annotations

import pytest

from tests.support.api_client import ApiClient, ThreadedGateway
from tests.support.fake_telegram import BOT_TOKEN, FakeTelegram
from tests.support.webhook_receiver import WebhookReceiver
from waorch.tenants import apikeys


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


@pytest.fixture
def admin_client(gateway, admin_key) -> ApiClient:
    return ApiClient(gateway.url, admin_key)


@pytest.fixture
def receiver():
    with WebhookReceiver() as server:
        yield server


@pytest.fixture
def telegram():
    with FakeTelegram(BOT_TOKEN) as fake:
        yield fake
