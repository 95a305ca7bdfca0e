"""In-memory emulators of the APIs syncd talks to (tests, demo, benchmarks).

Each emulator is a store plus routes on top of :class:`EmulatorServer`, which brings
the HTTP server, auth, counters, faults, control endpoints and an in-process
``httpx.MockTransport``.
"""

from syncd.emulator.data import make_users
from syncd.emulator.platform import PlatformEmulator
from syncd.emulator.server import EmulatorServer, EndpointFaults

__all__ = ["EmulatorServer", "EndpointFaults", "PlatformEmulator", "make_users"]
