"""In-memory, Nebuly-compatible platform-users API emulator (tests, demo, benchmarks)."""

from syncd.emulator.data import make_users
from syncd.emulator.server import EndpointFaults, PlatformEmulator

__all__ = ["EndpointFaults", "PlatformEmulator", "make_users"]
