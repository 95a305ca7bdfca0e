"""The console script's fast exit, in real child processes (it ends the process)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

_PRELUDE = """
import atexit, logging, sys
from syncd.process_exit import hold, run_then_exit
atexit.register(lambda: print("atexit ran", file=sys.stderr, flush=True))
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
"""


def _run(body: str) -> subprocess.CompletedProcess[str]:
    script = _PRELUDE + textwrap.dedent(body)
    # Buffered streams, as in production: nothing reaches the pipe unless flushed.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


@pytest.mark.parametrize(("exit_with", "expected"), [("None", 0), ("0", 0), ("3", 3)])
def test_a_command_that_held_its_heap_exits_with_its_code_and_loses_no_output(
    exit_with: str, expected: int
) -> None:
    done = _run(
        f"""
        def command():
            hold([object() for _ in range(100_000)])
            sys.stdout.write("result on stdout")  # buffered: a pipe is not a terminal
            logging.getLogger("x").info("last log line")
            raise SystemExit({exit_with})
        run_then_exit(command)
        """
    )
    assert done.returncode == expected
    assert done.stdout == "result on stdout"
    assert "last log line" in done.stderr
    # os._exit: the interpreter did not shut down (which also frees the heap).
    assert "atexit ran" not in done.stderr


def test_a_command_that_held_nothing_exits_the_ordinary_way() -> None:
    done = _run(
        """
        def command():
            print("help text")
            raise SystemExit(2)
        run_then_exit(command)
        """
    )
    assert (done.returncode, done.stdout) == (2, "help text\n")
    assert "atexit ran" in done.stderr


def test_an_exit_message_is_printed_and_exits_1() -> None:
    done = _run(
        """
        def command():
            hold(object())
            sys.exit("syncd: something went wrong")
        run_then_exit(command)
        """
    )
    assert done.returncode == 1
    assert "syncd: something went wrong" in done.stderr


def test_a_bug_still_prints_its_traceback() -> None:
    done = _run(
        """
        def command():
            hold(object())
            raise RuntimeError("a bug")
        run_then_exit(command)
        """
    )
    assert done.returncode == 1
    assert "Traceback" in done.stderr
    assert "RuntimeError: a bug" in done.stderr


def test_hold_keeps_nothing_outside_the_console_script() -> None:
    from syncd import process_exit

    process_exit.hold(object())
    assert process_exit._holder.held == []


def test_a_profiled_or_traced_process_exits_the_ordinary_way_so_results_are_written() -> None:
    for install in ("sys.setprofile(lambda *args: None)", "sys.settrace(lambda *args: None)"):
        done = _run(
            f"""
            def command():
                hold(object())
                {install}
                raise SystemExit(4)
            run_then_exit(command)
            """
        )
        assert done.returncode == 4
        assert "atexit ran" in done.stderr


def test_output_that_cannot_be_written_at_exit_is_a_failure_not_a_success() -> None:
    done = _run(
        """
        def command():
            hold(object())
            sys.stdout = open("/dev/full", "w")  # every write to it fails: ENOSPC
            sys.stdout.write("a result that is lost")
        run_then_exit(command)
        """
    )
    assert done.returncode == 120
    assert "could not write the last output" in done.stderr
