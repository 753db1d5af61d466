"""An asyncio event loop on its own daemon thread, for servers used from synchronous code."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class BackgroundLoop:
    """Start once, run coroutines on it from any thread, stop once (stopping twice is harmless)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> BackgroundLoop:
        loop = asyncio.new_event_loop()
        running = threading.Event()
        loop.call_soon(running.set)
        self._thread = threading.Thread(target=loop.run_forever, name=self.name, daemon=True)
        self.loop = loop
        self._thread.start()
        running.wait()
        return self

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coro` on the loop and wait for its result."""
        assert self.loop is not None, "start() first"
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None or self.loop is None:
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        thread.join(timeout=10)
        if not thread.is_alive():
            self.loop.close()


class ServedInBackground:
    """Mixin for an asyncio server with `start()`/`close()` coroutines, usable from sync code."""

    _background: BackgroundLoop | None = None
    _stop_timeout: float = 10.0

    def _background_name(self) -> str:
        return type(self).__name__.lower()

    def start_in_thread(self):
        """Serve from a private event loop thread; returns once listening."""
        background = BackgroundLoop(self._background_name()).start()
        try:
            background.run(self.start())
        except BaseException:
            background.stop()
            raise
        self._background = background
        return self

    def stop(self) -> None:
        """Stop what `start_in_thread` started; safe to call twice."""
        background, self._background = self._background, None
        if background is None:
            return
        try:
            background.run(self.close(), timeout=self._stop_timeout)
        finally:
            background.stop()
