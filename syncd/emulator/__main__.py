"""Run the emulator as a process: ``python -m syncd.emulator --users 1000000``.

The API key comes from ``--api-key`` or, better (it stays out of the process list), the
environment variable ``SYNCD_EMULATOR_API_KEY``. The first line on stdout is
``syncd emulator listening on http://HOST:PORT``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from syncd.emulator.data import make_users
from syncd.emulator.server import PlatformEmulator

API_KEY_ENV = "SYNCD_EMULATOR_API_KEY"


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, seed synthetic users if asked, serve until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m syncd.emulator", description=__doc__)
    parser.add_argument("--api-key", help=f"bearer key to accept (default: ${API_KEY_ENV})")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--max-batch-size", type=int, default=1000)
    parser.add_argument("--page-size", type=int, default=None)
    parser.add_argument("--data-file", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0, help="seed of the random faults")
    parser.add_argument("--users", type=int, default=0, help="seed N synthetic users")
    args = parser.parse_args(argv)
    api_key = args.api_key or os.environ.get(API_KEY_ENV)
    if not api_key:
        parser.error(f"give --api-key or set {API_KEY_ENV}")
    emulator = PlatformEmulator(
        api_key=api_key,
        host=args.host,
        port=args.port,
        max_batch_size=args.max_batch_size,
        page_size=args.page_size,
        data_file=args.data_file,
        seed=args.seed,
    )
    if args.users:
        emulator.seed_users(make_users(args.users))
    emulator.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
