"""How a simulated network behaves: delays, pairing, bans, where it keeps its memory."""

from __future__ import annotations

from dataclasses import dataclass, field

from waorch.simulator.ban_model import BanThresholds


@dataclass
class SimConfig:
    receipt_delay: float = 0.2  # send → delivered
    read_delay: float = 1.0  # delivered → read
    qr_interval: float = 20.0  # a fresh QR code this often while unpaired
    demo_scan_after: float | None = None  # scan waiting sessions by itself after this long
    autopair: bool = False  # scan every QR as soon as it is shown (sandbox fleets)
    ban_thresholds: BanThresholds = field(default_factory=BanThresholds)
    state_dir: str | None = None  # where the network is saved across restarts; None: memory only
    save_interval: float = 2.0  # at most one save this often while the network changes
