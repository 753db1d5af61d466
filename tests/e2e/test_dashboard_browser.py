"""The dashboard in a real headless Chromium (Debian's, driven by Playwright): log in, add a proxy,
create a session, see its live QR, pair it in the simulator, send a message, restart the session,
check the proxy, take a screenshot. Skipped without Chromium or Playwright, except under CI=true."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import start_stack, stop_stack
from tests.support.api_client import ThreadedGateway
from tests.support.waiting import wait_for
from waorch.proxies.pool import normalize_url, redact
from waorch.tenants import apikeys

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Flags that keep Chromium from reaching anything but the page under test.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
PHONE = "12025550178"
TO = "14155550123"
TEXT = "hello from the dashboard"
LONG = 90_000  # ms: pairing, sending and restarting on a loaded 2-core machine
SHORT = 20_000


def _unavailable(reason: str):
    message = f"headless Chromium not usable: {reason} (run scripts/setup-browser.sh)"
    if os.environ.get("CI") in ("true", "1"):
        pytest.fail(message)
    pytest.skip(message)


def _chromium() -> str:
    for candidate in (os.environ.get("WAORCH_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    _unavailable("no chromium executable (WAORCH_CHROMIUM, PATH or /usr/bin/chromium)")
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def browser():
    path = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (pip install -e '.[test]')")
    with sync_playwright() as pw:
        # Debian's build, never one downloaded by Playwright
        launched = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    opened = context.new_page()
    opened.set_default_timeout(SHORT)
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    yield opened
    context.close()
    assert errors == [], f"uncaught errors in the page: {errors}"


def log_in(page, key: str) -> None:
    page.fill("#login-key", key)
    page.click("#login-form button[type=submit]")


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", "not a PNG"
    return struct.unpack(">II", data[16:24])


def test_wrong_and_non_admin_keys_are_refused_and_logout_forgets_the_key(page, redis_url, r):
    from playwright.sync_api import expect

    from app import create_app

    reader = apikeys.create_key(r, "acme", "send,read")
    admin = apikeys.create_key(r, "acme", "send,read,admin")
    with ThreadedGateway(create_app()) as gateway:
        page.goto(f"{gateway.url}/dashboard")
        expect(page.locator("#login-panel")).to_be_visible()
        expect(page.locator("#app")).to_be_hidden()

        log_in(page, "wrong-key")
        expect(page.locator("#login-error")).to_have_text("That API key is not valid.")
        log_in(page, reader)
        expect(page.locator("#login-error")).to_contain_text("not an admin key")
        expect(page.locator("#app")).to_be_hidden()

        # a gateway without GET /api/alerts yet: the panel says so, and asks again on each poll
        page.route("**/api/alerts", lambda route: route.fulfill(
            status=404, content_type="application/json",
            body='{"code": "not_found", "message": "not found", "errors": {}}'))
        log_in(page, admin)
        expect(page.locator("#app")).to_be_visible()
        expect(page.locator("#updated")).to_contain_text("updated")
        expect(page.locator("#alerts-unavailable")).to_be_visible()
        # once it answers, its alerts show, as text: markup in a message is not interpreted
        alert = {"id": "a1", "kind": "proxy_burned", "subject": "p1", "state": "raised",
                 "severity": "critical", "message": "<b>burned</b>", "data": {}, "at": 1.0}
        page.unroute("**/api/alerts")
        page.route("**/api/alerts", lambda route: route.fulfill(
            status=200, content_type="application/json",
            body=json.dumps({"active": [alert], "events": [alert], "sinks": []})))
        expect(page.locator("#alerts-unavailable")).to_be_hidden()
        expect(page.locator("#alerts-active li.severity-critical")).to_contain_text(
            "proxy_burned p1: <b>burned</b>")
        assert page.locator("#alerts-panel b").count() == 0
        assert page.evaluate("sessionStorage.length") == 1
        for secret in (reader, admin):
            assert secret not in page.content()
        page.click("#logout")
        expect(page.locator("#login-panel")).to_be_visible()
        assert page.evaluate("sessionStorage.length") == 0


@pytest.fixture
def stack(tmp_path, redis_url):
    # one message to one person at any hour: no quiet hours, no recipient cap
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"trust_levels": {"new": {"per_minute": 30, "per_day": 1000}},
                                  "quiet_hours": None, "recipient_daily_cap": None}))
    s = start_stack(tmp_path, redis_url, {"WAORCH_POLICY_FILE": str(policy)}, ["--workers", "1"])
    yield s
    assert stop_stack(s) == []


def test_dashboard_pairs_a_session_and_sends_a_message(page, stack, proxy, tmp_path, tmp_path_factory):
    from playwright.sync_api import expect

    api_key = stack.run["api_key"]
    page.goto(stack.run["dashboard_url"])
    log_in(page, api_key)
    expect(page.locator("#app")).to_be_visible()
    page.evaluate("window.__sameDocument = true")  # gone if anything reloads the page

    # a proxy added through the form, shown redacted
    page.fill("#proxy-form input[name=url]", proxy.url)
    page.click("#proxy-form button[type=submit]")
    shown = redact(normalize_url(proxy.url))
    proxy_row = page.locator("#proxies tr", has_text=shown)
    expect(proxy_row).to_have_count(1, timeout=SHORT)
    expect(proxy_row.locator("td").nth(2)).to_have_text("OK")
    expect(proxy_row.locator("td").nth(3)).to_have_text(re.compile(r"^0 / \d+$"))

    # a session created through the form, its QR live on the page
    page.fill("#session-form input[name=phone]", f"+{PHONE}")
    page.fill("#session-form input[name=label]", "browser")
    page.click("#session-form button[type=submit]")
    row = page.locator("#sessions tr", has_text=f"+{PHONE}")
    expect(row).to_have_count(1, timeout=SHORT)
    session_id = row.get_attribute("data-key")
    qr = page.locator(f"#pairing figure[data-session='{session_id}'] img")
    expect(qr).to_be_visible(timeout=LONG)
    wait_for(lambda: qr.evaluate("img => img.complete && img.naturalWidth > 100"), "the QR image loaded",
             timeout=30)
    assert qr.get_attribute("src").startswith("blob:")
    expect(row.locator("td").nth(3)).to_have_text("pairing")
    pairing_shot = tmp_path / "dashboard-pairing.png"
    page.locator("#sessions-panel").screenshot(path=str(pairing_shot))
    assert png_size(pairing_shot.read_bytes())[1] > 200  # the panel grew by the QR code

    # paired in the simulator: the table follows without a reload, the QR goes away
    scan = requests.post(f"{stack.sim}/sim/accounts/{PHONE}/scan", timeout=10)
    assert scan.status_code == 200, scan.text
    expect(row.locator("td").nth(3)).to_have_text("connected", timeout=LONG)
    expect(page.locator("#pairing figure")).to_have_count(0)
    expect(row.locator("td").nth(5)).to_have_text(shown)
    expect(proxy_row.locator("td").nth(3)).to_have_text(re.compile(r"^1 / \d+$"))

    # a message sent from the form reaches the simulator; the page follows its status
    expect(page.locator(f"#send-form option[value='+{PHONE}']")).to_have_count(1)
    page.fill("#send-form input[name=to]", f"+{TO}")
    page.fill("#send-form input[name=text]", TEXT)
    page.select_option("#send-form select[name=from]", f"+{PHONE}")
    page.click("#send-form button[type=submit]")
    expect(page.locator("#notice")).to_contain_text("accepted")

    def received() -> list[dict]:
        got = requests.get(f"{stack.sim}/sim/messages", params={"from": PHONE}, timeout=10).json()
        return [m for m in got if m["text"] == TEXT]

    wait_for(lambda: len(received()) == 1, "the message in the simulator", timeout=LONG / 1000)
    expect(page.locator("#sent")).to_have_attribute("data-status", re.compile("^(sent|delivered|read)$"),
                                                    timeout=LONG)
    recent = page.locator("#recent-messages tr", has_text=TEXT)
    expect(recent.locator("td").nth(1)).to_have_text(re.compile("^(sent|delivered|read)$"), timeout=SHORT)
    expect(row.locator("td").nth(8)).to_have_text("1", timeout=SHORT)  # sends in 24 h
    expect(row.locator("td").nth(6)).to_have_text(re.compile(r"\d+ (s|min) ago"))  # last ping

    # restart from the table: a new worker process, connected again without a new scan
    worker = wait_for(lambda: stack.session_worker(session_id), "the session worker", timeout=30)
    row.get_by_role("button", name="Restart").click()
    expect(page.locator("#notice")).to_contain_text(f"Session {session_id} is restarting")
    expect(row.locator("td").nth(9)).to_have_text("1")
    wait_for(lambda: (w := stack.session_worker(session_id)) is not None and w.pid != worker.pid,
             "a new worker process", timeout=LONG / 1000)
    expect(row.locator("td").nth(3)).to_have_text("connected", timeout=LONG)
    assert stack.api.get(f"/api/sessions/{session_id}").json()["restarts"] == 1

    # check the proxy from the table: a real tunnel through it
    before = len(proxy.requests)
    proxy_row.get_by_role("button", name="Check").click()
    expect(page.locator("#notice")).to_contain_text("checked: OK")
    expect(proxy_row.locator("td").nth(5)).to_have_text(re.compile(r"\d+ s ago"))
    assert len(proxy.requests) > before

    # live all along: no reload happened
    assert page.evaluate("window.__sameDocument") is True
    content = page.content()
    for secret in ("pw-e2e", api_key):
        assert secret not in content, "a secret reached the page"

    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    data = shot.read_bytes()
    width, height = png_size(data)
    assert width >= 1200 and height >= 800 and len(data) > 20_000, (width, height, len(data))
    for taken in (shot, pairing_shot):  # easy to find after the run: <pytest tmp dir>/dashboard*.png
        shutil.copyfile(taken, Path(tmp_path_factory.getbasetemp()) / taken.name)
