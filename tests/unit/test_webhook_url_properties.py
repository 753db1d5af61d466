"""Property tests of the client webhook URL check: any input is a Target or a WebhookUrlError."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from waorch.webhooks.subscriptions import WebhookUrlError, check_url, parse_allowlist

NONE = parse_allowlist("")
LOOPBACK_ONLY = parse_allowlist("127.0.0.0/8")

addresses = st.one_of(st.ip_addresses().map(str), st.sampled_from(
    ["127.0.0.1", "10.0.0.1", "169.254.169.254", "::1", "::ffff:127.0.0.1", "93.184.216.34",
     "2606:4700::1111", "not-an-address", "fe80::1%eth0"]))
hosts = st.one_of(st.from_regex(r"[a-z0-9-]{1,20}(\.[a-z0-9-]{1,20}){0,3}", fullmatch=True),
                  st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
                  st.text(max_size=30))
structured = st.builds(
    lambda scheme, host, port, path: f"{scheme}://{host}{port}{path}",
    st.sampled_from(["https", "http", "HTTPS", "ftp", "javascript", ""]), hosts,
    st.one_of(st.just(""), st.integers(-5, 70000).map(lambda p: f":{p}"), st.text(max_size=6)),
    st.text(max_size=40))
urls = st.one_of(structured, st.text(max_size=200), st.none(), st.integers(), st.binary(max_size=20))


def fixed(found: list[str]):
    def resolve(host: str, port: int) -> list[str]:
        return found
    return resolve


def is_public(text: str) -> bool:
    address = ipaddress.ip_address(text)
    mapped = getattr(address, "ipv4_mapped", None)
    address = mapped or address
    return address.is_global and not address.is_multicast


@settings(max_examples=400, deadline=None)
@given(url=urls, found=st.lists(addresses, max_size=4))
def test_without_allowlist_only_public_https_gets_through(url, found):
    try:
        target = check_url(url, NONE, fixed(found))
    except WebhookUrlError as exc:
        assert str(exc)
        return
    assert target.scheme == "https"
    assert found and all(is_public(a) for a in found)
    assert target.address in found and 0 < target.port < 65536


@settings(max_examples=300, deadline=None)
@given(url=urls, found=st.lists(addresses, max_size=4))
def test_allowlisted_targets_stay_inside_the_list(url, found):
    try:
        target = check_url(url, LOOPBACK_ONLY, fixed(found))
    except WebhookUrlError:
        return
    in_list = all(ipaddress.ip_address(a) in ipaddress.ip_network("127.0.0.0/8") for a in found)
    assert in_list or (target.scheme == "https" and all(is_public(a) for a in found))


@settings(max_examples=200, deadline=None)
@given(url=urls)
def test_a_resolver_failure_is_a_clear_refusal(url):
    def broken(host: str, port: int) -> list[str]:
        raise OSError(-3, "Temporary failure in name resolution")
    try:
        check_url(url, NONE, broken)
    except WebhookUrlError:
        return
    raise AssertionError("a URL passed without resolving")
