"""The dashboard: static HTML/JS/CSS served at /dashboard (no build step); it reads the public API
with the admin key the person types in (docs/dashboard.md)."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, abort, send_from_directory

STATIC = Path(__file__).with_name("static")
_FILES = frozenset({"index.html", "dashboard.js", "dashboard.css"})
# No inline script or style, nothing from elsewhere: the page only talks to this gateway.
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
                               "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
                               "form-action 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

blueprint = Blueprint("dashboard_page", __name__)


def _serve(name: str):
    if name not in _FILES:
        abort(404)
    response = send_from_directory(STATIC, name, max_age=0)
    response.headers.update(_HEADERS)
    return response


@blueprint.get("/dashboard")
@blueprint.get("/dashboard/")
def page():
    return _serve("index.html")


@blueprint.get("/dashboard/<name>")
def asset(name: str):
    return _serve(name)
