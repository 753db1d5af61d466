"""The worker's logging: stderr only (neonize writes to stdout), secrets redacted from every line."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

from worker_container.config import SESSION_ID_RE


class RedactingFormatter(logging.Formatter):
    """Replaces known secrets in every formatted line, tracebacks included."""

    def __init__(self, fmt: str, secrets: list[str]) -> None:
        super().__init__(fmt)
        # Longest first, so that a secret containing another is replaced whole.
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


def secrets_of(environ: Mapping[str, str]) -> list[str]:
    """Values that must never reach a log line: the webhook secret and the proxy password."""
    found = [environ.get("WEBHOOK_SECRET") or ""]
    try:
        parts = urlsplit((environ.get("PROXY_URL") or "").strip())
        password = parts.password or ""
    except ValueError:
        password = ""
    found += [password, unquote(password)]
    return found


def configure_logging(environ: Mapping[str, str]) -> None:
    """Log to stderr only (neonize writes to stdout), with secrets redacted."""
    session_id = environ.get("SESSION_ID") or ""
    session_id = session_id if SESSION_ID_RE.fullmatch(session_id) else "-"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(
        f"%(asctime)s %(levelname)s worker[{session_id}] %(name)s: %(message)s", secrets_of(environ)))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    level = (environ.get("WORKER_LOG_LEVEL") or "INFO").upper()
    root.setLevel(level if level in ("DEBUG", "INFO", "WARNING", "ERROR") else "INFO")
    logging.getLogger("urllib3").setLevel(logging.WARNING)
