"""Logging with structlog: readable lines on a terminal, one JSON object per line otherwise.

Logs go to stderr so that ``syncd plan --output json`` keeps stdout clean. Every run
binds its ``job`` and ``run_id`` (see :mod:`syncd.runner`), so all lines of a run can be
found together in a log store.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

LogFormat = Literal["auto", "console", "json"]


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the time of the write.

    rich's progress bars redirect ``sys.stderr`` while they are live so that log lines
    print above the bar instead of through it; binding the original stream would skip
    that redirect.
    """

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(
    format: LogFormat = "auto", level: str = "info", stream: TextIO | None = None
) -> None:
    """Configure structlog once for the process."""
    out: TextIO = stream if stream is not None else sys.stderr
    use_json = format == "json" or (format == "auto" and not out.isatty())
    target = stream if stream is not None else _CurrentStderr()
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if use_json:
        processors += [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ]
    else:
        processors.append(
            structlog.dev.ConsoleRenderer(
                colors=out.isatty(),
                # Never print local variables in tracebacks: they hold API keys and
                # Authorization headers (rich's formatter shows them by default).
                exception_formatter=structlog.dev.plain_traceback,
            )
        )
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=target),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
