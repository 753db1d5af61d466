"""The production transport: WhatsApp through neonize (whatsmeow in a Go library), one session.

neonize is imported lazily in `load_neonize` (the Go library costs ~50 MB and up to 1.4 s), so
the sim transport and other code never load it. `connect()` blocks until `stop()`, so it runs on
its own thread; whatsmeow calls the event handlers on Go-owned threads and they only map the
event and call `emit` (thread-safe, non-blocking by contract). See docs/neonize.md.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import platform
import random
import threading
import time
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote, urlsplit

from waorch.core import session_store
from worker_container.store import DEVICE_MISSING
from worker_container.transports import neonize_store
from worker_container.transports.base import (
    BANNED,
    CONFIG_INVALID,
    CONNECTION_LOST,
    LOGGED_OUT,
    PROXY_FAILED,
    STORE_UNAVAILABLE,
    TRANSPORT_UNAVAILABLE,
    Emit,
    SendError,
    SendResult,
    Transport,
    TransportConfig,
)
from worker_container.transports.neonize_events import (
    CLIENT_OUTDATED,
    PAIRING_FAILED,
    STREAM_REPLACED,
    SUBSCRIBED_EVENTS,
    map_event,
    unix_seconds,
)
from worker_container.transports.neonize_profile import DeviceProfile, device_profile
from worker_container.transports.neonize_proxy import (
    ProxyChoice,
    ProxyRefused,
    allow_no_proxy,
    choose_proxy,
    environment_proxies,
    initial_environment,
    redact_proxy_url,
)
from worker_container.transports.neonize_send import (
    NOT_CONNECTED,
    RESTRICTED,
    classify_send_error,
    fetch_media,
    media_spec,
    recipient_digits,
    require_media_tools,
    restriction_of,
)

log = logging.getLogger(__name__)

DATABASE_NAME = "whatsmeow.sqlite3"
# Errors after which reconnecting would hurt (ban signals) or fight another client.
FATAL_CODES = {LOGGED_OUT, BANNED, STREAM_REPLACED, CLIENT_OUTDATED}
BACKOFF_FIRST = 2.0
BACKOFF_MAX = 120.0
STABLE_AFTER = 300.0  # a connection that lived this long resets the backoff
PRESENCE_INTERVAL = 240.0
RECONNECT_STALL = 600.0  # whatsmeow's own reconnects given up on after this long
WATCH_TICK = 15.0


class NeonizeStartError(RuntimeError):
    """The transport cannot start; the worker reports it and exits non-zero."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def native_library_name() -> str:
    """The file name neonize loads on this platform (neonize.utils.platform.generated_name)."""
    system = platform.system().lower()
    machine = platform.machine().lower()
    machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)
    ext = {"windows": "dll", "darwin": "dylib"}.get(system, "so")
    return f"neonize-{system}-{machine}.{ext}"


def load_neonize() -> SimpleNamespace:
    """Import neonize (loads its Go library); NeonizeStartError TRANSPORT_UNAVAILABLE if it cannot."""
    spec = importlib.util.find_spec("neonize")
    if spec is None or not spec.submodule_search_locations:
        raise NeonizeStartError(TRANSPORT_UNAVAILABLE,
                                "neonize is not installed (pip install 'waorch[neonize]')")
    library = os.path.join(list(spec.submodule_search_locations)[0], native_library_name())
    if not os.path.isfile(library):
        # Without its library neonize tries to download one from GitHub: never from a worker.
        raise NeonizeStartError(TRANSPORT_UNAVAILABLE, f"neonize's native library is missing: {library}")
    try:
        from neonize import events  # noqa: PLC0415 - loads the Go library
        from neonize._binder import ProxySettings  # noqa: PLC0415 - loads the Go library
        from neonize.client import ClientFactory, NewClient  # noqa: PLC0415 - loads the Go library
        from neonize.exc import NeonizeError  # noqa: PLC0415 - loads the Go library
        from neonize.proto import Neonize_pb2 as proto  # noqa: PLC0415 - loads the Go library
        from neonize.proto.waCompanionReg.WAWebProtobufsCompanionReg_pb2 import DeviceProps  # noqa: PLC0415 - loads the Go library
        from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message  # noqa: PLC0415 - loads the Go library
        from neonize.utils.enum import ClientType, Presence  # noqa: PLC0415 - loads the Go library
        from neonize.utils.jid import build_jid  # noqa: PLC0415 - loads the Go library
    except Exception as exc:  # noqa: BLE001 - OSError from ctypes, RuntimeError on a version mismatch, ImportError
        detail = f"cannot load neonize's native library: {type(exc).__name__}: {exc}"
        raise NeonizeStartError(TRANSPORT_UNAVAILABLE, detail) from None
    return SimpleNamespace(events=events, ProxySettings=ProxySettings, NewClient=NewClient,
                           ClientFactory=ClientFactory,
                           NeonizeError=NeonizeError, DeviceProps=DeviceProps, Message=Message,
                           ClientType=ClientType, Presence=Presence, build_jid=build_jid, proto=proto)


def device_props(nz: SimpleNamespace, profile: DeviceProfile) -> Any:
    """whatsmeow's DeviceProps for the profile (neonize's default would announce "Neonize")."""
    platform_type = nz.DeviceProps.PlatformType.Value(profile.platform_type)
    return nz.DeviceProps(os=profile.os, platformType=platform_type)


def pair_phone(nz: SimpleNamespace, client: Any, phone: str, profile: DeviceProfile) -> str:
    """Request a pairing code showing the profile's "Browser (OS)" name on the phone."""
    # neonize's PairPhone builds the display name from two small enums ("Chrome (Linux)" for a
    # Mac profile, and a wrong client type); the Go call itself takes any name, so build the
    # same request with the profile's name. Fall back to the public method if internals moved.
    go = getattr(client, "_NewClient__client", None)
    params_type = getattr(nz.proto, "PairPhoneParams", None)
    client_type = nz.ClientType[profile.pair_client_type]
    if go is None or params_type is None:
        return client.PairPhone(phone, True, client_type=client_type)
    payload = params_type(phone=phone, clientDisplayName=profile.pair_display_name,
                          clientType=client_type.value, showPushNotification=True).SerializeToString()
    result = nz.proto.PairPhoneReturnFunction.FromString(go.PairPhone(client.uuid, payload, len(payload)))
    if result.Error:
        raise nz.NeonizeError(result.Error)
    return result.Code


def whatsmeow_proxy_settings(nz: SimpleNamespace, choice: ProxyChoice) -> Any:
    """ProxySettings always given explicitly (else whatsmeow reads HTTPS_PROXY); nothing bypasses it."""
    return nz.ProxySettings(proxy_address=choice.whatsmeow_url, no_websocket=False, only_login=False,
                            no_media=False)


def is_proxy_error(error_text: str) -> bool:
    """True when a connect error comes from the proxy hop (SOCKS or HTTP CONNECT)."""
    text = (error_text or "").lower()
    return "socks connect" in text or "proxyconnect" in text


def backoff_delay(attempt: int, rng: random.Random | None = None) -> float:
    """Seconds before reconnect attempt `attempt` (0-based): doubling, capped, ±20 % jitter."""
    base = min(BACKOFF_MAX, BACKOFF_FIRST * (2 ** min(attempt, 16)))
    return base * (rng or random).uniform(0.8, 1.2)


class NeonizeTransport(Transport):
    name = "neonize"

    def __init__(self, config: TransportConfig, emit: Emit) -> None:
        super().__init__(config, emit)
        self._nz: SimpleNamespace | None = None
        self._client: Any = None
        self._proxy: ProxyChoice | None = None
        self._profile: DeviceProfile | None = None
        self._thread: threading.Thread | None = None
        self._watcher: threading.Thread | None = None
        self._stopping = threading.Event()
        self._linked = threading.Event()  # logged in and connected
        self._kick = threading.Event()  # wakes the watcher (presence right after CONNECTED)
        self._state_lock = threading.Lock()
        self._fatal: str | None = None
        self._lost_since: float | None = None
        self._pair_requested = False
        self._stopped = False
        self._postgres = session_store.parse(config.store) != session_store.FILE
        self._device_jid: str | None = None  # PostgreSQL store: the device the client resumes
        self._client_jid: str | None = None  # the device the current client was built for
        self._numbers = {"connects": 0, "connect_failures": 0, "restricted": 0, "presence_sent": 0}

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        try:
            self._proxy = choose_proxy(self.config.proxy_url, allow_no_proxy())
        except ProxyRefused as exc:
            self._refuse(exc.code, exc.detail)
        leaky = environment_proxies(initial_environment())
        if leaky:
            self._refuse(CONFIG_INVALID, f"{', '.join(leaky)} set in the worker's environment: whatsmeow "
                                         "would send WhatsApp traffic to that proxy on top of PROXY_URL; "
                                         "start the worker without these variables")
        self._profile = device_profile(self.config.profile, os.environ.get("PAIR_WITH_CODE", ""))
        try:
            self._nz = load_neonize()
        except NeonizeStartError as exc:
            self._refuse(exc.code, exc.detail)
        logging.getLogger("neonize.utils.log").setLevel(max(logging.INFO, logging.getLogger().level))
        os.makedirs(self.config.session_dir, mode=0o700, exist_ok=True)
        if self._postgres:
            self._prepare_store()
        self._client = self._new_client()
        log.info("neonize session %s via proxy %s", self.config.session_id, self._proxy.redacted)
        self._thread = threading.Thread(target=self._run, name="neonize-connect", daemon=True)
        self._thread.start()
        self._watcher = threading.Thread(target=self._watch, name="neonize-watch", daemon=True)
        self._watcher.start()
        # neonize's connect() runs whatsmeow on a non-daemon thread: stop it before the
        # interpreter waits for non-daemon threads at exit (plain atexit runs too late).
        register = getattr(threading, "_register_atexit", None)
        if register is not None:
            register(self.stop)

    def _refuse(self, code: str, detail: str) -> None:
        self.emit("ERROR", {"code": code, "detail": detail})
        raise NeonizeStartError(code, detail)

    def _prepare_store(self) -> None:
        """PostgreSQL store: whatsmeow's tables exist, and the device to resume is in them."""
        try:
            choice = neonize_store.prepare(self._nz, self.config.store, self.config.session_id,
                                           self.config.device_jid, self.config.phone)
        except session_store.StoreUnavailable as exc:
            self._refuse(STORE_UNAVAILABLE, str(exc))
        if choice.note:
            log.warning("session store: %s", choice.note)
        if choice.missing:
            # the registry's device is gone (logged out, deleted, another database): say so
            # before the QR of the new pairing appears
            self.emit("ERROR", {"code": DEVICE_MISSING, "detail": choice.note})
        self._device_jid = choice.jid

    def _new_client(self) -> Any:
        nz = self._nz
        props = device_props(nz, self._profile)
        if not self._postgres:
            client = nz.NewClient(name=os.path.join(self.config.session_dir, DATABASE_NAME), props=props,
                                  uuid=self.config.session_id)
        else:
            url = session_store.whatsmeow_url(self.config.store, self.config.session_id)
            # Exactly one of jid= (checked to be in the store: a missing one panics the Go side)
            # or new_device=True: without either whatsmeow resumes the database's first device.
            if self._device_jid:
                jid = neonize_store.jid_proto(nz, self._device_jid)
                client = nz.NewClient(name=url, props=props, jid=jid)
            else:
                client = nz.NewClient(name=url, props=props, uuid=self.config.session_id, new_device=True)
            self._client_jid = self._device_jid
        for event_name in SUBSCRIBED_EVENTS:
            client.event(getattr(nz.events, event_name))(self._on_event)
        client.event.qr(self._on_qr)
        return client

    def connected(self) -> bool:
        return self._linked.is_set() and self._fatal is None

    def stop(self) -> None:
        with self._state_lock:
            if self._stopped:
                return
            self._stopped = True
        self._stopping.set()
        self._kick.set()
        self._linked.clear()
        if self._client is not None:
            try:
                self._client.stop()
            except Exception:  # noqa: BLE001 - best effort while shutting down
                log.debug("neonize stop failed", exc_info=True)
        for thread in (self._thread, self._watcher):
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=15)

    def counters(self) -> dict[str, Any]:
        return {**self._numbers, "fatal": self._fatal, "pair_with_code": bool(self._profile and
                                                                               self._profile.pair_with_code)}

    # -- connection loop --------------------------------------------------------------------

    def _run(self) -> None:
        attempt = 0
        settings = whatsmeow_proxy_settings(self._nz, self._proxy)
        while not self._stopping.is_set() and self._fatal is None:
            if self._postgres and self._device_jid != self._client_jid:
                # paired since this client was built: a new_device client would pair once more
                self._client = self._new_client()
            began = time.monotonic()
            self._pair_requested = False
            error = ""
            try:
                self._client.connect(settings)  # blocks; whatsmeow reconnects by itself inside
            except Exception as exc:  # noqa: BLE001 - NeonizeError for dial failures, anything else too
                error = str(exc) or type(exc).__name__
            if self._stopping.is_set() or self._fatal is not None:
                break
            self._linked.clear()
            self._numbers["connect_failures"] += 1
            if time.monotonic() - began > STABLE_AFTER:
                attempt = 0
            delay = backoff_delay(attempt)
            attempt += 1
            code = PROXY_FAILED if is_proxy_error(error) else CONNECTION_LOST
            self.emit("ERROR", {"code": code, "detail": self._redact(error or "connection ended"),
                                "retry_in": round(delay, 1)})
            self._stopping.wait(delay)

    def _watch(self) -> None:
        """Presence for keep-alive, and a fresh start when whatsmeow stopped reconnecting."""
        next_presence = 0.0
        while not self._stopping.is_set():
            self._kick.wait(WATCH_TICK)
            self._kick.clear()
            if self._stopping.is_set():
                return
            now = time.monotonic()
            if self.config.keep_alive and self.connected() and now >= next_presence:
                self._send_presence()
                next_presence = now + PRESENCE_INTERVAL * random.uniform(0.8, 1.2)
            lost = self._lost_since
            if lost is not None and now - lost > RECONNECT_STALL and self._fatal is None:
                log.warning("no reconnect for %.0f s; restarting the connection", now - lost)
                self._lost_since = None
                try:
                    self._client.stop()  # connect() returns; _run connects again with backoff
                except Exception:  # noqa: BLE001
                    log.warning("restarting the connection failed", exc_info=True)

    def _send_presence(self) -> None:
        try:
            self._client.send_presence(self._nz.Presence.AVAILABLE)
            self._numbers["presence_sent"] += 1
        except Exception as exc:  # noqa: BLE001 - e.g. "can't send presence without PushName set"
            log.info("presence not sent: %s", exc)

    # -- events from Go threads -------------------------------------------------------------

    def _on_event(self, client: Any, ev: Any) -> None:
        try:
            own = self._own_jid(client) or self.config.phone
            for event, data in map_event(ev, own):
                self._deliver(event, data)
        except Exception:  # noqa: BLE001 - never raise into Go
            log.exception("could not handle neonize event %s", type(ev).__name__)

    def _own_jid(self, client: Any) -> str:
        """The full device JID (`491700000001:7@s.whatsapp.net`): the registry keeps it, and a
        PostgreSQL store finds the session's device by it."""
        me = getattr(client, "me", None)
        if me is not None and me.JID.User:
            return neonize_store.jid_text(me.JID)
        return ""

    def _deliver(self, event: str, data: dict[str, Any]) -> None:
        if event == "CONNECTED":
            if self._postgres:
                self._note_device(str(data.get("jid") or ""))
            self._numbers["connects"] += 1
            self._lost_since = None
            self._linked.set()
            self._kick.set()
        elif event == "ERROR":
            self._linked.clear()
            code = data.get("code")
            if code == CONNECTION_LOST:
                if self._lost_since is not None:
                    return  # already reported this outage; whatsmeow is reconnecting
                self._lost_since = time.monotonic()
            elif code in FATAL_CODES:
                if code == LOGGED_OUT and self._postgres and self._device_jid:
                    self._store_job(neonize_store.after_logout, self._device_jid)
                    self._device_jid = None
                self._fatal = code
                # Stopping from inside a Go callback could deadlock: do it from our thread.
                threading.Thread(target=self._client.stop, name="neonize-fatal-stop", daemon=True).start()
        self.emit(event, data)

    def _note_device(self, jid: str) -> None:
        if session_store.parse_jid(jid) is None or jid == self._device_jid:
            return
        log.info("paired as device %s", jid)
        self._device_jid = jid
        self._store_job(neonize_store.after_pairing, self.config.phone, jid)

    def _store_job(self, job: Any, *args: str) -> None:
        """Store work off the Go callback thread (a blocking handler stops all events)."""
        def run() -> None:
            try:
                job(self.config.store, self.config.session_id, *args)
            except Exception:  # noqa: BLE001 - bookkeeping: the session works without it
                log.warning("session store: %s failed", job.__name__, exc_info=True)

        threading.Thread(target=run, name="neonize-store", daemon=True).start()

    def _on_qr(self, client: Any, data: bytes) -> None:
        try:
            if self._profile.pair_with_code:
                if not self._pair_requested:
                    self._pair_requested = True
                    threading.Thread(target=self._request_pair_code, name="neonize-pair", daemon=True).start()
                return
            self.emit("QR", {"qr": data.decode("utf-8", "replace")})
        except Exception:  # noqa: BLE001 - never raise into Go
            log.exception("could not handle the QR code")

    def _request_pair_code(self) -> None:
        try:
            code = pair_phone(self._nz, self._client, self.config.phone, self._profile)
        except Exception as exc:  # noqa: BLE001
            self.emit("ERROR", {"code": PAIRING_FAILED, "detail": self._redact(str(exc))})
            return
        self.emit("PAIR_CODE", {"code": code})

    # -- sending ----------------------------------------------------------------------------

    def send(self, to: str, text: str, media: dict[str, Any] | None = None,
             message_id: str | None = None) -> SendResult:
        # message_id is not used: neonize 0.5.2's send_message takes no message id, so the
        # journal keys on waorch's id and records WhatsApp's id (SendResult.wa_id) after.
        if self._client is None or not self.connected():
            raise SendError(NOT_CONNECTED, "not logged in to WhatsApp", retryable=True)
        jid = self._nz.build_jid(recipient_digits(to))
        message = self._build_media(media, text) if media else self._nz.Message(conversation=text)
        try:
            response = self._client.send_message(jid, message)
        except Exception as exc:  # noqa: BLE001 - SendMessageError and anything from the Go side
            raise self._send_failed(str(exc)) from None
        return SendResult(wa_id=response.ID, timestamp=unix_seconds(response.Timestamp))

    def _build_media(self, media: dict[str, Any], text: str) -> Any:
        spec = media_spec(media, text)
        require_media_tools(spec.kind)
        data = fetch_media(spec, self.config.session_dir, self._proxy.requests_url)
        client = self._client
        try:  # each builder uploads to WhatsApp's media servers through the proxy
            if spec.kind == "image":
                return client.build_image_message(data, caption=spec.caption or None)
            if spec.kind == "video":
                return client.build_video_message(data, caption=spec.caption or None)
            if spec.kind == "audio":
                return client.build_audio_message(data)
            return client.build_document_message(data, caption=spec.caption or None, title=spec.filename,
                                                 filename=spec.filename, mimetype=spec.mimetype or None)
        except SendError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._send_failed(f"media upload failed: {exc}") from None

    def _send_failed(self, error_text: str) -> SendError:
        error = classify_send_error(self._redact(error_text))
        if error.code == RESTRICTED:
            self._numbers["restricted"] += 1
            self.emit("RESTRICTED", {"reason": restriction_of(error_text), "until": error.restricted_until,
                                     "detail": error.detail})
        return error

    def _redact(self, text: str) -> str:
        text = redact_proxy_url(text)
        try:
            password = urlsplit(self.config.proxy_url or "").password
        except ValueError:
            password = None
        for secret in {password, unquote(password or "")} - {None, ""}:
            text = text.replace(secret, "***")
        return text
