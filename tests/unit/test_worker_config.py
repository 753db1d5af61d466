"""WorkerConfig.from_env: every variable of the worker environment contract."""

from __future__ import annotations

import pytest

from worker_container.config import ConfigError, WorkerConfig, redact_url, report_target

BASE = {
    "SESSION_ID": "s_1-A",
    "PHONE": "4915112345678",
    "PROXY_URL": "socks5h://user:p%40ss@proxy.example:1080",
    "WEBHOOK_URL": "http://orch.example:8000/api/webhook",
    "WEBHOOK_SECRET": "top-secret-value",
}


def env(**changes: str | None) -> dict[str, str]:
    result = dict(BASE)
    for key, value in changes.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result


def test_defaults() -> None:
    c = WorkerConfig.from_env(env())
    assert c.session_id == "s_1-A"
    assert c.transport == "neonize"
    assert c.sessions_dir == "/app/sessions"
    assert c.session_dir == "/app/sessions/s_1-A"
    assert c.journal_path == "/app/sessions/s_1-A/outbox-journal.jsonl"
    assert c.orchestrator_url == "http://orch.example:8000"
    assert c.keep_alive is True
    assert c.profile == {}
    assert c.ping_interval == 15.0
    assert c.claim_wait == 25.0


def test_all_fields_given() -> None:
    c = WorkerConfig.from_env(env(
        TRANSPORT="sim", SIM_WIRE="127.0.0.1:7000", ENABLE_KEEP_ALIVE="0", SESSIONS_DIR="/data/s",
        ORCHESTRATOR_URL="https://gw.example/", PROFILE='{"os": "Linux", "browser": "Chrome"}',
        PING_INTERVAL="2.5", CLAIM_WAIT="5", PHONE="+4915112345678"))
    assert c.transport == "sim"
    assert c.sim_wire == "127.0.0.1:7000"
    assert c.keep_alive is False
    assert c.session_dir == "/data/s/s_1-A"
    assert c.orchestrator_url == "https://gw.example"
    assert c.profile == {"os": "Linux", "browser": "Chrome"}
    assert (c.ping_interval, c.claim_wait) == (2.5, 5.0)
    assert c.phone == "4915112345678"


@pytest.mark.parametrize("value", ["true", "TRUE", "1", "yes"])
def test_keep_alive_true(value: str) -> None:
    assert WorkerConfig.from_env(env(ENABLE_KEEP_ALIVE=value)).keep_alive is True


@pytest.mark.parametrize("url", ["socks5h://h:1", "socks5://u:p@h:1080", "http://10.0.0.1:3128",
                                 "https://u:p@proxy.example:443"])
def test_proxy_schemes_accepted(url: str) -> None:
    assert WorkerConfig.from_env(env(PROXY_URL=url)).proxy_url == url


BAD = [
    ("SESSION_ID", {"SESSION_ID": None}, "required"),
    ("SESSION_ID", {"SESSION_ID": "a/b"}, "A-Z"),
    ("SESSION_ID", {"SESSION_ID": "x" * 65}, "1-64"),
    ("WEBHOOK_URL", {"WEBHOOK_URL": None}, "required"),
    ("WEBHOOK_URL", {"WEBHOOK_URL": "ftp://orch/api/webhook"}, "http"),
    ("WEBHOOK_URL", {"WEBHOOK_URL": "http:///api/webhook"}, "host"),
    ("WEBHOOK_URL", {"WEBHOOK_URL": "http://orch:99999/api/webhook"}, "valid URL"),
    ("WEBHOOK_SECRET", {"WEBHOOK_SECRET": None}, "required"),
    ("WEBHOOK_SECRET", {"WEBHOOK_SECRET": "   "}, "required"),
    ("TRANSPORT", {"TRANSPORT": "carrier-pigeon"}, "neonize"),
    ("PHONE", {"PHONE": "12 34"}, "E.164"),
    ("PHONE", {"PHONE": None, "TRANSPORT": "sim", "SIM_WIRE": "h:1"}, "required"),
    ("SIM_WIRE", {"TRANSPORT": "sim"}, "required"),
    ("SIM_WIRE", {"SIM_WIRE": "nohost"}, "host:port"),
    ("SIM_WIRE", {"SIM_WIRE": "h:0"}, "host:port"),
    ("ORCHESTRATOR_URL", {"ORCHESTRATOR_URL": "orch:8000"}, "http"),
    ("ENABLE_KEEP_ALIVE", {"ENABLE_KEEP_ALIVE": "maybe"}, "true/false"),
    ("PROFILE", {"PROFILE": "{not json"}, "JSON"),
    ("PROFILE", {"PROFILE": "[1, 2]"}, "object"),
    ("PING_INTERVAL", {"PING_INTERVAL": "30"}, "<= 15"),
    ("PING_INTERVAL", {"PING_INTERVAL": "0"}, "> 0"),
    ("PING_INTERVAL", {"PING_INTERVAL": "soon"}, "number"),
    ("CLAIM_WAIT", {"CLAIM_WAIT": "26"}, "<= 25"),
    ("CLAIM_WAIT", {"CLAIM_WAIT": "-1"}, "> 0"),
]


@pytest.mark.parametrize(("field", "changes", "words"), BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_field_names_the_field(field: str, changes: dict, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        WorkerConfig.from_env(env(**changes))
    assert info.value.field == field
    assert str(info.value).startswith(field + ":")
    assert words in str(info.value)
    assert info.value.code == "CONFIG_INVALID"


BAD_PROXIES = [None, "", "socks4://h:1080", "h:1080", "socks5h://h", "socks5h://:1080",
               "socks5h://u:secretpw@h:notaport", "socks5h://u:secretpw@h:70000"]


@pytest.mark.parametrize("url", BAD_PROXIES)
def test_bad_proxy_is_proxy_failed_and_never_shows_the_password(url: str | None) -> None:
    with pytest.raises(ConfigError) as info:
        WorkerConfig.from_env(env(PROXY_URL=url))
    assert info.value.field == "PROXY_URL"
    assert info.value.code == "PROXY_FAILED"
    assert "secretpw" not in str(info.value)


def test_missing_proxy_allowed_only_in_development() -> None:
    c = WorkerConfig.from_env(env(PROXY_URL=None, WAORCH_ALLOW_NO_PROXY="true"))
    assert c.proxy_url == ""


def test_secrets_not_in_repr_or_description() -> None:
    c = WorkerConfig.from_env(env())
    for text in (repr(c), c.describe()):
        assert "top-secret-value" not in text
        assert "p%40ss" not in text
    assert "socks5h://***@proxy.example:1080" in c.describe()


def test_redact_url() -> None:
    assert redact_url("socks5h://user:pw@h:1") == "socks5h://***@h:1"
    assert redact_url("socks5h://us@er:p@w@h:1") == "socks5h://***@h:1"
    assert redact_url("http://h:1/x") == "http://h:1/x"


def test_report_target_needs_only_the_reporting_fields() -> None:
    target = report_target({"SESSION_ID": "s1", "WEBHOOK_URL": "http://o:1/api/webhook",
                            "WEBHOOK_SECRET": "zz-secret-zz", "PING_INTERVAL": "999"})
    assert target is not None
    assert (target.session_id, target.webhook_url) == ("s1", "http://o:1/api/webhook")
    assert target.webhook_secret == "zz-secret-zz"
    assert "zz-secret-zz" not in repr(target)
    assert report_target(env(SESSION_ID="bad/id")) is None
    assert report_target(env(WEBHOOK_URL="nope")) is None
    assert report_target(env(WEBHOOK_SECRET=None)) is None


def test_log_lines_never_carry_the_secret_or_proxy_password() -> None:
    import io
    import logging

    from worker_container.logs import RedactingFormatter, secrets_of

    environ = env(PROXY_URL="socks5h://user:p%40ss-word@proxy.example:1080")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter("%(message)s", secrets_of(environ)))
    logger = logging.getLogger("test-redaction")
    logger.addHandler(handler)
    try:
        try:
            raise OSError("cannot reach socks5h://user:p@ss-word@proxy.example:1080 (p%40ss-word)")
        except OSError:
            logger.exception("secret is %s", "top-secret-value")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "cannot reach" in text and "secret is ***" in text
    for secret in ("top-secret-value", "p@ss-word", "p%40ss-word"):
        assert secret not in text
