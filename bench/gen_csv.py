"""Generate a large, realistic users CSV for benchmarks (and a churned variant of one).

    python bench/gen_csv.py --users 1000000 --out bench/out/users.csv --seed 1
    python bench/gen_csv.py --churn-from bench/out/users.csv --churn 0.01 \\
        --out bench/out/users-churned.csv --seed 2

The output depends only on the arguments (``--as-of`` defaults to today: the start
dates are "within the last five years" of it; pass it for byte-identical files on
another day). Rows are streamed to the file; the churn variant reads the base twice
(once to count its rows, once to copy them) instead of holding it in memory.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

HEADER = (
    "email",
    "first_name",
    "last_name",
    "Department",
    "Country",
    "start_date",
    "end_date",
    "enabled",
)
FIRST_NAMES = (
    "Anna", "Ben", "Chloé", "David", "Elif", "Farah", "Giulia", "Hiro", "Ines", "Jonas",
    "Kai", "Lena", "Mateo", "Nora", "Omar", "Priya", "Quentin", "Rosa", "Sven", "Tomás",
    "Uma", "Victor", "Wei", "Ximena", "Yusuf", "Zoë",
)  # fmt: skip
LAST_NAMES = (
    "Andersen", "Bianchi", "Chen", "Dubois", "Evans", "Fischer", "García", "Haddad",
    "Ivanova", "Jensen", "Kowalski", "López", "Müller", "Nakamura", "O'Brien", "Patel",
    "Quinn", "Rossi", "Schmidt", "Tanaka", "Uchenna", "Varga", "Weber", "Yilmaz", "Zhang",
)  # fmt: skip
DEPARTMENTS = (
    "Engineering", "Sales", "Marketing", "Finance", "Legal", "HR", "Support", "Operations",
    "Product", "Design", "Research", "IT", "Security", "Procurement", "Facilities",
    "Data", "Customer Success", "Partnerships", "Communications", "Executive",
)  # fmt: skip
COUNTRIES = (
    "US", "GB", "DE", "FR", "IT", "ES", "NL", "SE", "PL", "IN", "JP", "BR", "CA", "AU", "SG",
)  # fmt: skip
END_DATE_RATE = 0.02  # leavers still listed with an end date
DISABLED_RATE = 0.03
FIVE_YEARS = 5 * 365


def _user(rng: random.Random, index: str, as_of: date) -> tuple[str, ...]:
    first = rng.choice(FIRST_NAMES)
    last = rng.choice(LAST_NAMES)
    start = as_of - timedelta(days=rng.randrange(FIVE_YEARS))
    end = ""
    if rng.random() < END_DATE_RATE:
        end = (start + timedelta(days=rng.randrange(1, FIVE_YEARS))).isoformat()
    enabled = "false" if rng.random() < DISABLED_RATE else "true"
    # The index keeps e-mails unique; mixed case exercises identity lower-casing.
    email = f"{first}.{last}.{index}@example.com".replace("'", "")
    return (
        email,
        first,
        last,
        rng.choice(DEPARTMENTS),
        rng.choice(COUNTRIES),
        start.isoformat(),
        end,
        enabled,
    )


def generate(users: int, out: Path, seed: int, as_of: date) -> int:
    """Write ``users`` fresh users to ``out``; returns the number of rows written."""
    rng = random.Random(seed)
    with out.open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(HEADER)
        writer.writerows(_user(rng, f"{i:07d}", as_of) for i in range(users))
    return users


def _data_rows(path: Path) -> Iterator[list[str]]:
    with path.open(encoding="utf-8-sig", newline="") as file:
        reader = csv.reader(file)
        header = next(reader, None)
        if header is None or "Department" not in header:
            sys.exit(f"{path}: expected a header with a Department column")
        yield from reader


def churn(base: Path, out: Path, ratio: float, seed: int, as_of: date) -> tuple[int, int, int]:
    """Write a variant of ``base`` where ``ratio`` of the users changed.

    About a third leave (row dropped), a third join (new rows at the end) and a third
    move to another Department. Returns (leavers, joiners, movers).
    """
    rng = random.Random(seed)
    total = sum(1 for _ in _data_rows(base))
    changes = round(total * ratio)
    leavers_n = changes // 3
    movers_n = changes // 3
    joiners_n = changes - leavers_n - movers_n
    picked = rng.sample(range(total), leavers_n + movers_n)
    leavers = set(picked[:leavers_n])
    movers = set(picked[leavers_n:])
    department = HEADER.index("Department")
    with out.open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(HEADER)
        for index, row in enumerate(_data_rows(base)):
            if index in leavers:
                continue
            if index in movers:
                row[department] = rng.choice(
                    [name for name in DEPARTMENTS if name != row[department]]
                )
            writer.writerow(row)
        # "j<seed>-<n>" cannot collide with the numeric indexes of generated users, nor
        # with joiners of a churn run made with another seed.
        writer.writerows(_user(rng, f"j{seed}-{i}", as_of) for i in range(joiners_n))
    return leavers_n, joiners_n, movers_n


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, help="number of users to generate")
    parser.add_argument("--out", type=Path, required=True, help="CSV file to write")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--churn-from", type=Path, help="base CSV to derive a variant from")
    parser.add_argument("--churn", type=float, default=0.01, help="share of users changed")
    parser.add_argument("--as-of", type=date.fromisoformat, default=date.today(), help="YYYY-MM-DD")
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if args.churn_from is not None:
        if not 0 <= args.churn <= 1:
            parser.error("--churn must be between 0 and 1")
        leavers, joiners, movers = churn(
            args.churn_from, args.out, args.churn, args.seed, args.as_of
        )
        summary = f"{leavers} leavers, {joiners} joiners, {movers} department changes"
    else:
        if args.users is None or args.users < 0:
            parser.error("--users N is required (N >= 0) unless --churn-from is given")
        generate(args.users, args.out, args.seed, args.as_of)
        summary = f"{args.users} users"
    elapsed = time.perf_counter() - started
    print(f"wrote {args.out}: {summary} in {elapsed:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
