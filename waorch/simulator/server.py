"""The simulator process: one `Network`, its HTTP API and its wire server on one event loop."""

from __future__ import annotations

from aiohttp import web

from waorch.core.background_loop import BackgroundLoop, ServedInBackground
from waorch.simulator.http_api import create_app
from waorch.simulator.persistence import NetworkStore
from waorch.simulator.state import Network, SimConfig
from waorch.simulator.wire import WireServer


class Simulator(ServedInBackground):
    """Run inside an asyncio program (`start`/`close`) or on its own thread (`start_in_thread`)."""

    _stop_timeout = 15.0

    def __init__(self, host: str = "127.0.0.1", port: int = 0, wire_host: str | None = None,
                 wire_port: int = 0, config: SimConfig | None = None) -> None:
        self.host = host
        self.port = port
        self.network = Network(config or SimConfig())
        self.wire_server = WireServer(self.network, wire_host or host, wire_port)
        self.store: NetworkStore | None = None
        self._runner: web.AppRunner | None = None
        self._background: BackgroundLoop | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def wire(self) -> str:
        """host:port of the wire server, as session workers are given it (SIM_WIRE)."""
        host = self.wire_server.host
        return f"[{host}]:{self.wire_server.port}" if ":" in host else f"{host}:{self.wire_server.port}"

    async def start(self) -> Simulator:
        """Load the saved network (with a state dir), then listen. StateDirBusy: another simulator
        uses that directory."""
        config = self.network.config
        if config.state_dir is not None:
            self.store = NetworkStore(self.network, config.state_dir, config.save_interval)
            self.store.open()
            self.network.resume()
        try:
            await self.wire_server.start()
            runner = web.AppRunner(create_app(self.network), access_log=None, handle_signals=False)
            await runner.setup()
            try:
                await web.TCPSite(runner, self.host, self.port, reuse_address=True).start()
            except BaseException:
                await runner.cleanup()
                raise
        except BaseException:
            await self.wire_server.close()
            if self.store is not None:
                await self.store.close()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        return self

    async def close(self) -> None:
        """Stop listening, then save the network one last time (with a state dir)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        await self.wire_server.close()
        if self.store is not None:
            await self.store.close()

