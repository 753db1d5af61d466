"""The PostgreSQL session store in a backup, and back (docs/backups.md, docs/session-store.md).

A backup copies the store's tables (`whatsmeow_*`, `waorch_*`) in one REPEATABLE READ snapshot:
each table's definition, rebuilt from the catalog (columns, defaults, keys, foreign keys, indexes:
enough for whatsmeow's plain schema, and no pg_dump needed on the backup host), and its rows as
`COPY ... TO STDOUT` text. The members are checksummed in the manifest like every other file.

A restore loads them inside one transaction that it keeps open until the sessions directory and
Redis have been swapped, then commits; if anything before the commit fails, the transaction is
rolled back and the store is as it was. The store's tables are dropped and recreated from the
archive (DDL is transactional in PostgreSQL), so a restore into an empty database works too.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from waorch.core import session_store

log = logging.getLogger(__name__)

STORE = "store"
SCHEMA_MEMBER = "store/schema.json"
LOCK_TIMEOUT = "30s"  # a worker still holding a table: fail the restore instead of hanging
_TABLES = """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = current_schema() AND c.relkind = 'r'
               AND (c.relname LIKE 'whatsmeow\\_%' OR c.relname LIKE 'waorch\\_%') ORDER BY c.relname"""
_COLUMNS = """SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                     pg_get_expr(d.adbin, d.adrelid)
              FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
              WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"""
_CONSTRAINTS = """SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint
                  WHERE conrelid = %s::regclass ORDER BY contype <> 'p', conname"""
_INDEXES = """SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i
              WHERE i.indrelid = %s::regclass
                AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
              ORDER BY i.indexrelid"""


class StoreRestoreError(RuntimeError):
    """The store part of a restore cannot be done; nothing was changed."""


def table_member(table: str) -> str:
    return f"{STORE}/{table}.copy"


def _definition(conn: Any, table: str) -> dict:
    columns = []
    for name, kind, not_null, default in conn.execute(_COLUMNS, (table,)):
        column = f"{_ident(conn, name)} {kind}"
        if default is not None:
            column += f" DEFAULT {default}"
        if not_null:
            column += " NOT NULL"
        columns.append(column)
    inline, foreign = [], []
    for name, kind, definition in conn.execute(_CONSTRAINTS, (table,)):
        text = f"CONSTRAINT {_ident(conn, name)} {definition}"
        (foreign if kind == "f" else inline).append(text)
    create = f"CREATE TABLE {_ident(conn, table)} ({', '.join(columns + inline)})"
    indexes = [row[0] for row in conn.execute(_INDEXES, (table,))]
    return {"table": table, "create": create, "foreign_keys": foreign, "indexes": indexes}


def _ident(conn: Any, name: str) -> str:
    return sql.Identifier(name).as_string(conn)


def dump(url: str, write_member: Any) -> dict:
    """Write the store's schema and rows through `write_member(name, chunks)`; the manifest's
    `store` entry: {kind, where, whatsmeow_version, tables: {name: bytes}}."""
    with session_store.connection(url, application_name="waorch-backup") as conn, conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        tables = [row[0] for row in conn.execute(_TABLES)]
        schema = [_definition(conn, table) for table in tables]
        write_member(SCHEMA_MEMBER, iter([json.dumps(schema, indent=1).encode()]))
        sizes = {}
        for table in tables:
            query = sql.SQL("COPY {} TO STDOUT").format(sql.Identifier(table))
            with conn.cursor().copy(query) as copy:
                sizes[table] = write_member(table_member(table), (bytes(chunk) for chunk in copy))
        version = session_store.whatsmeow_version(conn)
    return {"kind": "postgres", "where": session_store.redact(url), "whatsmeow_version": version,
            "tables": sizes}


def check_manifest(manifest: dict) -> None:
    """ValueError when the manifest's store entry is malformed (the files are checked elsewhere)."""
    store = manifest.get("store")
    if store is None:
        return
    if not (isinstance(store, dict) and store.get("kind") == "postgres"
            and isinstance(store.get("tables"), dict)):
        raise ValueError("manifest.json has a malformed `store` entry")
    listed = set(manifest["files"])
    wanted = {SCHEMA_MEMBER, *(table_member(t) for t in store["tables"])}
    if not wanted <= listed:
        raise ValueError(f"store members missing from the manifest: {', '.join(sorted(wanted - listed))}")


@contextlib.contextmanager
def staged(url: str | None, manifest: dict, stage: Path) -> Iterator[Any]:
    """Load the archive's store into an open transaction; yields an object whose `commit()` makes
    it live. Leaving the block without commit (an exception) rolls it back. With no store in the
    archive, or none configured, yields a no-op."""
    store = manifest.get("store")
    if store is None:
        yield _NoStore()
        return
    if url is None:
        raise StoreRestoreError("the archive holds a PostgreSQL session store, but WAORCH_SESSION_STORE is "
                                "`file`: set it to the database to restore into")
    schema = json.loads((stage / SCHEMA_MEMBER).read_text())
    try:
        conn = psycopg.connect(session_store.libpq_url(url), connect_timeout=session_store.CONNECT_TIMEOUT,
                               application_name="waorch-restore", prepare_threshold=None)
    except psycopg.Error as exc:
        raise StoreRestoreError(f"session store {session_store.redact(url)} unreachable: {exc}") from None
    pending = _Pending(conn)
    try:
        try:
            _load(conn, schema, stage)
        except psycopg.Error as exc:
            raise StoreRestoreError(f"the session store refused the archive's tables: "
                                    f"{str(exc).strip().splitlines()[0]}") from None
        yield pending
    finally:
        if not pending.committed:
            with contextlib.suppress(psycopg.Error):
                conn.rollback()
        conn.close()


def _load(conn: Any, schema: list[dict], stage: Path) -> None:
    conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
    live = [row[0] for row in conn.execute(_TABLES)]
    doomed = sorted(set(live) | {item["table"] for item in schema})
    if doomed:
        names = sql.SQL(", ").join(sql.Identifier(t) for t in doomed)
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(names))
    for item in schema:
        conn.execute(item["create"])
    for item in schema:  # rows before foreign keys and indexes: no order to respect, faster
        query = sql.SQL("COPY {} FROM STDIN").format(sql.Identifier(item["table"]))
        with open(stage / table_member(item["table"]), "rb") as data, conn.cursor().copy(query) as copy:
            while chunk := data.read(1 << 20):
                copy.write(chunk)
    for item in schema:
        for constraint in item["foreign_keys"]:
            conn.execute(sql.SQL("ALTER TABLE {} ADD ").format(sql.Identifier(item["table"]))
                         + sql.SQL(constraint))
        for index in item["indexes"]:
            conn.execute(index)


class _Pending:
    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.committed = False

    def commit(self) -> None:
        self.conn.commit()
        self.committed = True


class _NoStore:
    committed = True

    def commit(self) -> None:
        return None
