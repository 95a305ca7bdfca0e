"""The per-job lock: one apply of a job at a time (a daemon and a manual ``syncd apply``).

The lock is a row in the state store (:meth:`~syncd.ports.StateStore.acquire_lock`),
naming its holder (``syncd run``, pid, host), its run and since when. A holder that
dies without releasing it never blocks forever; a lock is *stale*, and is taken over,
when either:

* its process is gone: same host and PID namespace, and the PID no longer runs (or is
  a zombie). This covers the usual case at once, a killed ``syncd apply``;
* its heartbeat is older than :data:`LOCK_LEASE`. The holder refreshes it every
  :data:`HEARTBEAT_INTERVAL` while it applies. This covers what a PID check cannot see:
  a holder in another container sharing the volume (another PID namespace, another
  host name), and a PID reused by an unrelated process after a crash.

Both, because neither alone is enough: a PID check alone can block forever (a reused PID,
a container restarted under a new host name), and a lease alone makes the next run wait
out the lease after every crash. SQLite in WAL mode needs every process on one kernel
(shared memory), so the store is never shared between machines.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog

from syncd import forking
from syncd.errors import StateError
from syncd.ports import JobLock, StateStore

log = structlog.get_logger(__name__)

LOCK_LEASE = timedelta(minutes=5)
"""A lock whose heartbeat is older than this is stale, whoever holds it."""

HEARTBEAT_INTERVAL = timedelta(seconds=30)
"""How often a holder refreshes its heartbeat (well inside the lease)."""


def host_name() -> str:
    """This machine's name, as lock rows show it."""
    return socket.gethostname() or "localhost"


def pid_namespace() -> str:
    """An id of this process's PID namespace (Linux), so that a PID is only checked
    where it means the same process; empty where there is no such thing."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def pid_alive(pid: int) -> bool:
    """True if a process with this PID runs here (a zombie counts as gone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: the signal check is all there is
    # The state follows the command name in parentheses, which may itself hold spaces.
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def lock_is_stale(
    lock: JobLock,
    *,
    now: datetime,
    host: str,
    namespace: str,
    alive: Callable[[int], bool] = pid_alive,
    lease: timedelta = LOCK_LEASE,
) -> bool:
    """True if ``lock`` may be taken over: its heartbeat expired, or its process is
    known to be gone (same host and PID namespace, PID not running)."""
    if now - lock.heartbeat_at > lease:
        return True
    return lock.host == host and lock.namespace == namespace and not alive(lock.pid)


def busy_message(lock: JobLock, now: datetime) -> str:
    """What a run that cannot get the lock says: who holds it and since when."""
    since = lock.since.astimezone(UTC)
    when = since.strftime("%H:%M:%S UTC")
    if since.date() != now.astimezone(UTC).date():
        when = since.strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        f"job {lock.job} is being applied by {lock.describe()} since {when}; "
        "try again when it finishes"
    )


def process_holder(argv: list[str] | None = None) -> str:
    """What this process is, for lock rows: ``syncd run``, ``syncd apply`` or ``syncd``."""
    args = sys.argv if argv is None else argv
    program = Path(args[0]).name if args else ""
    if program in ("syncd", "__main__.py") and len(args) > 1 and not args[1].startswith("-"):
        return f"syncd {args[1]}"
    return "syncd"


def new_lock(job: str, run_id: str, holder: str, now: datetime) -> JobLock:
    """The lock this process asks for."""
    return JobLock(
        job=job,
        run_id=run_id,
        holder=holder,
        pid=os.getpid(),
        host=host_name(),
        namespace=pid_namespace(),
        since=now,
        heartbeat_at=now,
    )


@contextmanager
def job_lock(
    state: StateStore,
    job: str,
    run_id: str,
    *,
    holder: str,
    lease: timedelta = LOCK_LEASE,
    heartbeat: timedelta = HEARTBEAT_INTERVAL,
    on_lost: Callable[[], None] | None = None,
) -> Iterator[JobLock]:
    """Hold the job's lock for the block, refreshing its heartbeat; release it after.

    Yields the holder after the attempt: the caller checks ``held.run_id == run_id``
    and must not write when another run holds it (the block then holds nothing).
    ``on_lost`` is called (from the heartbeat thread) if the lock is found taken over
    while the block runs (this process was paused past the lease): the caller stops
    writing, since another run now owns the job. It is also called (from the thread
    that forked) if the heartbeat cannot start again after a fork.
    """
    mine = new_lock(job, run_id, holder, datetime.now(UTC))
    here, namespace = mine.host, mine.namespace

    def stale(lock: JobLock) -> bool:
        return lock_is_stale(
            lock, now=datetime.now(UTC), host=here, namespace=namespace, lease=lease
        )

    current = state.acquire_lock(mine, is_stale=stale)
    if current.run_id != run_id:
        yield current
        return
    beat = _Heartbeat(state, job, run_id, heartbeat.total_seconds(), on_lost)
    try:
        beat.start()  # inside: a thread that cannot start still releases the lock
        # A reader may fork meanwhile (the CSV source's second part): the heartbeat then
        # steps aside for the fork, between two beats.
        with forking.pausable(beat):
            yield mine
    finally:
        beat.stop()
        try:
            state.release_lock(job, run_id)
        except StateError as error:
            # The row stays; its heartbeat stops, so it expires with the lease (or at
            # once, for the next process on this host, since this one will be gone).
            log.error("lock.release_failed", error=str(error))


class _Heartbeat:
    """The thread that refreshes a held lock every ``every`` seconds.

    It can pause (end between two beats) and resume on the same schedule, so that a
    fork sees a single-threaded process (:mod:`syncd.forking`); pauses never postpone
    a beat. It ends for good when the lock is found lost, when it cannot start again,
    or at :meth:`stop`.
    """

    def __init__(
        self,
        state: StateStore,
        job: str,
        run_id: str,
        every: float,
        on_lost: Callable[[], None] | None,
    ) -> None:
        self._state = state
        self._job = job
        self._run_id = run_id
        self._every = every
        self._on_lost = on_lost
        self._next = time.monotonic() + every
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self._ended = False  # the lock was lost, or stop() was called

    def start(self) -> None:
        """Start beating (again), unless the heartbeat has ended."""
        if self._ended:
            return
        self._halt.clear()
        thread = threading.Thread(target=self._run, name=f"syncd-lock-{self._job}", daemon=True)
        thread.start()
        self._thread = thread  # only a started thread: pause() joins it

    def pause(self) -> None:
        """End the thread between two beats; the next beat keeps its time."""
        self._halt.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def resume(self) -> None:
        """Start again after :meth:`pause`; a beat that fell due meanwhile comes at once.

        If the thread cannot start, the lock would expire under a run still writing:
        the heartbeat ends as if the lock were lost (``on_lost``, which stops the
        writes), and this never raises.
        """
        try:
            self.start()
        except Exception as error:  # RuntimeError: can't start new thread
            self._ended = True
            log.error("lock.heartbeat_stopped", job=self._job, error=str(error))
            if self._on_lost is not None:
                self._on_lost()

    def stop(self) -> None:
        """End the heartbeat for good."""
        self._ended = True
        self.pause()

    def _run(self) -> None:
        while not self._halt.wait(max(0.0, self._next - time.monotonic())):
            self._next = time.monotonic() + self._every
            try:
                if not self._state.refresh_lock(self._job, self._run_id, datetime.now(UTC)):
                    log.error("lock.lost", job=self._job, detail="another run took the job over")
                    self._ended = True
                    if self._on_lost is not None:
                        self._on_lost()
                    return
            except StateError as error:
                log.warning("lock.heartbeat_failed", error=str(error))
