"""systemd's notify protocol (``sd_notify``): one datagram per message.

With ``Type=notify`` systemd sets ``$NOTIFY_SOCKET``; with ``WatchdogSec=`` it sets
``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``) and restarts a service that stops sending
``WATCHDOG=1``. Without the variable every call does nothing, so the daemon runs the
same under Docker, Kubernetes or a terminal. A failing send is logged, never raised:
the notify socket must not take the service down.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import structlog

__all__ = ["Notifier"]

log = structlog.get_logger(__name__)


class Notifier:
    """Sends ``READY=1``, ``WATCHDOG=1``, ``STATUS=...`` and ``STOPPING=1`` to systemd."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        # "@name" is an abstract socket: a leading NUL byte on the wire.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_s: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1_000_000

    @property
    def enabled(self) -> bool:
        """True when systemd (or a test) listens."""
        return bool(self._address)

    def send(self, message: str) -> None:
        """Send one message (``KEY=value`` lines)."""
        if not self._address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(message.encode(), self._address)
        except OSError as error:
            log.warning("sd_notify failed", error=str(error))

    def ready(self) -> None:
        """The service is up (config loaded, state store open)."""
        self.send("READY=1")

    def watchdog(self) -> None:
        """Still alive (sent from the scheduler loop)."""
        self.send("WATCHDOG=1")

    def status(self, text: str) -> None:
        """A one-line status that ``systemctl status`` shows."""
        self.send("STATUS=" + text.replace("\n", " "))

    def stopping(self) -> None:
        """Shutting down."""
        self.send("STOPPING=1")
