"""The linked-device profile (what the phone lists under "Linked devices") as neonize settings.

neonize 0.5.2 lets a companion set, through whatsmeow's DeviceProps: `os` and `platformType`;
WhatsApp shows the device as "<browser of platformType> (<os>)", e.g. "Chrome (Mac OS)". For
pairing-code login, whatsmeow's PairPhone takes a display name "Browser (OS)" and a client type.
Not settable through neonize: the OS version, the app version (whatsmeow's own, which WhatsApp
must accept), the user agent and the TLS/noise fingerprint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# DeviceProps.PlatformType names the inventory may use → neonize ClientType name for PairPhone
_PLATFORMS = {
    "CHROME": "CHROME",
    "FIREFOX": "FIREFOX",
    "SAFARI": "SAFARI",
    "EDGE": "EDGE",
    "OPERA": "OPERA",
    "IE": "IE",
    "DESKTOP": "ELECTRON",
    "UWP": "UWP",
}
# browser names → PlatformType name, when a profile has no `platform`
_BROWSERS = {
    "chrome": "CHROME", "google chrome": "CHROME", "firefox": "FIREFOX", "safari": "SAFARI",
    "edge": "EDGE", "microsoft edge": "EDGE", "opera": "OPERA", "ie": "IE",
    "whatsapp desktop": "DESKTOP", "desktop": "DESKTOP", "electron": "DESKTOP",
}
_DEFAULT_PLATFORM = "CHROME"
_DEFAULT_OS = "Windows"
MAX_NAME = 40


@dataclass(frozen=True)
class DeviceProfile:
    os: str  # DeviceProps.os
    platform_type: str  # DeviceProps.PlatformType name
    pair_display_name: str  # "Browser (OS)" shown in the pairing-code notification
    pair_client_type: str  # neonize.utils.enum.ClientType name
    pair_with_code: bool


def truthy(value: Any) -> bool:
    """Environment/profile flags: true, 1, yes, on."""
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


def device_profile(profile: dict[str, Any] | None, pair_with_code_env: str = "") -> DeviceProfile:
    """Read an inventory profile {device_name, browser, os, platform, pair_with_code?} with defaults."""
    profile = profile or {}
    platform = str(profile.get("platform") or "").strip().upper()
    if platform not in _PLATFORMS:
        platform = _BROWSERS.get(str(profile.get("browser") or "").strip().lower(), _DEFAULT_PLATFORM)
    os_name = str(profile.get("os") or _DEFAULT_OS).strip()[:MAX_NAME] or _DEFAULT_OS
    browser = str(profile.get("browser") or platform.title()).strip()[:MAX_NAME]
    display = str(profile.get("device_name") or f"{browser} ({os_name})").strip()[:MAX_NAME]
    return DeviceProfile(
        os=os_name,
        platform_type=platform,
        pair_display_name=display,
        pair_client_type=_PLATFORMS[platform],
        pair_with_code=truthy(pair_with_code_env) or truthy(profile.get("pair_with_code", False)),
    )
