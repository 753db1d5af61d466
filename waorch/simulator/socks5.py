"""A small SOCKS5 server (RFC 1928 CONNECT, RFC 1929 username/password) on asyncio.

Used for the demo proxies of `waorch run --demo`, `waorch socks` and tests. Destination names
are resolved by the proxy (remote DNS, `socks5h://` semantics); `outbound_source` binds the
outgoing socket so that a target can tell which proxy a connection came through.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import ipaddress
import socket
import struct
import threading
import time
from dataclasses import dataclass
from urllib.parse import quote

from waorch.core.background_loop import BackgroundLoop, ServedInBackground

VERSION = 5
AUTH_VERSION = 1
METHOD_NONE = 0x00
METHOD_USERPASS = 0x02
METHOD_REFUSED = 0xFF
CMD_CONNECT = 0x01
ATYP_IPV4 = 0x01
ATYP_DOMAIN = 0x03
ATYP_IPV6 = 0x04

REP_OK = 0x00
REP_GENERAL_FAILURE = 0x01
REP_NETWORK_UNREACHABLE = 0x03
REP_HOST_UNREACHABLE = 0x04
REP_CONNECTION_REFUSED = 0x05
REP_TTL_EXPIRED = 0x06
REP_COMMAND_NOT_SUPPORTED = 0x07
REP_ATYP_NOT_SUPPORTED = 0x08

# A client that stalls in the handshake must not hold a slot forever.
HANDSHAKE_TIMEOUT = 30.0
CONNECT_TIMEOUT = 10.0
RELAY_CHUNK = 64 * 1024
# Kept so that a long-running demo proxy does not grow its request log without end.
MAX_RECORDED_REQUESTS = 10_000


@dataclass
class Socks5Request:
    atyp: str  # "domain" | "ipv4" | "ipv6": how the client sent the destination
    host: str
    port: int
    username: str | None
    at: float


class HandshakeError(Exception):
    """The client broke the protocol or failed authentication; the connection is dropped."""


class Socks5Server(ServedInBackground):
    """SOCKS5 proxy; run it inside an asyncio program (`start`/`close`) or in its own thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, username: str | None = None,
                 password: str | None = None, outbound_source: str | None = None,
                 refuse_connects: bool = False) -> None:
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.outbound_source = outbound_source
        self.refuse_connects = refuse_connects
        self.fail = False
        self.requests: list[Socks5Request] = []
        self._requests_lock = threading.Lock()
        self._server: asyncio.AbstractServer | None = None
        self._handlers: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._background: BackgroundLoop | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        auth = ""
        if self.username is not None:
            auth = f"{quote(self.username, safe='')}:{quote(self.password or '', safe='')}@"
        return f"socks5h://{auth}{host}:{self.port}"

    @property
    def redacted_url(self) -> str:
        """The URL with the password replaced by `***`, safe to print."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        auth = f"{quote(self.username, safe='')}:***@" if self.username is not None else ""
        return f"socks5h://{auth}{host}:{self.port}"

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> Socks5Server:
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(self._accept, self.host, self.port,
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        await server.wait_closed()

    def _background_name(self) -> str:
        return f"socks5-{self.host}"

    def drop_connections(self) -> None:
        """Abort every open client connection (with `fail = True`: the proxy died)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        def abort_all() -> None:
            for writer in list(self._writers):
                writer.transport.abort()

        if self._background is not None:
            loop.call_soon_threadsafe(abort_all)
        else:
            abort_all()

    # -- one client ------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.fail:
            _reset(writer)
            return
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        try:
            await self._serve(reader, writer)
        except (HandshakeError, asyncio.IncompleteReadError, OSError, ValueError):
            pass  # the client is gone or broke the protocol: nothing to tell it
        except asyncio.CancelledError:
            pass  # close(): ending normally keeps asyncio from reporting the handler as failed
        finally:
            self._writers.discard(writer)
            self._handlers.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        username, atyp, host, port = await asyncio.wait_for(
            self._handshake(reader, writer), HANDSHAKE_TIMEOUT)
        self._record(Socks5Request(atyp, host, port, username, time.time()))
        if self.refuse_connects:
            await _reply(writer, REP_CONNECTION_REFUSED)
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(self._connect(host, port), CONNECT_TIMEOUT)
        except (OSError, ValueError) as exc:  # ValueError: a name the resolver cannot take
            await _reply(writer, _reply_code(exc))
            return
        self._writers.add(up_writer)
        try:
            bound = up_writer.get_extra_info("sockname")
            await _reply(writer, REP_OK, bound[0], bound[1])
            await _relay(reader, writer, up_reader, up_writer)
        finally:
            self._writers.discard(up_writer)
            up_writer.transport.abort()

    async def _handshake(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> tuple[str | None, str, str, int]:
        version, count = await reader.readexactly(2)
        if version != VERSION:
            raise HandshakeError("not SOCKS5")
        methods = await reader.readexactly(count)
        username: str | None = None
        if self.username is not None:
            if METHOD_USERPASS not in methods:
                writer.write(bytes([VERSION, METHOD_REFUSED]))
                await writer.drain()
                raise HandshakeError("client offers no username/password method")
            writer.write(bytes([VERSION, METHOD_USERPASS]))
            username = await self._authenticate(reader, writer)
        elif METHOD_NONE in methods:
            writer.write(bytes([VERSION, METHOD_NONE]))
        elif METHOD_USERPASS in methods:
            # No credentials configured: any are accepted, the name is still recorded.
            writer.write(bytes([VERSION, METHOD_USERPASS]))
            username = await self._authenticate(reader, writer)
        else:
            writer.write(bytes([VERSION, METHOD_REFUSED]))
            await writer.drain()
            raise HandshakeError("no acceptable method")
        await writer.drain()

        version, command, _reserved, atyp_code = await reader.readexactly(4)
        if version != VERSION:
            raise HandshakeError("bad request version")
        if atyp_code == ATYP_IPV4:
            atyp, host = "ipv4", socket.inet_ntop(socket.AF_INET, await reader.readexactly(4))
        elif atyp_code == ATYP_IPV6:
            atyp, host = "ipv6", socket.inet_ntop(socket.AF_INET6, await reader.readexactly(16))
        elif atyp_code == ATYP_DOMAIN:
            length = (await reader.readexactly(1))[0]
            raw = await reader.readexactly(length)
            atyp, host = "domain", raw.decode("utf-8", errors="replace")
        else:
            await _reply(writer, REP_ATYP_NOT_SUPPORTED)
            raise HandshakeError("address type not supported")
        (port,) = struct.unpack("!H", await reader.readexactly(2))
        if command != CMD_CONNECT:
            await _reply(writer, REP_COMMAND_NOT_SUPPORTED)
            raise HandshakeError("only CONNECT is supported")
        return username, atyp, host, port

    async def _authenticate(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str:
        await writer.drain()
        version, ulen = await reader.readexactly(2)
        if version != AUTH_VERSION:
            raise HandshakeError("bad auth version")
        user = await reader.readexactly(ulen)
        (plen,) = await reader.readexactly(1)
        password = await reader.readexactly(plen)
        if self.username is not None:
            ok = hmac.compare_digest(user, self.username.encode()) & hmac.compare_digest(
                password, (self.password or "").encode())
            if not ok:
                writer.write(bytes([AUTH_VERSION, 0x01]))
                await writer.drain()
                raise HandshakeError("authentication failed")
        writer.write(bytes([AUTH_VERSION, 0x00]))
        return user.decode("utf-8", errors="replace")

    async def _connect(self, host: str, port: int):
        family = 0
        local_addr = None
        if self.outbound_source:
            local_addr = (self.outbound_source, 0)
            family = socket.AF_INET6 if ":" in self.outbound_source else socket.AF_INET
        reader, writer = await asyncio.open_connection(host, port, family=family,
                                                       local_addr=local_addr)
        writer.transport.set_write_buffer_limits(high=4 * RELAY_CHUNK)
        return reader, writer

    def _record(self, request: Socks5Request) -> None:
        with self._requests_lock:
            self.requests.append(request)
            if len(self.requests) > MAX_RECORDED_REQUESTS:
                del self.requests[: len(self.requests) - MAX_RECORDED_REQUESTS]


async def _reply(writer: asyncio.StreamWriter, code: int, host: str = "0.0.0.0", port: int = 0) -> None:
    address = ipaddress.ip_address(host.split("%")[0])
    atyp = ATYP_IPV4 if address.version == 4 else ATYP_IPV6
    writer.write(bytes([VERSION, code, 0, atyp]) + address.packed + struct.pack("!H", port))
    await writer.drain()


def _reply_code(exc: BaseException) -> int:
    if isinstance(exc, ConnectionRefusedError):
        return REP_CONNECTION_REFUSED
    if isinstance(exc, socket.gaierror):
        return REP_HOST_UNREACHABLE
    if isinstance(exc, TimeoutError):
        return REP_TTL_EXPIRED
    if isinstance(exc, OSError) and exc.errno == errno.ENETUNREACH:
        return REP_NETWORK_UNREACHABLE
    if isinstance(exc, OSError) and exc.errno == errno.EHOSTUNREACH:
        return REP_HOST_UNREACHABLE
    return REP_GENERAL_FAILURE


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # drain() after every chunk keeps at most a few chunks in flight per direction.
    while True:
        data = await reader.read(RELAY_CHUNK)
        if not data:
            if writer.can_write_eof() and not writer.transport.is_closing():
                writer.write_eof()
            return
        writer.write(data)
        await writer.drain()


async def _relay(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter,
                 up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter) -> None:
    client_writer.transport.set_write_buffer_limits(high=4 * RELAY_CHUNK)
    tasks = [asyncio.ensure_future(_pipe(client_reader, up_writer)),
             asyncio.ensure_future(_pipe(up_reader, client_writer))]
    try:
        # Half-close is passed on; an error on either side ends both directions.
        pending = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if any(t.exception() is not None for t in done if not t.cancelled()):
                break
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST, as a port whose process died would look to the client."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
