"""The same-run references of ``bench/sync_bench.py``: what this machine does without syncd.

    python bench/bare_pipeline.py diff '{"csv": "...", "url": "...", ...}'
    python bench/bare_pipeline.py push '{"csv": "...", "url": "...", ...}'

The bearer key is read from ``BENCH_API_KEY``; the spec is one JSON argument (see
:class:`Spec`), decoded by msgspec, so the process imports nothing but ``csv``,
``http.client`` and ``msgspec`` (and the built-in ``operator`` and ``threading``).
Each mode prints one JSON line of figures and counts on stdout.

The cyclic garbage collector is off in both modes (the best case for the reference).

``diff``, the no-change reference: plain ``csv.reader`` into a dict keyed by the
lower-cased id (tag values and date strings), one raw GET of the list (body as bytes),
one typed ``msgspec.json.decode``, and a plain Python loop that compares tags and date
strings, plus the set difference for users to insert. It counts the users syncd would
write: an update (tags or dates differ), an insert (not on the platform; a disabled user
only with an end date that has passed, as syncd does), a removal (on the platform, not
in the file, and not already ended). Deliberately no more than that: no validation, no
date parsing, no identity normalisation beyond ``strip().lower()``; its counts are
checked against syncd's own, so a shape of data it misreads would show as a mismatch.

``push``, the initial-sync floor: the users syncd inserts, in batches of ``batch_size``,
encoded before the clock starts, pushed by ``concurrency`` threads with one keep-alive
``http.client`` connection each. Only the pushing is timed.
"""

from __future__ import annotations

import csv
import gc
import http.client
import os
import sys
import threading
import time
from operator import itemgetter
from urllib.parse import urlsplit

import msgspec

_FALSE_WORDS = frozenset(("false", "0", "no", "n", "disabled", "inactive"))


class Spec(msgspec.Struct, forbid_unknown_fields=True):
    """What to read and where to send it; the bench CONFIG's mapping, by default."""

    csv: str
    url: str
    path: str = "/api/external/platform-users"
    id_column: str = "email"
    tags: dict[str, str] = msgspec.field(
        default_factory=lambda: {"country": "Country", "department": "Department"}
    )
    active_from_column: str = "start_date"
    active_to_column: str = "end_date"
    enabled_column: str = "enabled"
    today: str = ""  # YYYY-MM-DD; blank: today in UTC, as syncd takes it
    batch_size: int = 500  # push only
    concurrency: int = 4  # push only


class User(msgspec.Struct, gc=False):
    """A platform user as the GET returns it (not tracked by the collector: it holds no
    cycles, and tracking a million of them costs seconds of collections)."""

    end_user: str
    tags: dict[str, str] = {}
    active_from: str | None = None
    active_to: str | None = None


class Pagination(msgspec.Struct):
    """The optional cursor of a paged answer (the reference reads a single page only)."""

    next_page_cursor: str | None = None


class Listing(msgspec.Struct, gc=False):
    """Body of the GET: ``{"users": [...]}``."""

    users: list[User]
    pagination: Pagination | None = None


# A source row as the reference keeps it: (active_from, active_to, enabled, then the
# tag values in the order of spec.tags), all as the CSV spells them.
Row = tuple[str, ...]


def read_csv(spec: Spec) -> dict[str, Row]:
    """The CSV as a dict keyed by the stripped, lower-cased id column."""
    with open(spec.csv, encoding="utf-8-sig", newline="") as file:
        reader = csv.reader(file)
        header = next(reader)
        id_at = header.index(spec.id_column)
        columns = (spec.active_from_column, spec.active_to_column, spec.enabled_column)
        kept = itemgetter(*[header.index(name) for name in (*columns, *spec.tags.values())])
        return {row[id_at].strip().lower(): kept(row) for row in reader}


def insertable(row: Row, today: str) -> bool:
    """Whether syncd inserts this source user: enabled, or with an end date that passed."""
    return row[2].strip().lower() not in _FALSE_WORDS or (row[1] != "" and row[1] <= today)


def _connection(url: str) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None:
        raise SystemExit(f"bare_pipeline: only http:// URLs are supported, got {url!r}")
    return http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=600)


def _headers() -> dict[str, str]:
    key = os.environ.get("BENCH_API_KEY", "")
    if not key:
        raise SystemExit("bare_pipeline: set BENCH_API_KEY to the emulator's bearer key")
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def get_listing(spec: Spec) -> bytes:
    """One raw GET of the whole list, body as bytes."""
    connection = _connection(spec.url)
    try:
        connection.request("GET", spec.path, headers=_headers())
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise SystemExit(f"bare_pipeline: GET {spec.path} answered {response.status}")
    return body


def diff(users: dict[str, Row], platform: list[User], spec: Spec, today: str) -> dict[str, int]:
    """Count the writes that make the platform equal to ``users`` (a plain loop)."""
    names = tuple(spec.tags)
    tag_count = len(names)
    # Compared in place, without a tuple per user, for the two tags of the benchmark's
    # config (the leanest loop is the strictest yardstick); any other count generically.
    two = tag_count == 2
    first, second = names if two else ("", "")
    updates = removals = 0
    seen: set[str] = set()
    for user in platform:
        key = user.end_user
        row = users.get(key)
        if row is None:
            key = key.strip().lower()
            row = users.get(key)
            if row is None:
                if user.active_to is None or user.active_to > today:
                    removals += 1
                continue
        seen.add(key)
        tags = user.tags
        if (
            len(tags) != tag_count
            or (
                (tags.get(first) != row[3] or tags.get(second) != row[4])
                if two
                else tuple(map(tags.get, names)) != row[3:]
            )
            or user.active_from != row[0]
            or (user.active_to or "") != row[1]
        ):
            updates += 1
    inserts = sum(1 for key in users.keys() - seen if insertable(users[key], today))
    return {"inserts": inserts, "updates": updates, "removals": removals}


def run_diff(spec: Spec, today: str) -> dict[str, object]:
    """The no-change reference: read, GET, decode, diff; figures and counts."""
    started = time.perf_counter()
    users = read_csv(spec)
    read_done = time.perf_counter()
    body = get_listing(spec)
    get_done = time.perf_counter()
    listing = msgspec.json.decode(body, type=Listing)
    decode_done = time.perf_counter()
    if listing.pagination is not None and listing.pagination.next_page_cursor is not None:
        raise SystemExit("bare_pipeline: the server paged its answer; start it unpaged")
    counts = diff(users, listing.users, spec, today)
    diff_done = time.perf_counter()
    return {
        "mode": "diff",
        "read_s": read_done - started,
        "get_s": get_done - read_done,
        "decode_s": decode_done - get_done,
        "diff_s": diff_done - decode_done,
        "csv_rows": len(users),
        "platform_users": len(listing.users),
        "response_mb": len(body) / 1e6,
        **counts,
        "differences": sum(counts.values()),
    }


def encode_batches(users: dict[str, Row], spec: Spec, today: str) -> list[bytes]:
    """The insert bodies syncd would send, in batches of ``spec.batch_size`` (not timed)."""
    names = tuple(spec.tags)
    wire: list[dict[str, object]] = []
    for key, row in users.items():
        if not insertable(row, today):
            continue
        user: dict[str, object] = {
            "end_user": key,
            "tags": dict(zip(names, row[3:], strict=True)),
            "active_from": row[0] or today,
        }
        if row[1]:
            user["active_to"] = row[1]
        wire.append(user)
    size = spec.batch_size
    return [
        msgspec.json.encode({"users": wire[start : start + size]})
        for start in range(0, len(wire), size)
    ]


def push(batches: list[bytes], spec: Spec) -> None:
    """PUT every batch over ``spec.concurrency`` keep-alive connections, one per thread."""
    headers = _headers()
    pending = iter(batches)
    lock = threading.Lock()
    failures: list[str] = []

    def worker() -> None:
        connection = _connection(spec.url)
        try:
            while True:
                with lock:
                    body = next(pending, None)
                if body is None:
                    return
                connection.request("PUT", spec.path, body=body, headers=headers)
                response = connection.getresponse()
                response.read()  # the whole answer, so the connection can be reused
                if response.status != 200:
                    failures.append(f"PUT {spec.path} answered {response.status}")
                    return
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(spec.concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise SystemExit(f"bare_pipeline: {failures[0]}")


def run_push(spec: Spec, today: str) -> dict[str, object]:
    """The initial-sync floor: pre-encoded batches pushed by threads; only the push timed."""
    started = time.perf_counter()
    users = read_csv(spec)
    read_done = time.perf_counter()
    batches = encode_batches(users, spec, today)
    inserted = sum(1 for row in users.values() if insertable(row, today))
    push_started = time.perf_counter()
    push(batches, spec)
    return {
        "mode": "push",
        "read_s": read_done - started,
        "push_s": time.perf_counter() - push_started,
        "batches": len(batches),
        "inserts": inserted,
    }


def main(argv: list[str]) -> int:
    """``diff SPEC`` or ``push SPEC``; prints one JSON line."""
    if len(argv) != 2 or argv[0] not in ("diff", "push"):
        print("usage: bare_pipeline.py diff|push SPEC_JSON", file=sys.stderr)
        return 2
    # The strictest reference: the cyclic collector off for the whole process (it would
    # walk every decoded tag dict), which a long-lived syncd cannot afford to do.
    gc.disable()
    spec = msgspec.json.decode(argv[1], type=Spec)
    today = spec.today or time.strftime("%Y-%m-%d", time.gmtime())
    result = run_diff(spec, today) if argv[0] == "diff" else run_push(spec, today)
    sys.stdout.buffer.write(msgspec.json.encode(result) + b"\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
