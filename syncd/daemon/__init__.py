"""The daemon mode, ``syncd run``: scheduler, endpoints, metrics, systemd notify.

* :mod:`~syncd.daemon.core` -- the :class:`Daemon`: resources, scheduler, shutdown;
* :mod:`~syncd.daemon.schedule` -- triggers, jitter and misfire policy (pure);
* :mod:`~syncd.daemon.status` -- per-job state, redaction, ``/status`` (pure);
* :mod:`~syncd.daemon.page` -- the HTML status page (pure);
* :mod:`~syncd.daemon.metrics` -- Prometheus metrics in their own registry;
* :mod:`~syncd.daemon.server` -- the HTTP endpoints (standard library);
* :mod:`~syncd.daemon.notify` -- systemd's sd_notify.
"""

from syncd.daemon.core import SHUTDOWN_BUDGET_S, Daemon

__all__ = ["SHUTDOWN_BUDGET_S", "Daemon"]
