"""The linked-device profile (what the phone lists under "Linked devices") as neonize settings.

neonize 0.5.2 lets a companion set, through whatsmeow's DeviceProps: `os` (the name the phone
shows) and `platformType` (the browser/app icon and label); for pairing-code login, PairPhone's
client type and client OS (Linux, Windows or Android only). Not settable: the app version (kept
at whatsmeow's, which WhatsApp must accept), the user agent and the TLS/noise fingerprint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# browser name (lower case) → (DeviceProps.PlatformType name, neonize ClientType name)
_BROWSERS = {
    "chrome": ("CHROME", "CHROME"),
    "google chrome": ("CHROME", "CHROME"),
    "firefox": ("FIREFOX", "FIREFOX"),
    "safari": ("SAFARI", "SAFARI"),
    "edge": ("EDGE", "EDGE"),
    "microsoft edge": ("EDGE", "EDGE"),
    "opera": ("OPERA", "OPERA"),
    "ie": ("IE", "IE"),
    "desktop": ("DESKTOP", "ELECTRON"),
    "electron": ("DESKTOP", "ELECTRON"),
}
# OS name fragments → neonize ClientName (the only OS names PairPhone accepts)
_PAIR_OS = (("windows", "WINDOWS"), ("android", "ANDROID"))
_DEFAULT_BROWSER = "chrome"
_DEFAULT_OS = "Windows"


@dataclass(frozen=True)
class DeviceProfile:
    os: str  # DeviceProps.os: the device name WhatsApp shows
    platform_type: str  # DeviceProps.PlatformType name
    pair_client_type: str  # neonize.utils.enum.ClientType name
    pair_client_name: str  # neonize.utils.enum.ClientName name
    pair_with_code: bool


def truthy(value: Any) -> bool:
    """Environment/profile flags: true, 1, yes, on."""
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


def device_profile(profile: dict[str, Any] | None, pair_with_code_env: str = "") -> DeviceProfile:
    """Read the orchestrator's profile {device_name?, os?, browser?, pair_with_code?} with defaults."""
    profile = profile or {}
    browser = str(profile.get("browser") or _DEFAULT_BROWSER).strip().lower()
    platform_type, client_type = _BROWSERS.get(browser, _BROWSERS[_DEFAULT_BROWSER])
    os_name = str(profile.get("os") or _DEFAULT_OS).strip()[:40]
    shown = str(profile.get("device_name") or os_name).strip()[:40] or _DEFAULT_OS
    client_name = next((name for fragment, name in _PAIR_OS if fragment in os_name.lower()), "LINUX")
    return DeviceProfile(
        os=shown,
        platform_type=platform_type,
        pair_client_type=client_type,
        pair_client_name=client_name,
        pair_with_code=truthy(pair_with_code_env) or truthy(profile.get("pair_with_code", False)),
    )
