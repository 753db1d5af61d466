"""REDIS_URL parsing: plain Redis URLs and the redis+sentinel:// form (waorch/redis_urls.py)."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kombu import Connection

from waorch.core.redis_urls import (
    CLIENT_OPTIONS,
    SentinelUrl,
    celery_broker_settings,
    is_sentinel_url,
    parse_sentinel_url,
    redact,
    redis_client_for,
    validate_redis_url,
)


def test_full_form():
    parsed = parse_sentinel_url("redis+sentinel://app:s%40cret@h1:26379,10.0.0.2:26380/mymaster/3")
    assert parsed == SentinelUrl(sentinels=(("h1", 26379), ("10.0.0.2", 26380)), master="mymaster", db=3,
                                 username="app", password="s@cret")
    assert "s@cret" not in repr(parsed)


def test_defaults_port_db_and_no_credentials():
    parsed = parse_sentinel_url("redis+sentinel://h1,h2:26390/cache")
    assert parsed.sentinels == (("h1", 26379), ("h2", 26390))
    assert (parsed.master, parsed.db, parsed.username, parsed.password) == ("cache", 0, None, None)
    assert parse_sentinel_url("redis+sentinel://h1/cache/").db == 0
    assert parse_sentinel_url("REDIS+SENTINEL://h1/cache/2/").db == 2


def test_password_only_ipv6_and_sentinel_password():
    parsed = parse_sentinel_url("redis+sentinel://:pw@[::1]:26379,[fe80::2]/m/1?sentinel_password=s%26p")
    assert parsed.sentinels == (("::1", 26379), ("fe80::2", 26379))
    assert (parsed.username, parsed.password, parsed.sentinel_password) == (None, "pw", "s&p")


@pytest.mark.parametrize("url, message", [
    ("redis+sentinel://h1:26379", "names its master"),
    ("redis+sentinel://h1:26379/", "names its master"),
    ("redis+sentinel://h1:26379/m/x", "database 'x'"),
    ("redis+sentinel://h1:26379/m/-1", "database '-1'"),
    ("redis+sentinel://h1:26379/m/0/extra", "nothing after the db"),
    ("redis+sentinel://h1:26379,,h2/m", "one is empty"),
    ("redis+sentinel:///m/0", "one is empty"),
    ("redis+sentinel://h1:port/m", "expected host:port"),
    ("redis+sentinel://h1:70000/m", "port out of range"),
    ("redis+sentinel://h1:0/m", "port out of range"),
    ("redis+sentinel://h_1/m", "expected host:port"),
    ("redis+sentinel://h1/m%20x/0", "master name 'm x'"),
    ("redis+sentinel://h1/m/0?timeout=3", "unknown Sentinel URL parameter(s) timeout"),
    ("redis+sentinel://h1/m/0#frag", "no #fragment"),
    ("redis://h1:6379/0", "starts with redis+sentinel://"),
])
def test_invalid_forms_say_what_is_wrong(url, message):
    with pytest.raises(ValueError) as raised:
        parse_sentinel_url(url)
    assert message in str(raised.value)


def test_errors_never_show_the_password():
    with pytest.raises(ValueError) as raised:
        parse_sentinel_url("redis+sentinel://:hunter2@h1:26379/m/zero")
    assert "hunter2" not in str(raised.value)


def test_validate_accepts_both_forms_and_rejects_others():
    validate_redis_url("redis://:pw@127.0.0.1:6379/0")
    validate_redis_url("unix:///run/redis.sock?db=1")
    validate_redis_url("redis+sentinel://h1,h2/mymaster/0")
    with pytest.raises(ValueError, match="REDIS_URL: Redis URL must specify"):
        validate_redis_url("http://127.0.0.1:6379/0")
    with pytest.raises(ValueError, match="names its master"):
        validate_redis_url("redis+sentinel://h1,h2")
    assert is_sentinel_url(" redis+sentinel://h/m") and not is_sentinel_url("redis://h")


def test_redact():
    assert redact("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert redact("redis://user:pw@h:6379/0") == "redis://user:***@h:6379/0"
    assert redact("redis://h:6379/0") == "redis://h:6379/0"
    assert redact("redis+sentinel://app:p%40w@h1:1,h2:2/m/0?sentinel_password=x") == \
        "redis+sentinel://app:***@h1:1,h2:2/m/0?sentinel_password=***"


def test_celery_settings_for_a_plain_url_are_unchanged():
    settings = celery_broker_settings("redis://h:6379/2", {"visibility_timeout": 900})
    assert settings == {"broker_url": "redis://h:6379/2",
                        "broker_transport_options": {"visibility_timeout": 900}}


def test_celery_settings_for_sentinel_are_what_kombu_reads():
    url = "redis+sentinel://app:p%40ss%3B@h1:26379,h2:26380/mymaster/3?sentinel_password=sp"
    settings = celery_broker_settings(url, {"visibility_timeout": 900})
    assert settings["broker_url"] == ("sentinel://app:p%40ss%3B@h1:26379/3;"
                                      "sentinel://app:p%40ss%3B@h2:26380/3")
    options = settings["broker_transport_options"]
    assert options["master_name"] == "mymaster"
    assert options["visibility_timeout"] == 900
    assert options["sentinel_kwargs"]["password"] == "sp"
    assert options["socket_timeout"] == CLIENT_OPTIONS["socket_timeout"]
    # kombu's own parsing (no connection is made)
    connection = Connection(settings["broker_url"], transport_options=options)
    assert connection.transport_cls == "sentinel"
    assert connection.alt == settings["broker_url"].split(";")
    assert (connection.hostname, connection.port) == ("h1", 26379)
    assert (connection.userid, connection.password, connection.virtual_host) == ("app", "p@ss;", "3")


def test_client_for_sentinel_url_asks_the_sentinels_for_the_master():
    client = redis_client_for("redis+sentinel://:pw@127.0.0.1:1,127.0.0.1:2/mymaster/4"
                              "?sentinel_password=sp", decode_responses=False)
    try:
        pool = client.connection_pool
        assert pool.service_name == "mymaster" and pool.is_master
        kwargs = pool.connection_kwargs
        assert (kwargs["db"], kwargs["password"], kwargs["decode_responses"]) == (4, "pw", False)
        assert kwargs["socket_timeout"] == CLIENT_OPTIONS["socket_timeout"]
        sentinels = pool.sentinel_manager.sentinels
        options = [s.connection_pool.connection_kwargs for s in sentinels]
        addresses = [(kw["host"], kw["port"]) for kw in options]
        assert addresses == [("127.0.0.1", 1), ("127.0.0.1", 2)]
        assert sentinels[0].connection_pool.connection_kwargs["password"] == "sp"
    finally:
        client.close()


def test_client_for_plain_url_keeps_the_shared_options():
    client = redis_client_for("redis://127.0.0.1:1/5")
    try:
        kwargs = client.connection_pool.connection_kwargs
        assert (kwargs["db"], kwargs["decode_responses"], kwargs["socket_connect_timeout"]) == (5, True, 3)
    finally:
        client.close()


hosts = st.one_of(
    st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z][a-z0-9-]{0,10}){0,2}", fullmatch=True),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
)
secrets = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=20)


@given(sentinels=st.lists(st.tuples(hosts, st.integers(1, 65535)), min_size=1, max_size=5),
       master=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True),
       db=st.integers(0, 15), password=st.none() | secrets, sentinel_password=st.none() | secrets)
def test_round_trip(sentinels, master, db, password, sentinel_password):
    netloc = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in sentinels)
    auth = f":{quote(password, safe='')}@" if password is not None else ""
    query = f"?sentinel_password={quote(sentinel_password, safe='')}" if sentinel_password else ""
    parsed = parse_sentinel_url(f"redis+sentinel://{auth}{netloc}/{master}/{db}{query}")
    assert parsed == SentinelUrl(tuple(sentinels), master, db, None, password, sentinel_password)
    # the broker URL carries the same credentials and db to kombu
    broker = Connection(celery_broker_settings(f"redis+sentinel://{auth}{netloc}/{master}/{db}")["broker_url"])
    assert (broker.password, broker.virtual_host) == (password, str(db))
