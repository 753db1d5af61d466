"""Client webhook target rules: https, public addresses only, unless the allow-list permits."""

from __future__ import annotations

import pytest

from waorch.webhooks.subscriptions import (
    WebhookUrlError,
    check_secret,
    check_url,
    parse_allowlist,
    seal,
    unseal,
)

NONE = parse_allowlist("")
PUBLIC = "93.184.216.34"


def resolver(table: dict[str, list[str]]):
    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError(-2, "Name or service not known")
        return table[host]
    return resolve


def test_public_https_is_accepted_and_pinned_to_the_checked_address():
    target = check_url("https://hooks.example.com/in?x=1", NONE,
                       resolver({"hooks.example.com": [PUBLIC]}))
    assert (target.scheme, target.host, target.port) == ("https", "hooks.example.com", 443)
    assert target.address == PUBLIC and target.path == "/in?x=1"
    assert target.netloc == "hooks.example.com"


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.1.2.3", "172.16.0.9", "192.168.1.1", "169.254.169.254", "100.64.0.1",
    "0.0.0.0", "224.0.0.1", "239.255.255.250", "::1", "fe80::1", "fc00::1", "ff02::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::",
])
def test_non_public_addresses_are_refused(address):
    with pytest.raises(WebhookUrlError, match="loopback, private"):
        check_url("https://h.example/", NONE, resolver({"h.example": [address]}))


def test_every_resolved_address_counts():
    both = resolver({"h.example": [PUBLIC, "10.0.0.7"]})
    with pytest.raises(WebhookUrlError, match="10.0.0.7"):
        check_url("https://h.example/", NONE, both)


def test_ip_literals_and_numeric_forms_are_resolved_like_names():
    for url in ("https://127.0.0.1/", "https://[::1]:8443/", "https://2130706433/", "https://0x7f.1/",
                "https://localhost/"):
        with pytest.raises(WebhookUrlError):
            check_url(url, NONE)  # the system resolver: all of these are loopback


def test_plain_http_needs_the_allowlist():
    table = resolver({"hooks.example.com": [PUBLIC]})
    with pytest.raises(WebhookUrlError, match="plain http"):
        check_url("http://hooks.example.com/", NONE, table)
    assert check_url("http://hooks.example.com/", parse_allowlist("hooks.example.com"), table).port == 80


def test_allowlist_by_cidr_permits_private_and_http():
    allow = parse_allowlist(" 127.0.0.1/32 , 10.0.0.0/8")
    assert check_url("http://127.0.0.1:8123/hook", allow).address == "127.0.0.1"
    assert check_url("http://h.internal/", allow, resolver({"h.internal": ["10.2.3.4"]})).port == 80
    # every address must be covered, not just one
    with pytest.raises(WebhookUrlError):
        check_url("http://h.internal/", allow, resolver({"h.internal": ["10.2.3.4", "192.168.0.1"]}))
    with pytest.raises(WebhookUrlError):
        check_url("http://127.0.0.2/", allow)


def test_allowlist_by_host_name():
    allow = parse_allowlist("crm.local")
    table = resolver({"crm.local": ["192.168.5.5"], "other.local": ["192.168.5.5"]})
    assert check_url("http://CRM.local./x", allow, table).host == "crm.local"
    with pytest.raises(WebhookUrlError):
        check_url("http://other.local/x", allow, table)


def test_unusable_allowlist_entries_are_skipped():
    allow = parse_allowlist("good.example,bad entry,10.0.0.0/99,,;drop")
    assert allow.hosts == frozenset({"good.example"}) and allow.networks == ()


@pytest.mark.parametrize("url,why", [
    ("", "give"), (None, "give"), (42, "give"), ("ftp://h.example/", "https"),
    ("https:///path", "no host"), ("https://user:pw@h.example/", "credentials"),
    ("https://h.example/#frag", "fragment"), ("https://h.example:99999/", "usable"),
    ("https://h.example:0/", "port 0"), ("https://h exam.ple/", "spaces"),
    ("https://h.example/" + "a" * 2100, "at most"), ("https://nowhere.invalid/", "cannot resolve"),
    ("https://[::1/", "usable"),
])
def test_malformed_urls_say_why(url, why):
    with pytest.raises(WebhookUrlError, match=why):
        check_url(url, NONE, resolver({"h.example": [PUBLIC]}))


def test_secret_rules_and_sealing(redis_url):
    assert check_secret("s" * 16) == "s" * 16
    for bad in ("short", "x" * 257, "with\nnewline" * 3, 12345678901234567):
        with pytest.raises(ValueError):
            check_secret(bad)
    sealed = seal("a-client-secret-value")
    assert "a-client-secret-value" not in sealed and unseal(sealed) == "a-client-secret-value"
    assert unseal("not-a-token") is None
