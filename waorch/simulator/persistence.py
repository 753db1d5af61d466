"""The simulated network saved in its state directory, so that it outlives a restart as WhatsApp does.

One JSON file, `network.json`, replaced atomically (temp file, fsync, rename). Saves are debounced:
a change arms one timer, and a busy network is written at most every `save_interval` seconds (or
more rarely when encoding takes long, so saving never takes more than a tenth of the loop). Each
account and message keeps its encoded JSON until it changes, so a save costs in proportion to what
changed plus one join of the rest. A corrupt file is moved aside and the network starts empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import time
from functools import partial
from pathlib import Path
from typing import Any

from waorch.core.files import write_private
from waorch.simulator.accounts import Account
from waorch.simulator.logs import Message
from waorch.simulator.state import Network

log = logging.getLogger(__name__)

FILE = "network.json"
LOCK = "sim.lock"
VERSION = 1
MAX_BUSY_SHARE = 0.1  # encoding may take at most this share of the event loop


class StateDirError(RuntimeError):
    """The state directory cannot be used."""


class StateDirBusy(StateDirError):
    """Another simulator is using this state directory."""


class NetworkStore:
    """Loads a `Network` from its state directory and saves it there as it changes."""

    def __init__(self, network: Network, directory: str | os.PathLike, save_interval: float = 2.0) -> None:
        self.network = network
        self.directory = Path(directory)
        self.path = self.directory / FILE
        self.save_interval = save_interval
        self._lock_handle: Any = None
        self._timer: asyncio.TimerHandle | None = None
        self._saving: asyncio.Task | None = None
        self._last_encode = 0.0
        self._saves = 0
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self) -> None:
        """Lock the directory and load what it holds; call before the network serves anyone."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            handle = open(self.directory / LOCK, "a")  # noqa: SIM115  (held until close)
        except OSError as exc:
            raise StateDirError(f"cannot use {self.directory}: {exc}") from exc
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.close()
            raise StateDirBusy(f"another simulator uses {self.directory}") from exc
        self._lock_handle = handle
        self.load()
        self.network.on_change = self.changed

    async def close(self) -> None:
        """Write what changed since the last save, then release the directory."""
        if self._closed:
            return
        self._closed = True
        self.network.on_change = lambda: None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._saving is not None:
            await asyncio.shield(self._saving)
        try:
            await self.save()
        except Exception:  # stop anyway; the file holds the last good save
            log.exception("the last save of the simulated network to %s failed", self.path)
        finally:
            if self._lock_handle is not None:
                self._lock_handle.close()
                self._lock_handle = None

    # -- saving ------------------------------------------------------------------------------

    def changed(self) -> None:
        """The network changed: arm the save timer unless it is armed or a save is under way."""
        if self._timer is not None or self._closed:
            return
        delay = max(self.save_interval, self._last_encode / MAX_BUSY_SHARE)
        self._timer = asyncio.get_running_loop().call_later(delay, self._start_save)

    def _start_save(self) -> None:
        self._timer = None
        if self._saving is None or self._saving.done():
            self._saving = asyncio.ensure_future(self._save_then_rearm())
        else:  # still writing the previous one: try again a little later
            self.changed()

    async def _save_then_rearm(self) -> None:
        try:
            await self.save()
        except Exception:  # keep serving; the next change tries again
            log.exception("saving the simulated network to %s failed", self.path)
            self.changed()

    async def save(self) -> None:
        """Encode on the loop (consistent), write in a thread (slow disks do not stall the loop)."""
        started = time.perf_counter()
        data = self._encode()
        self._last_encode = time.perf_counter() - started
        write = partial(write_private, self.path, data, sync_directory=True)  # it holds creds: mode 600
        await asyncio.get_running_loop().run_in_executor(None, write)
        self._saves += 1
        self.network.store_info.update(path=str(self.path), saves=self._saves, saved_at=time.time(),
                                       bytes=len(data),
                                       encode_seconds=round(self._last_encode, 4),
                                       save_seconds=round(time.perf_counter() - started, 4))

    def _encode(self) -> bytes:
        network = self.network
        header = {"version": VERSION, "saved_at": network.clock(), "seq": network.seq,
                  "second_connections": network.second_connections,
                  "duplicate_sends": network.duplicate_sends,
                  "duplicates_delivered": network.duplicates_delivered,
                  "incidents": list(network.incidents)}
        accounts = []
        for account in network.accounts.values():
            if account.encoded is None:
                account.encoded = json.dumps(account.to_dict(), separators=(",", ":")).encode()
            accounts.append(account.encoded)
        return b"".join((
            b'{"header":', json.dumps(header, separators=(",", ":")).encode(),
            b',"accounts":[', b",".join(accounts),
            b'],"messages":[', b",".join(m.encoded() for m in network.messages),
            b'],"inbound":[', b",".join(m.encoded() for m in network.inbound_log), b"]}\n"))

    # -- loading -----------------------------------------------------------------------------

    def load(self) -> None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            log.info("no saved network in %s: the simulated network starts empty", self.directory)
            return
        try:
            self._restore(json.loads(raw))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            aside = self.path.with_name(f"{FILE}.corrupt-{int(time.time())}")
            with contextlib.suppress(OSError):
                os.replace(self.path, aside)
            log.warning("the saved network %s is unreadable (%s: %s); moved to %s, starting empty",
                        self.path, type(exc).__name__, exc, aside.name)
            return
        network = self.network
        log.info("simulated network loaded from %s: %d accounts, %d messages", self.path,
                 len(network.accounts), len(network.messages))

    def _restore(self, data: dict[str, Any]) -> None:
        """Fill the network from a saved document, all or nothing."""
        header = data["header"]
        if header.get("version") != VERSION:
            raise ValueError(f"unknown version {header.get('version')!r}")
        loaded = Network(self.network.config, self.network.clock)
        # Encoded again now, before anyone waits on the loop, so that the first save is cheap.
        for item in data["accounts"]:
            account = Account.from_dict(item)
            account.encoded = json.dumps(account.to_dict(), separators=(",", ":")).encode()
            loaded.accounts[account.phone] = account
        for item in data["messages"]:
            message = Message.from_dict(item)
            message.encoded()
            loaded.restore_sent(message)
        for item in data["inbound"]:
            message = Message.from_dict(item)
            message.encoded()
            loaded.inbound_log.append(message)
        loaded.seq = int(header.get("seq", 0))
        loaded.second_connections = int(header.get("second_connections", 0))
        loaded.duplicate_sends = int(header.get("duplicate_sends", 0))
        loaded.duplicates_delivered = int(header.get("duplicates_delivered", 0))
        loaded.incidents.extend(header.get("incidents") or [])
        kept = ("config", "clock", "on_change", "store_info")
        vars(self.network).update({k: v for k, v in vars(loaded).items() if k not in kept})
