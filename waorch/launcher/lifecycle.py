"""The launcher: start every process, wait until each serves, supervise, stop all on a signal."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable

from waorch.core import redis_client, settings
from waorch.launcher import demo, readiness
from waorch.launcher.children import Child, ChildSpec, stop_children
from waorch.launcher.plan import (
    Endpoints,
    RunOptions,
    child_environment,
    choose_endpoints,
    process_specs,
    redis_spec,
)
from waorch.launcher.ports import any_free, bindable
from waorch.launcher.redis_server import reachable, redis_binary
from waorch.launcher.state import DEMO_TENANT, FLOWER_AUTH_FILE, StateDir

log = logging.getLogger(__name__)

# A child that crashes this often within the window is not restarted again: the launcher stops
# everything and exits non-zero, since a crash loop means a broken set-up, not bad luck.
MAX_CRASHES = 5
CRASH_WINDOW = 300.0
REDIS_READY_TIMEOUT = 30.0
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class LaunchError(RuntimeError):
    """Start-up or supervision failed; the message says what and where to look."""


class StopRequested(Exception):
    """SIGINT/SIGTERM/SIGHUP arrived."""


class Launcher:
    def __init__(self, options: RunOptions, echo: Callable[[str], None] = print) -> None:
        self.options = options
        self.state = StateDir(options.state_dir)
        self.echo = echo
        self.children: dict[str, Child] = {}
        self.endpoints: Endpoints | None = None
        self.info: dict = {}
        self._stop = threading.Event()

    # --- entry point -------------------------------------------------------------------------
    def run(self) -> int:
        """Run until a signal arrives; 0 after a clean stop, 1 when start-up or supervision failed."""
        self.state.prepare()
        self.state.lock()
        previous = {sig: signal.signal(sig, self._on_signal) for sig in _SIGNALS}
        code = 0
        try:
            self.state.remove_run_file()  # a stale one from a launcher that was killed
            self._launch()
            self._supervise()
        except StopRequested:
            pass
        except LaunchError as exc:
            self.echo(f"waorch run: {exc}")
            code = 1
        finally:
            self.state.remove_run_file()
            if self.children:
                self.echo("waorch run: stopping ...")
            self._shutdown()
            readiness.close_celery_apps()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self.children:
                self.echo("waorch run: stopped")
        return code

    def _on_signal(self, signum: int, frame: object) -> None:
        self._stop.set()

    def _pause(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise StopRequested

    # --- start-up ----------------------------------------------------------------------------
    def _launch(self) -> None:
        opts = self.options
        if not bindable(opts.bind, opts.port):
            raise LaunchError(f"port {opts.port} on {opts.bind} is in use; choose another with --port")
        secret = self.state.secret_key()
        flower_auth, flower_new = self.state.flower_auth()
        socks_password = self.state.socks_password()
        try:
            self.endpoints = endpoints = choose_endpoints(opts)
        except ValueError as exc:
            raise LaunchError(str(exc)) from exc
        if endpoints.sim_is_external:
            self.echo(f"waorch run: using the external simulator at {endpoints.sim_url} "
                      f"(wire {endpoints.sim_wire})")
        redis_url = self._redis(dict(os.environ))
        env = child_environment(opts, self.state, endpoints, redis_url, secret)
        self._adopt_environment(env)
        api_key, _ = self.state.admin_key(redis_client.get_redis())

        specs, skipped = process_specs(opts, self.state, endpoints, env, flower_auth, socks_password,
                                       self)
        for note in skipped:
            self.echo(f"waorch run: not starting {note}")
        for spec in specs:
            self._start(spec)
        self._wait_ready([self.children[s.name] for s in specs])

        if opts.demo:
            for note in demo.bootstrap(redis_client.get_redis(), endpoints, socks_password, DEMO_TENANT):
                self.echo(f"waorch run: {note}")
        self.info = {
            "api_url": endpoints.api_root,
            "api_key": api_key,
            "dashboard_url": f"{endpoints.api_root}/dashboard",
            "docs_url": f"{endpoints.api_root}/api/docs",
            "flower_url": endpoints.flower_url,
            "sim_url": endpoints.sim_url if "sim" in self.children or endpoints.sim_is_external else "",
            "redis_url": redis_url,
            "state_dir": str(self.state.root),
            "pid": os.getpid(),
        }
        self.state.write_run_file(self.info)
        self._print_summary(flower_auth if flower_new else None)

    def _redis(self, env: dict[str, str]) -> str:
        """REDIS_URL when it is set and answers; else a redis-server of our own in DIR/redis."""
        explicit = os.environ.get("REDIS_URL")
        if explicit:
            if reachable(explicit, timeout=2):
                self.echo(f"waorch run: using Redis at {_redact(explicit)}")
                return explicit
            self.echo(f"waorch run: REDIS_URL {_redact(explicit)} does not answer; starting a local Redis")
        try:
            binary = redis_binary()
        except RuntimeError as exc:
            raise LaunchError(str(exc)) from exc
        port = any_free("127.0.0.1")
        spec = redis_spec(binary, self.state, port, env)
        spec.ready_timeout = REDIS_READY_TIMEOUT
        self._start(spec)
        self._wait_ready([self.children["redis"]])
        self.echo(f"waorch run: started Redis on 127.0.0.1:{port} (data in {self.state.redis})")
        return f"redis://127.0.0.1:{port}/0"

    def _adopt_environment(self, env: dict[str, str]) -> None:
        # The launcher bootstraps keys, proxies and sessions itself: same settings as its children.
        for name in ("REDIS_URL", "WAORCH_STATE_DIR", "WAORCH_DATA_DIR", "WAORCH_PUBLIC_URL",
                     "WAORCH_SECRET_KEY", "WAORCH_SIM_URL", "WAORCH_SIM_WIRE", "WAORCH_RUNNER",
                     "WAORCH_TRANSPORT", "WAORCH_BIND", "WAORCH_PORT", "WAORCH_POLICY_FILE"):
            if name in env:
                os.environ[name] = env[name]
        settings.get.cache_clear()
        redis_client.reset_clients()

    def _start(self, spec: ChildSpec) -> None:
        child = Child(spec, self.state.logs / f"{spec.name}.log")
        self.children[spec.name] = child
        child.start()

    def log_says(self, name: str, text: str) -> bool:
        child = self.children.get(name)
        return bool(child) and text in child.log_since_start()

    def pid_of(self, name: str) -> int | None:
        child = self.children.get(name)
        return child.pid if child else None

    def _wait_ready(self, children: list[Child]) -> None:
        started = time.monotonic()
        pending = list(children)
        while pending:
            for child in list(pending):
                if not child.running():
                    raise LaunchError(
                        f"{child.name} exited with code {child.exit_code()} while starting; "
                        f"last lines of {child.log_path}:\n{child.log_tail()}")
                if child.spec.ready is None or child.spec.ready():
                    pending.remove(child)
                    self.echo(f"waorch run: {child.name} is up")
                elif time.monotonic() - started > child.spec.ready_timeout:
                    raise LaunchError(f"{child.name} was not ready within {child.spec.ready_timeout:.0f} s; "
                                      f"see {child.log_path}:\n{child.log_tail()}")
            if pending:
                self._pause(0.25)

    def _print_summary(self, flower_auth_shown_once: str | None) -> None:
        info = self.info
        lines = [
            "",
            f"waorch is running (state in {self.state.root}, logs in {self.state.logs})",
            f"  API          {info['api_url']}/api",
            f"  API docs     {info['docs_url']}",
            f"  dashboard    {info['dashboard_url']}",
            f"  Flower       {info['flower_url']}",
        ]
        if info["sim_url"]:
            lines.append(f"  simulator    {info['sim_url']}")
        lines.append(f"  Redis        {_redact(info['redis_url'])}")
        lines.append(f"  API key      {info['api_key']}  (admin; also in {self.state.run_file})")
        if flower_auth_shown_once:
            user, _, password = flower_auth_shown_once.partition(":")
            lines.append(f"  Flower login {user} / {password}  (shown once; kept in "
                         f"{self.state.root / FLOWER_AUTH_FILE})")
        else:
            lines.append(f"  Flower login in {self.state.root / FLOWER_AUTH_FILE}")
        lines += ["Press Ctrl-C to stop.", ""]
        self.echo("\n".join(lines))

    # --- supervision -------------------------------------------------------------------------
    def _supervise(self) -> None:
        while True:
            self._pause(0.5)
            now = time.monotonic()
            for child in self.children.values():
                if child.running():
                    continue
                if child.restart_at is None:
                    self._schedule_restart(child, now)
                elif now >= child.restart_at:
                    child.signal_group(signal.SIGKILL)
                    child.start()
                    self.echo(f"waorch run: restarted {child.name} (pid {child.pid})")

    def _schedule_restart(self, child: Child, now: float) -> None:
        child.crashes = [t for t in child.crashes if now - t < CRASH_WINDOW] + [now]
        if len(child.crashes) >= MAX_CRASHES:
            raise LaunchError(f"{child.name} crashed {len(child.crashes)} times in "
                              f"{CRASH_WINDOW:.0f} s; giving up. Last lines of {child.log_path}:\n"
                              f"{child.log_tail()}")
        # Orphans of a crashed leader (gunicorn or pool workers) would hold its port and queues.
        child.signal_group(signal.SIGTERM)
        delay = min(30.0, 2.0 ** (len(child.crashes) - 1))
        child.restart_at = now + delay
        self.echo(f"waorch run: {child.name} exited with code {child.exit_code()}; restarting in "
                  f"{delay:.0f} s (see {child.log_path})")

    # --- shut-down ---------------------------------------------------------------------------
    def _shutdown(self) -> None:
        tiers = sorted({c.spec.stop_tier for c in self.children.values()})
        for tier in tiers:
            group = [c for c in self.children.values() if c.spec.stop_tier == tier]
            began = time.monotonic()
            try:
                stop_children(group, timeout=max(c.spec.stop_timeout for c in group))
            except Exception as exc:  # noqa: BLE001  (keep stopping the other tiers)
                self.echo(f"waorch run: error while stopping {[c.name for c in group]}: {exc!r}")
            log.info("stopped %s in %.1f s", ", ".join(c.name for c in group), time.monotonic() - began)


def _redact(url: str) -> str:
    """A Redis URL without its password."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"
