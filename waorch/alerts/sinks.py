"""Alert sinks: one transport class per channel (Telegram Bot API, a signed webhook).

A sink turns a group of alert events into one message and POSTs it; it knows nothing of Redis,
retries or rate limits (waorch.alerts.delivery does). A group of one event is a plain alert or
recovery notice; a larger group is the summary the rate limit makes of its surplus.
The Telegram bot token is part of the Bot API's URL path, so it is redacted from every error text
and from urllib3's own log records.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass

import urllib3

from waorch.core import settings, signing

log = logging.getLogger(__name__)

TIMEOUT = 10.0  # seconds one delivery POST may take
TELEGRAM_MAX_TEXT = 4096  # the Bot API refuses longer messages
USER_AGENT = "waorch-alerts/1"
_BOT_PATH = re.compile(r"/bot[^/\s]+/")

TITLES = {
    "session_down": "session down",
    "session_restricted": "session restricted",
    "proxy_burned": "proxy burned",
    "low_inventory": "low inventory",
    "burst_detected": "burst detected",
    "backup_failed": "backup failed",
}


@dataclass(frozen=True)
class Outcome:
    ok: bool
    detail: str  # "HTTP 200", "ConnectTimeoutError: ...": never a secret
    retry_after: float | None = None  # the receiver's own wish (Telegram 429)


class _RedactBotPath(logging.Filter):
    """urllib3 logs request paths at DEBUG; a Bot API path holds the token."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_BOT_PATH.sub("/bot***/", a) if isinstance(a, str) else a
                                for a in record.args)
        if isinstance(record.msg, str) and "/bot" in record.msg:
            record.msg = _BOT_PATH.sub("/bot***/", record.msg)
        return True


for _name in ("urllib3.connectionpool", "urllib3.util.retry", "urllib3.poolmanager"):
    logging.getLogger(_name).addFilter(_RedactBotPath())


def event_line(event: dict) -> str:
    """One line of text for an event: state mark, title, subject and message."""
    title = TITLES.get(event.get("kind", ""), str(event.get("kind", "alert")).replace("_", " "))
    if event.get("state") == "resolved":
        return f"✅ resolved: {title} ({event.get('subject')}): {event.get('message')}"
    mark = "🔴" if event.get("severity") == "critical" else "🟠"
    return f"{mark} {title} ({event.get('subject')}): {event.get('message')}"


def message_text(events: list[dict], limit: int = TELEGRAM_MAX_TEXT) -> str:
    """The human message for a group of events (a summary when there are several)."""
    if len(events) == 1:
        event = events[0]
        stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(event.get("at") or 0))
        text = f"{event_line(event)}\n{stamp} · waorch"
        return text[:limit]
    lines = [f"{len(events)} alerts grouped (alert rate limit reached):"]
    for index, event in enumerate(events):
        line = "• " + event_line(event)
        rest = len(events) - index
        # keep room for the tail line so the message never exceeds the limit
        if sum(len(x) + 1 for x in lines) + len(line) + 40 > limit:
            lines.append(f"… and {rest} more")
            break
        lines.append(line)
    return "\n".join(lines)[:limit]


def _describe(exc: Exception) -> str:
    reason = getattr(exc, "reason", None) or exc
    text = str(reason).split(": ", 1)[-1] if isinstance(reason, Exception) else str(reason)
    return f"{exc.__class__.__name__}: {text}"[:300]


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes] | str:
    """POST once, no redirects, no urllib3 retries; (status, body) or an error description."""
    http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=min(TIMEOUT, 5.0), read=TIMEOUT),
                               retries=False, num_pools=1)
    try:
        response = http.request("POST", url, body=body, redirect=False,
                                headers={"Content-Type": "application/json", "User-Agent": USER_AGENT,
                                         **headers})
        return response.status, response.data[:65536]
    except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
        return _describe(exc)
    finally:
        http.clear()


class TelegramSink:
    """POST {api}/bot<token>/sendMessage with chat_id and text (Bot API)."""

    name = "telegram"

    def __init__(self, token: str, chat_id: str, api_url: str = "https://api.telegram.org") -> None:
        self._token = token
        self.chat_id = chat_id
        self.api_url = api_url.rstrip("/")

    def __repr__(self) -> str:
        return f"TelegramSink(chat_id={self.chat_id!r}, api_url={self.api_url!r}, token=***)"

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text

    def send(self, events: list[dict]) -> Outcome:
        body = json.dumps({"chat_id": self.chat_id, "text": message_text(events),
                           "disable_web_page_preview": True}).encode()
        answer = _post(f"{self.api_url}/bot{self._token}/sendMessage", body, {})
        if isinstance(answer, str):
            return Outcome(False, self._redact(answer))
        status, raw = answer
        try:
            reply = json.loads(raw)
        except ValueError:
            reply = {}
        reply = reply if isinstance(reply, dict) else {}
        if 200 <= status < 300 and reply.get("ok") is True:
            return Outcome(True, f"HTTP {status}")
        retry_after = None
        parameters = reply.get("parameters")
        if isinstance(parameters, dict) and isinstance(parameters.get("retry_after"), int | float):
            retry_after = float(parameters["retry_after"])
        description = str(reply.get("description") or "")[:200]
        detail = f"HTTP {status}" + (f": {description}" if description else "")
        return Outcome(False, self._redact(detail), retry_after)


class WebhookSink:
    """POST the events as JSON, signed: X-Waorch-Timestamp, X-Waorch-Signature (sha256=HMAC)."""

    name = "webhook"

    def __init__(self, url: str, secret: str) -> None:
        self.url = url
        self._secret = secret

    def __repr__(self) -> str:
        return f"WebhookSink(url={self.url!r}, secret=***)"

    def send(self, events: list[dict]) -> Outcome:
        body = json.dumps({"type": "alerts", "summary": len(events) > 1, "events": events},
                          sort_keys=True).encode()
        headers = {"X-Waorch-Event-Id": events[0]["id"],
                   **signing.sign_headers(self._secret, body, prefix="X-Waorch-")}
        answer = _post(self.url, body, headers)
        if isinstance(answer, str):
            return Outcome(False, answer.replace(self._secret, "***"))
        status, _ = answer
        return Outcome(200 <= status < 300, f"HTTP {status}")


Sink = TelegramSink | WebhookSink


def configured(conf: settings.Settings | None = None) -> list[Sink]:
    """The sinks the settings turn on (none when their settings are empty)."""
    conf = conf or settings.get()
    found: list[Sink] = []
    if conf.telegram_bot_token and conf.telegram_chat_id:
        found.append(TelegramSink(conf.telegram_bot_token, conf.telegram_chat_id, conf.telegram_api_url))
    elif conf.telegram_bot_token or conf.telegram_chat_id:
        _warn_once("Telegram alerts off: both WAORCH_TELEGRAM_BOT_TOKEN and _CHAT_ID are needed")
    if conf.alert_webhook_url and conf.alert_webhook_secret:
        found.append(WebhookSink(conf.alert_webhook_url, conf.alert_webhook_secret))
    elif conf.alert_webhook_url:
        _warn_once("alert webhook off: WAORCH_ALERT_WEBHOOK_URL needs WAORCH_ALERT_WEBHOOK_SECRET")
    return found


_warned: set[str] = set()


def _warn_once(text: str) -> None:
    # configured() runs on every delivery sweep: say it once per process
    if text not in _warned:
        _warned.add(text)
        log.warning(text)


def enabled_names(conf: settings.Settings | None = None) -> list[str]:
    """Names of the configured sinks (which outboxes a new alert event goes to)."""
    conf = conf or settings.get()
    names = []
    if conf.telegram_bot_token and conf.telegram_chat_id:
        names.append(TelegramSink.name)
    if conf.alert_webhook_url and conf.alert_webhook_secret:
        names.append(WebhookSink.name)
    return names
