"""Proxy health through real SOCKS5 proxies on 127.0.0.x, BAD handling, worker evidence, the CLI."""

from __future__ import annotations

import os
import socket
import socketserver
import subprocess
import threading
import time

import pytest

from tests.support.commands import WAORCH
from waorch.alerts import events as alert_events
from waorch.core import keys, settings
from waorch.fleet import lifecycle, proxy_failover, worker_events
from waorch.proxies import health as proxy_health
from waorch.proxies.pool import ProxyPool, proxy_id
from waorch.sessions import registry as sessions
from waorch.simulator.socks5 import Socks5Server

PASSWORD = "pr0xy-pa55"


class _Accept(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.recv(1)


@pytest.fixture
def target(monkeypatch):
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Accept)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("WAORCH_PROXY_CHECK_TARGET", f"localhost:{server.server_address[1]}")
    monkeypatch.setenv("WAORCH_PROXY_CHECK_TIMEOUT", "5")
    settings.get.cache_clear()
    yield server.server_address
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxies():
    started = [Socks5Server(host=f"127.0.0.{i}", username="u", password=PASSWORD,
                            outbound_source=f"127.0.0.{i}").start_in_thread() for i in (2, 3)]
    yield started
    for p in started:
        p.stop()


def test_probe_goes_through_the_proxy_with_remote_dns(target, proxies):
    assert proxy_health.probe(proxies[0].url) is None
    request = proxies[0].requests[-1]
    assert (request.atyp, request.host, request.port) == ("domain", "localhost", target[1])


def test_probe_failures_say_why_without_secrets(target, proxies):
    wrong = proxies[0].url.replace(PASSWORD, "wrong-pw")
    error = proxy_health.probe(wrong)
    assert error and error.startswith("proxy refused") and "wrong-pw" not in error
    proxies[1].fail = True
    assert proxy_health.probe(proxies[1].url) is not None
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    assert proxy_health.probe(f"socks5h://u:{PASSWORD}@127.0.0.1:{closed}") == "proxy unreachable"


def test_bad_proxy_burns_alerts_and_its_sessions_move(r, target, proxies, monkeypatch):
    monkeypatch.setenv("WAORCH_PROXY_FAIL_THRESHOLD", "2")
    settings.get.cache_clear()
    pool = ProxyPool(r)
    first_url = pool.add(proxies[0].url)[0] and proxies[0].url
    s = lifecycle.create_session(r, "acme", "491510000001")
    assert s["proxy_url"] == first_url
    pool.add(proxies[1].url)
    proxies[0].fail = True
    assert proxy_failover.check_proxy(r, first_url)["status"] == "OK"  # one failure is not enough
    view = proxy_failover.check_proxy(r, first_url)
    assert view["status"] == "BAD" and view["change"] == "burned" and view["last_error"]
    moved = sessions.get_session(r, s["id"])
    assert moved["proxy_url"] == proxies[1].url and moved["restarts"] == 1
    assert pool.sticky("491510000001") == proxies[1].url
    assert pool.sessions_on(first_url) == [] and pool.sessions_on(proxies[1].url) == [s["id"]]
    burned = [a for a in alert_events.active_alerts(r) if a["kind"] == alert_events.PROXY_BURNED]
    assert [a["subject"] for a in burned] == [proxy_id(first_url)]
    assert PASSWORD not in str(alert_events.list_events(r))
    # deleting and re-creating the phone now sticks to the new proxy
    lifecycle.delete_session(r, s["id"])
    assert lifecycle.create_session(r, "acme", "491510000001")["proxy_url"] == proxies[1].url
    proxies[0].fail = False
    assert proxy_failover.check_proxy(r, first_url)["change"] == "recovered"
    assert not [a for a in alert_events.active_alerts(r) if a["kind"] == alert_events.PROXY_BURNED]


def test_bad_proxy_without_spare_capacity_strands_and_alerts(r, target, proxies, monkeypatch):
    monkeypatch.setenv("WAORCH_PROXY_FAIL_THRESHOLD", "1")
    settings.get.cache_clear()
    ProxyPool(r).add(proxies[0].url)
    s = lifecycle.create_session(r, "acme", "491510000001")
    proxies[0].fail = True
    proxy_failover.check_all(r)
    stuck = sessions.get_session(r, s["id"])
    assert stuck["status"] == "error" and "no proxy capacity" in stuck["last_error"]
    assert any(a["kind"] == alert_events.LOW_INVENTORY for a in alert_events.active_alerts(r))


def test_worker_proxy_failed_reports_count_as_evidence(r, target, proxies):
    ProxyPool(r).add(proxies[0].url)
    s = lifecycle.create_session(r, "acme", "491510000001")
    for _ in range(settings.get().proxy_fail_threshold):
        worker_events.apply(r, s["id"], "ERROR", {"code": "PROXY_FAILED", "detail": "refused"},
                                    time.time())
    assert int(r.get(f"proxy:fails:{proxies[0].url}")) == settings.get().proxy_fail_threshold
    assert r.get(keys.proxy_status(proxies[0].url)) == "OK"  # only a real check may burn it
    proxies[0].fail = True
    assert proxy_failover.check_proxy(r, proxies[0].url)["status"] == "BAD"


def test_cli_add_list_check_remove(r, redis_url, target, proxies, tmp_path):
    listing = tmp_path / "proxies.txt"
    listing.write_text(f"# our proxies\n{proxies[0].url}\n\nnot-a-url\n{proxies[1].url}  # second\n")
    env = {**os.environ}
    added = subprocess.run(WAORCH + ["proxy", "add", "--file", str(listing)], env=env,
                           capture_output=True, text=True, timeout=60)
    assert added.returncode == 1 and f"{listing}:4" in added.stderr  # the bad line, by number
    assert added.stdout.count("added") == 2 and PASSWORD not in added.stdout + added.stderr
    shown = subprocess.run(WAORCH + ["proxy", "list"], env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and shown.stdout.count("socks5h://***:***@127.0.0.") == 2
    assert PASSWORD not in shown.stdout
    proxies[1].fail = True
    checked = subprocess.run(WAORCH + ["proxy", "check"], env=env, capture_output=True, text=True,
                             timeout=120)
    assert checked.returncode == 0 and "timed out" not in checked.stdout  # one failure: still OK
    one = subprocess.run(WAORCH + ["proxy", "check", proxy_id(proxies[0].url)], env=env,
                         capture_output=True, text=True, timeout=60)
    assert one.returncode == 0 and one.stdout.startswith(proxy_id(proxies[0].url))
    removed = subprocess.run(WAORCH + ["proxy", "remove", proxy_id(proxies[1].url)], env=env,
                             capture_output=True, text=True, timeout=60)
    assert removed.returncode == 0 and PASSWORD not in removed.stdout
    assert ProxyPool(r).urls() == [proxies[0].url]
    missing = subprocess.run(WAORCH + ["proxy", "remove", "nope"], env=env, capture_output=True,
                             text=True, timeout=60)
    assert missing.returncode != 0 and "no proxy nope" in missing.stderr and "Traceback" not in missing.stderr
