"""The console script's start-up: ``plan`` / ``apply`` import and load without the
garbage collector, then freeze what start-up built.

Before a sync reads anything it imports typer, pydantic, httpx and structlog, builds
the typer command and loads the config models: ~100,000 tracked objects that live
until the process ends and hold almost no cycles to free. The collector walks them
again and again while they are built (``import syncd.cli_sync`` alone runs ~125
collections, 80 ms; a full one of that heap ~40 ms), and again in every full
collection later in the run. So the console script (:func:`main`) turns it off for
these two commands before anything else is imported, and :func:`started`, called once
the config is loaded and logging set up (:func:`syncd.cli_sync.load`), moves every
object built so far into the permanent generation (``gc.freeze``), which later
collections skip, and turns the collector back on for the run itself.

Only the console script pauses the collector: a library caller, the daemon or a test
that imports :mod:`syncd.cli` or calls the command functions never does, and for them
:func:`started` does nothing. Every other command (the daemon, the emulators, the
report) starts with the collector on, as they run for long or build cycles of their own.

The commands that log (not a ``--help``) also import structlog first, with rich hidden
from it (:func:`import_structlog_without_rich`).
"""

from __future__ import annotations

import gc
import sys

# The commands that call started() as soon as their config is loaded; any other command
# would run with the collector off.
_PAUSING_COMMANDS = frozenset({"plan", "apply"})


class _Pause:
    """Whether :func:`main` turned the collector off and :func:`started` has yet to
    turn it on again."""

    active = False


def main() -> None:
    """Entry point of the ``syncd`` console script (and ``python -m syncd``)."""
    if sys.argv[1:2] and sys.argv[1] in _PAUSING_COMMANDS and gc.isenabled():
        gc.disable()
        _Pause.active = True
    if _logs(sys.argv[1:]):
        import_structlog_without_rich()
    from syncd.cli import main as cli_main  # noqa: PLC0415 - after the pause, on purpose

    cli_main()


# The commands that import structlog as they run (they load a config, serve or call an
# API): for them importing it first costs nothing. Not ``version``, nor a help.
LOGGING_COMMANDS = frozenset(
    {"plan", "apply", "check-config", "demo", "run", "healthcheck", "history", "audit",
     "emulator", "sources", "report"}
)  # fmt: skip
# Of those, the groups: without a subcommand they only print their usage.
_GROUPS = frozenset({"emulator", "sources", "report"})


def _logs(args: list[str]) -> bool:
    """Whether ``syncd ARGS`` runs a command that logs (not its help, not a bare group)."""
    if not args or args[0] not in LOGGING_COMMANDS or "--help" in args:
        return False
    return args[0] not in _GROUPS or (len(args) > 1 and not args[1].startswith("-"))


# Modules structlog uses, if installed, for tracebacks syncd never renders. With rich
# hidden and better_exceptions installed, structlog.dev would take the latter as its
# default and warn (a DeprecationWarning) at import.
_HIDDEN_FROM_STRUCTLOG = ("rich", "better_exceptions")


def import_structlog_without_rich() -> None:
    """Import structlog as if rich (and better_exceptions) were not installed, if none of
    them is imported yet.

    structlog imports rich's traceback and pretty-printing modules (and, through them,
    pygments and attrs) at import time, to offer rich tracebacks: ~25 ms of every
    command's start-up, measured on a CSV apply. syncd never uses them: its console
    logs format tracebacks plainly (rich's formatter would show local variables, which
    hold API keys), and its JSON logs render none. rich itself stays importable:
    ``sys.modules["rich"] = None`` makes ``import rich`` fail only while structlog's
    modules run, and typer and syncd's plan tables import it afterwards as usual.
    """
    if "structlog" in sys.modules or any(name in sys.modules for name in _HIDDEN_FROM_STRUCTLOG):
        return
    for name in _HIDDEN_FROM_STRUCTLOG:
        sys.modules[name] = None  # type: ignore[assignment]  # "import rich" raises ImportError
    try:
        import structlog.dev  # noqa: F401, PLC0415 - imported now, before rich is back
    finally:
        for name in _HIDDEN_FROM_STRUCTLOG:
            if name in sys.modules and sys.modules[name] is None:  # never a real module
                del sys.modules[name]


def started() -> None:
    """Start-up is over: freeze the objects it built, turn the collector back on.

    Does nothing unless :func:`main` paused the collector (and only the first time).
    """
    if not _Pause.active:
        return
    _Pause.active = False
    gc.freeze()
    gc.enable()
