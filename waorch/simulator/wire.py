"""The simulator's wire: TCP, one JSON object per line (see README.md), reached through SOCKS5."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from waorch.simulator.chat import ChatError
from waorch.simulator.state import PHONE, Network

MAX_LINE = 1 << 20
MAX_OUTGOING = 1_000  # events queued for one client; a client this far behind is dropped
FLUSH_TIMEOUT = 5.0


class WireConnection:
    """One client connection: reads requests, writes events from a bounded queue."""

    def __init__(self, network: Network, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.network = network
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername") or ("unknown", 0)
        self.source_address: str = peer[0]
        self.phone: str | None = None
        self.session: str | None = None
        self.logged_in = False
        self.last_seen = time.monotonic()  # last line from the client: tells a live one from a dead socket
        self._outgoing: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(MAX_OUTGOING)
        self._closing = False

    def send(self, event: dict[str, Any]) -> None:
        if self._closing:
            return
        try:
            self._outgoing.put_nowait(event)
        except asyncio.QueueFull:
            self.abort()

    def close(self) -> None:
        """Close after the events already queued have been written."""
        if self._closing:
            return
        self._closing = True
        try:
            self._outgoing.put_nowait(None)
        except asyncio.QueueFull:
            self.abort()

    def abort(self) -> None:
        self._closing = True
        self.writer.transport.abort()

    async def run(self) -> None:
        writing = asyncio.ensure_future(self._write_loop())
        try:
            await self._read_loop()
        finally:
            self.network.gone(self)
            self.close()
            try:
                await asyncio.wait_for(writing, FLUSH_TIMEOUT)
            except (TimeoutError, OSError):
                self.abort()
            except asyncio.CancelledError:
                self.abort()
                raise
            finally:
                writing.cancel()
            self.writer.close()

    async def _write_loop(self) -> None:
        try:
            while True:
                event = await self._outgoing.get()
                if event is None:
                    break
                self.writer.write(json.dumps(event, separators=(",", ":")).encode() + b"\n")
                await self.writer.drain()
        except OSError:
            self.abort()  # the client is gone: stop reading too
            return
        with contextlib.suppress(OSError):
            self.writer.close()

    async def _read_loop(self) -> None:
        while not self._closing:
            try:
                line = await self.reader.readline()
            except ValueError:  # longer than MAX_LINE
                self.send({"ev": "error", "code": "LINE_TOO_LONG", "detail": f"max {MAX_LINE} bytes"})
                return
            except OSError:
                return
            if not line:
                return
            if self._closing:
                return
            self.last_seen = time.monotonic()
            self._handle(line)

    def _handle(self, line: bytes) -> None:
        try:
            request = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            return self._error("BAD_JSON", "each line must be one JSON object")
        if not isinstance(request, dict):
            return self._error("BAD_JSON", "each line must be one JSON object")
        op = request.get("op")
        if op == "ping":
            self.send({"ev": "pong"})
        elif op == "hello":
            self._hello(request)
        elif op == "send":
            self.network.send(self, request.get("ref"), request.get("to"), request.get("text"),
                              request.get("media"), request.get("id"), request.get("reply_to"))
        elif op in ("presence", "read"):
            self._chat_op(op, request)
        elif op == "react":
            self._react(request)
        elif op == "resolve_lid":
            self._resolve_lid(request)
        else:
            self._error("UNKNOWN_OP", f"unknown op {op!r}")
        return None

    def _chat_op(self, op: str, request: dict[str, Any]) -> None:
        """presence/read: answered by `op_result` when they carry a `ref`, else only errors are told."""
        ref = request.get("ref")
        try:
            if op == "presence":
                self.network.presence(self, request.get("to"), request.get("state"))
            else:
                self.network.read(self, request.get("chat"), request.get("ids"))
        except ChatError as exc:
            if ref is None:
                return self._error(exc.code, exc.detail)
            return self.send({"ev": "op_result", "ref": ref, "op": op, "ok": False, "code": exc.code,
                              "detail": exc.detail})
        if ref is not None:
            self.send({"ev": "op_result", "ref": ref, "op": op, "ok": True})
        return None

    def _react(self, request: dict[str, Any]) -> None:
        """A reaction is a message: answered by `send_result` like a send."""
        ref = request.get("ref")
        try:
            reaction_id, at = self.network.react(self, request.get("to"), request.get("wa_id"),
                                                 request.get("emoji"))
        except ChatError as exc:
            retryable = exc.code in ("NOT_CONNECTED", "463")
            return self.send({"ev": "send_result", "ref": ref, "ok": False, "code": exc.code,
                              "detail": exc.detail, "retryable": retryable})
        self.send({"ev": "send_result", "ref": ref, "ok": True, "wa_id": reaction_id, "ts": at})
        return None

    def _resolve_lid(self, request: dict[str, Any]) -> None:
        ref = request.get("ref")
        if self.phone is None or not self.logged_in:
            return self.send({"ev": "lid", "ref": ref, "ok": False, "code": "NOT_CONNECTED",
                              "detail": "log in first"})
        try:
            answer = self.network.resolve_lid(self.phone, request.get("lid"), request.get("phone"))
        except ChatError as exc:
            return self.send({"ev": "lid", "ref": ref, "ok": False, "code": exc.code, "detail": exc.detail})
        self.send({"ev": "lid", "ref": ref, "ok": True, **answer})
        return None

    def _hello(self, request: dict[str, Any]) -> None:
        if self.phone is not None:
            return self._error("BAD_REQUEST", "hello was already sent on this connection")
        phone, session = request.get("phone"), request.get("session")
        device, creds = request.get("device") or {}, request.get("creds")
        if not isinstance(phone, str) or not PHONE.match(phone):
            return self._error("BAD_REQUEST", "phone must be E.164 digits")
        if not isinstance(session, str) or not 0 < len(session) <= 200:
            return self._error("BAD_REQUEST", "session must be a non-empty string")
        if not isinstance(device, dict) or not (creds is None or isinstance(creds, str)):
            return self._error("BAD_REQUEST", "device must be an object and creds a string or null")
        self.network.hello(self, phone, session, device, creds)
        return None

    def _error(self, code: str, detail: str) -> None:
        self.send({"ev": "error", "code": code, "detail": detail})


class WireServer:
    """Accepts wire connections for one `Network`."""

    def __init__(self, network: Network, host: str = "127.0.0.1", port: int = 0) -> None:
        self.network = network
        self.host = host
        self.port = port
        self._server: asyncio.AbstractServer | None = None
        self._connections: dict[WireConnection, asyncio.Task] = {}

    async def start(self) -> WireServer:
        self._server = await asyncio.start_server(self._accept, self.host, self.port,
                                                  limit=MAX_LINE, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        for connection, task in list(self._connections.items()):
            connection.abort()
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections.values(), return_exceptions=True)
        await server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = WireConnection(self.network, reader, writer)
        task = asyncio.current_task()
        assert task is not None
        self._connections[connection] = task
        try:
            await connection.run()
        except asyncio.CancelledError:
            pass  # close(): ending normally keeps asyncio from reporting the handler as failed
        finally:
            self._connections.pop(connection, None)
