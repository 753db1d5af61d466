"""GET /api/health against a real Redis, and a Redis that is not there; Swagger UI served offline."""

from __future__ import annotations

import pytest

from app import create_app
from waorch.core import redis_client, settings
from waorch.launcher.redis_server import free_port


@pytest.fixture
def client(redis_url):
    return create_app().test_client()


def test_health_ok_with_redis(client):
    answer = client.get("/api/health")
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["status"] == "ok"
    assert body["redis"] == "ok"
    assert body["redis_latency_ms"] >= 0


def test_health_503_when_redis_unreachable(monkeypatch):
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    settings.get.cache_clear()
    redis_client.reset_clients()
    try:
        client = create_app().test_client()
        answer = client.get("/api/health")
        assert answer.status_code == 503
        assert answer.get_json()["redis"] == "down"
        # liveness does not depend on Redis
        live = client.get("/api/health/live")
        assert live.status_code == 200
        assert live.get_json()["status"] == "ok"
    finally:
        settings.get.cache_clear()
        redis_client.reset_clients()


def test_health_needs_no_api_key(client):
    assert client.get("/api/health", headers={"X-API-Key": "wrong"}).status_code == 200


def test_swagger_ui_loads_its_assets_locally(client):
    page = client.get("/api/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "/api/docs-assets/swagger-ui-bundle.js" in html
    assert "cdn" not in html.lower()
    for name in ("swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "swagger-ui.css"):
        asset = client.get(f"/api/docs-assets/{name}")
        assert asset.status_code == 200, name
        assert len(asset.data) > 1000


def test_docs_assets_refuse_other_paths(client):
    assert client.get("/api/docs-assets/../../setup.cfg").status_code == 404
    assert client.get("/api/docs-assets/index.html").status_code == 404


def test_openapi_lists_health_but_not_assets(client):
    paths = client.get("/api/openapi.json").get_json()["paths"]
    assert "/api/health" in paths
    assert not any("docs-assets" in p for p in paths)
