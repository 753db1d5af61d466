"""Proxy URL validation, canonical form, redaction and ids (pure functions)."""

from __future__ import annotations

import pytest

from waorch.proxies.pool import InvalidProxyUrl, normalize_url, proxy_id, redact


@pytest.mark.parametrize(("given", "expected"), [
    ("socks5h://user:pa%40ss@Proxy.Example.com:1080", "socks5h://user:pa%40ss@proxy.example.com:1080"),
    ("socks5://127.0.0.2:1080", "socks5://127.0.0.2:1080"),
    ("http://u:p@10.0.0.1:3128/", "http://u:p@10.0.0.1:3128"),
    ("SOCKS5H://[::1]:9050", "socks5h://[::1]:9050"),
    ("  socks5h://a:b@host:1  ", "socks5h://a:b@host:1"),
])
def test_valid_urls_are_normalized(given, expected):
    assert normalize_url(given) == expected


@pytest.mark.parametrize(("given", "reason"), [
    ("", "empty"),
    ("ftp://host:21", "scheme"),
    ("https://host:443", "scheme"),
    ("socks5://host", "port"),
    ("socks5://host:0", "port"),
    ("socks5://host:70000", "port"),
    ("socks5://user@host:1080", "user name and a password"),
    ("socks5://:pw@host:1080", "user name and a password"),
    ("socks5://host:1080/path", "path"),
    ("socks5://host:1080?x=1", "path"),
    ("socks5://bad host:1080", "host"),
    ("socks5://-bad-.com:1080", "host"),
    ("socks5h://", "host"),
])
def test_invalid_urls_say_why(given, reason):
    with pytest.raises(InvalidProxyUrl, match=reason):
        normalize_url(given)


def test_errors_never_repeat_the_password():
    with pytest.raises(InvalidProxyUrl) as info:
        normalize_url("socks5://user:sup3rsecret@host:99999")
    assert "sup3rsecret" not in str(info.value)


def test_redaction_hides_user_and_password():
    assert redact("socks5h://alice:s3cret@proxy.example:1080") == "socks5h://***:***@proxy.example:1080"
    assert redact("socks5h://proxy.example:1080") == "socks5h://proxy.example:1080"
    assert "s3cret" not in redact("http://alice:s3cret@[::1]:8080")


def test_id_is_short_stable_and_distinct():
    a, b = proxy_id("socks5h://a:1"), proxy_id("socks5h://b:1")
    assert len(a) == 12 and a == proxy_id("socks5h://a:1") and a != b
