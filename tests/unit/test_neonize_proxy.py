"""neonize transport: which proxy URL whatsmeow gets, which are refused, and the proxy flags."""

from __future__ import annotations

import pytest

from worker_container.transports.base import CONFIG_INVALID
from worker_container.transports.neonize_proxy import (
    ProxyRefused,
    allow_no_proxy,
    choose_proxy,
    environment_proxies,
    redact_proxy_url,
)


def test_socks5h_becomes_socks5_for_whatsmeow_with_credentials_kept() -> None:
    choice = choose_proxy("socks5h://user:p%40ss@proxy.example:1080")
    assert choice.whatsmeow_url == "socks5://user:p%40ss@proxy.example:1080"
    assert choice.requests_url == "socks5h://user:p%40ss@proxy.example:1080"
    assert "p%40ss" not in choice.redacted and choice.redacted == "socks5h://user:***@proxy.example:1080"


@pytest.mark.parametrize("url, expected", [
    ("SOCKS5H://h:1", "socks5://h:1"),
    ("socks5://h:1080", "socks5://h:1080"),  # whatsmeow's socks5 sends the host name too
    ("http://h:3128", "http://h:3128"),  # CONNECT host:port, no local resolution
    ("https://u:pw@h:443/", "https://u:pw@h:443"),
    ("socks5h://[::1]:1080", "socks5://[::1]:1080"),
])
def test_accepted_schemes(url: str, expected: str) -> None:
    assert choose_proxy(url).whatsmeow_url == expected


@pytest.mark.parametrize("url, words", [
    ("socks4://h:1080", "resolve names locally"),
    ("socks4a://h:1080", "refused"),
    ("ftp://h:21", "refused"),
    ("h:1080", "refused"),
    ("socks5h://:1080", "no host"),
    ("socks5h://h", "no port"),
    ("socks5h://h:99999", "not a valid URL"),
    ("socks5h://h:1080/path", "scheme://"),
    ("socks5h://h:1080?x=1", "scheme://"),
])
def test_refused_urls(url: str, words: str) -> None:
    with pytest.raises(ProxyRefused) as info:
        choose_proxy(url)
    assert info.value.code == CONFIG_INVALID
    assert words in info.value.detail


def test_refusal_detail_never_contains_the_password() -> None:
    with pytest.raises(ProxyRefused) as info:
        choose_proxy("socks4://alice:hunter2@h:1080")
    assert "hunter2" not in info.value.detail
    assert "alice:***@h:1080" in info.value.detail


def test_no_proxy_is_refused_unless_explicitly_allowed() -> None:
    with pytest.raises(ProxyRefused) as info:
        choose_proxy("")
    assert info.value.code == CONFIG_INVALID and "WAORCH_ALLOW_NO_PROXY" in info.value.detail
    with pytest.raises(ProxyRefused):
        choose_proxy("   ", no_proxy_allowed=False)
    assert choose_proxy("", no_proxy_allowed=True).whatsmeow_url == ""


def test_allow_no_proxy_flag() -> None:
    assert allow_no_proxy({"WAORCH_ALLOW_NO_PROXY": "true"})
    assert allow_no_proxy({"WAORCH_ALLOW_NO_PROXY": " 1 "})
    assert not allow_no_proxy({"WAORCH_ALLOW_NO_PROXY": "false"})
    assert not allow_no_proxy({})


def test_allowing_no_proxy_does_not_relax_the_rules_for_a_given_url() -> None:
    with pytest.raises(ProxyRefused):
        choose_proxy("socks4://h:1", no_proxy_allowed=True)


def test_redact_proxy_url() -> None:
    assert redact_proxy_url("socks5://u:pw@h:1 and http://a:b@c:2") == "socks5://u:***@h:1 and http://a:***@c:2"
    assert redact_proxy_url("socks5://h:1") == "socks5://h:1"


def test_environment_proxies_lists_the_non_empty_ones() -> None:
    env = {"HTTPS_PROXY": "http://decoy:1", "http_proxy": " ", "ALL_PROXY": "socks5://x:1", "PATH": "/bin"}
    assert environment_proxies(env) == ["HTTPS_PROXY", "ALL_PROXY"]
    assert environment_proxies({"NO_PROXY": "*"}) == []


def test_initial_environment_is_what_the_process_started_with() -> None:
    import subprocess
    import sys

    code = ("import os; os.environ['ADDED_LATER'] = '1'; del os.environ['HTTPS_PROXY'];"
            "from worker_container.transports.neonize_proxy import initial_environment as ie;"
            "env = ie(); print(env.get('HTTPS_PROXY'), 'ADDED_LATER' in env)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={"HTTPS_PROXY": "http://decoy:1", "PATH": "/usr/bin:/bin",
                              "PYTHONPATH": str(__import__("pathlib").Path(__file__).parents[2])})
    assert out.stdout.split() == ["http://decoy:1", "False"], out.stderr


def test_whatsmeow_proxy_settings_never_let_traffic_bypass_the_proxy() -> None:
    # Real neonize ProxySettings: each of these flags would route some traffic around the proxy.
    from worker_container.transports.neonize_adapter import load_neonize, whatsmeow_proxy_settings

    nz = load_neonize()
    settings = whatsmeow_proxy_settings(nz, choose_proxy("socks5h://u:pw@127.0.0.1:1080"))
    assert isinstance(settings, nz.ProxySettings)
    assert settings.proxy_address == "socks5://u:pw@127.0.0.1:1080"
    assert settings.no_websocket is False
    assert settings.only_login is False
    assert settings.no_media is False
    c_struct = settings._to_c_struct()  # what actually crosses into Go
    assert (c_struct.noWebsocket, c_struct.onlyLogin, c_struct.noMedia) == (False, False, False)
    assert c_struct.proxyAddress == b"socks5://u:pw@127.0.0.1:1080"
