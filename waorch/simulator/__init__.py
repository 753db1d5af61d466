"""The fake WhatsApp network of sandbox mode and tests (`waorch sim`); protocol in README.md."""

from waorch.simulator.ban_model import BanThresholds
from waorch.simulator.server import Simulator
from waorch.simulator.state import SimConfig

__all__ = ["BanThresholds", "SimConfig", "Simulator"]
