"""The session store (WAORCH_SESSION_STORE): where each session's device credentials live.

`file`: in the session's own data directory (neonize's SQLite file, the sim transport's creds
file), so a session can only run where its directory is. A `postgres://` URL: one PostgreSQL
database for every session, so a session can start on any host without a new QR:
- neonize keeps whatsmeow's tables there (`whatsmeow_*`, created by whatsmeow itself), one
  device per session, found by its device JID (`491700000001:7@s.whatsapp.net`);
- the sim transport keeps its credentials in `waorch_sim_devices` (one row per session).

Both the worker and the control plane use these functions (the worker may import waorch.core
only). Connections are short-lived and autocommit; nothing here prepares statements, so they work
behind PgBouncer in transaction pooling. docs/session-store.md has the operator's side.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg

log = logging.getLogger(__name__)

FILE = "file"
POSTGRES_SCHEMES = ("postgres", "postgresql")
SIM_TABLE = "waorch_sim_devices"
# whatsmeow's device table and the one device table without a foreign key to it (research notes A3)
DEVICE_TABLE = "whatsmeow_device"
PRIVACY_TOKENS_TABLE = "whatsmeow_privacy_tokens"
VERSION_TABLE = "whatsmeow_version"
# pg_advisory_xact_lock keys: creating tables concurrently races in PostgreSQL (pg_type unique
# index), whatsmeow's own upgrade included, so every creation runs under one of these.
WHATSMEOW_SCHEMA_LOCK = 0x77616F7263680001
SIM_SCHEMA_LOCK = 0x77616F7263680002
# lib/pq (whatsmeow) URL parameters that libpq (psycopg, pg_dump) refuses
LIBPQ_REJECTS = ("binary_parameters", "disable_prepared_binary_result")
CONNECT_TIMEOUT = 10

_JID = re.compile(r"(?P<user>\d{1,20})(?:\.(?P<agent>\d{1,3}))?(?::(?P<device>\d{1,5}))?"
                  r"@(?P<server>[a-z.]{1,32})")


class StoreUnavailable(RuntimeError):
    """The PostgreSQL session store cannot be reached or used (the text never holds a password)."""


def parse(value: str) -> str:
    """`file` or a postgres:// URL, checked; ValueError for anything else.

    A libpq `host=... dbname=...` string is refused: neonize treats any name that does not start
    with "postgres" as a SQLite path and would create a file named after it (password included).
    """
    value = (value or "").strip()
    if value in ("", FILE):
        return FILE
    try:
        parts = urlsplit(value)
    except ValueError:
        raise ValueError("WAORCH_SESSION_STORE is not a valid URL") from None
    if parts.scheme.lower() not in POSTGRES_SCHEMES:
        # not echoed: a libpq `host=... password=...` string would show its password
        raise ValueError("WAORCH_SESSION_STORE must be `file` or a postgres://user:pass@host:port/db URL "
                         f"(got a value starting {value[:8]!r}...; key=value strings are not accepted)")
    if not parts.hostname or not parts.path.strip("/"):
        raise ValueError(f"WAORCH_SESSION_STORE needs a host and a database name ({redact(value)})")
    return value


def is_postgres(value: str) -> bool:
    return parse(value) != FILE


def redact(url: str) -> str:
    """`url` without its password (safe to log and show)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))


def with_params(url: str, **params: str) -> str:
    """`url` with these query parameters set (replacing any of the same name)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query += list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def libpq_url(url: str) -> str:
    """`url` for libpq clients (psycopg, pg_dump, psql): lib/pq-only parameters removed."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in LIBPQ_REJECTS]
    return urlunsplit(parts._replace(query=urlencode(query)))


def whatsmeow_url(url: str, session_id: str) -> str:
    """The URL a session's neonize client gets: its application_name names the session, so
    `pg_stat_activity` counts connections per session."""
    return with_params(url, application_name=f"waorch-{session_id}")


@contextmanager
def connection(url: str, application_name: str = "waorch") -> Iterator[Any]:
    """A short autocommit psycopg connection; StoreUnavailable when it cannot be opened."""
    try:
        conn = psycopg.connect(libpq_url(url), autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                               application_name=application_name, prepare_threshold=None)
    except psycopg.Error as exc:
        raise StoreUnavailable(f"session store {redact(url)} unreachable: {_first_line(exc)}") from None
    try:
        yield conn
    except psycopg.Error as exc:
        raise StoreUnavailable(f"session store {redact(url)}: {_first_line(exc)}") from None
    finally:
        conn.close()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


# --- device JIDs ------------------------------------------------------------------------------

@dataclass(frozen=True)
class DeviceJid:
    """whatsmeow's AD JID `user[.agent][:device]@server`, the key of a device in the store."""

    user: str
    agent: int
    device: int
    server: str

    def __str__(self) -> str:
        agent = f".{self.agent}" if self.agent else ""
        device = f":{self.device}" if self.device else ""
        return f"{self.user}{agent}{device}@{self.server}"


def parse_jid(text: str) -> DeviceJid | None:
    """The parts of a device JID, or None when `text` is not one (a bare phone, a LID ...)."""
    match = _JID.fullmatch((text or "").strip())
    if match is None or match["server"] != "s.whatsapp.net":
        return None
    return DeviceJid(match["user"], int(match["agent"] or 0), int(match["device"] or 0), match["server"])


# --- whatsmeow's tables -------------------------------------------------------------------------

def table_exists(conn: Any, name: str) -> bool:
    # a scan of pg_class, not to_regclass(): inside a transaction that began before another
    # connection created the table, to_regclass can keep answering "none" (no lock is taken, so
    # the catalog cache is not refreshed), while a query sees every committed row
    return conn.execute("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                        "ON n.oid = c.relnamespace WHERE c.relname = %s AND c.relkind = 'r' "
                        "AND n.nspname = current_schema())", (name,)).fetchone()[0]


def whatsmeow_version(conn: Any) -> int | None:
    """whatsmeow's schema version in this database; None when its tables do not exist yet."""
    if not table_exists(conn, VERSION_TABLE):
        return None
    row = conn.execute(f"SELECT max(version) FROM {VERSION_TABLE}").fetchone()
    return int(row[0]) if row and row[0] is not None else None


def device_exists(conn: Any, jid: str) -> bool:
    """Whether whatsmeow has device `jid`: the check before `NewClient(jid=...)`, which panics
    (kills the process) for a JID that is not in the store."""
    if not table_exists(conn, DEVICE_TABLE):
        return False
    return conn.execute(f"SELECT 1 FROM {DEVICE_TABLE} WHERE jid = %s", (jid,)).fetchone() is not None


def devices(conn: Any) -> list[str]:
    """Every device JID in the store."""
    if not table_exists(conn, DEVICE_TABLE):
        return []
    return [row[0] for row in conn.execute(f"SELECT jid FROM {DEVICE_TABLE} ORDER BY jid")]


def delete_device(conn: Any, jid: str) -> int:
    """Delete device `jid` for good: its row (13 tables follow by cascade) and its privacy tokens,
    which have no foreign key. whatsmeow_lid_map is shared by every device: kept. Returns 1 when
    the device row was there."""
    if not table_exists(conn, DEVICE_TABLE):
        return 0
    with conn.transaction():
        deleted = conn.execute(f"DELETE FROM {DEVICE_TABLE} WHERE jid = %s", (jid,)).rowcount
        if table_exists(conn, PRIVACY_TOKENS_TABLE):
            conn.execute(f"DELETE FROM {PRIVACY_TOKENS_TABLE} WHERE our_jid = %s", (jid,))
    return deleted


# --- the sim transport's credentials -----------------------------------------------------------

def ensure_sim_table(conn: Any) -> None:
    """Create waorch_sim_devices once (under an advisory lock: concurrent CREATE TABLE IF NOT
    EXISTS can fail in PostgreSQL)."""
    if table_exists(conn, SIM_TABLE):
        return
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SIM_SCHEMA_LOCK,))
        conn.execute(f"CREATE TABLE IF NOT EXISTS {SIM_TABLE} ("
                     "session_id text PRIMARY KEY, phone text NOT NULL, creds text NOT NULL, "
                     "paired_at double precision NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())")


def load_sim_creds(conn: Any, session_id: str, phone: str) -> str | None:
    """The session's simulator credentials, if they belong to `phone`."""
    if not table_exists(conn, SIM_TABLE):
        return None
    row = conn.execute(f"SELECT creds FROM {SIM_TABLE} WHERE session_id = %s AND phone = %s",
                       (session_id, phone)).fetchone()
    return row[0] if row and row[0] else None


def save_sim_creds(conn: Any, session_id: str, phone: str, creds: str, paired_at: float) -> None:
    ensure_sim_table(conn)
    conn.execute(f"INSERT INTO {SIM_TABLE} (session_id, phone, creds, paired_at) VALUES (%s, %s, %s, %s) "
                 "ON CONFLICT (session_id) DO UPDATE SET phone = EXCLUDED.phone, creds = EXCLUDED.creds, "
                 "paired_at = EXCLUDED.paired_at, updated_at = now()",
                 (session_id, phone, creds, paired_at))


def delete_sim_creds(conn: Any, session_id: str) -> int:
    if not table_exists(conn, SIM_TABLE):
        return 0
    return conn.execute(f"DELETE FROM {SIM_TABLE} WHERE session_id = %s", (session_id,)).rowcount


def sim_sessions(conn: Any) -> list[str]:
    """Session ids with simulator credentials in the store."""
    if not table_exists(conn, SIM_TABLE):
        return []
    return [row[0] for row in conn.execute(f"SELECT session_id FROM {SIM_TABLE} ORDER BY session_id")]
