"""``python -m heartbeat`` and the ``heartbeat`` command's entry point.

Owns what no command can own itself because it must be in place before any of them
is imported: Ctrl-C at any moment (even in the middle of importing aiohttp) ends the
process with status 130 and one line, a closed stdout (``heartbeat validate | head``)
ends it quietly with 141, and an unexpected error becomes one line and status 70, never
a traceback. Nothing heavy is imported at module level: this module and the package
``__init__`` cost only the interpreter's start.

A command that runs until stopped (``run``, ``emulator``, ``demo``) takes SIGINT over
with its own signal handling once it is running, and then stops cleanly (status 0).

The handler is installed as this module is imported, in the statement right after
``import signal``: nothing imports this module but the command itself.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from types import FrameType

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE
EXIT_SOFTWARE = 70  # sysexits.h: an internal error (a bug)
INTERRUPTED = "heartbeat: interrupted"


def _interrupted(_signum: int, _frame: FrameType | None) -> NoReturn:
    """SIGINT: one line, status 130, now.

    A handler that exits rather than raising KeyboardInterrupt: raised inside an
    import, that exception can be swallowed by a library's bare except, and CPython
    3.11 remembers one raised inside exec() (dataclasses and pydantic build methods
    with it) and then ends the process by SIGINT instead of with our status."""
    import contextlib
    import os

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C: no traceback either
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    with contextlib.suppress(OSError):
        os.write(sys.stderr.fileno(), f"{INTERRUPTED}\n".encode())
    os._exit(EXIT_INTERRUPTED)


# Defined above, installed here: nothing that takes time runs between the two.
import signal  # noqa: E402

signal.signal(signal.SIGINT, _interrupted)

import contextlib  # noqa: E402
import os  # noqa: E402


def entry() -> None:
    try:
        from heartbeat.cli import main

        code = main()
        # Done: a Ctrl-C now must not turn the command's status into a death by
        # SIGINT while the interpreter shuts down (which resets handlers it set).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except SystemExit:
        raise
    except BaseException as exc:  # the last line of defence: one line, never a traceback
        # Unwrapped from the task groups it may have crossed.
        leaf = _leaf(exc)
        if isinstance(leaf, KeyboardInterrupt):
            # SIGINT after a command's own handling gave it back to Python (asyncio
            # restores the default handler when a signal receiver closes).
            _interrupted(signal.SIGINT, None)
        if isinstance(leaf, BrokenPipeError):
            code = _quit(EXIT_BROKEN_PIPE, None, stdout_closed=True)
        else:
            code = _quit(EXIT_SOFTWARE, f"heartbeat: internal error: {_describe(leaf)}")
    sys.exit(code)


def _quit(code: int, line: str | None, *, stdout_closed: bool = False) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        if stdout_closed:
            # What is still buffered for the closed pipe would fail again at exit.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        else:
            sys.stdout.flush()
    except (OSError, ValueError):
        pass
    if line is not None:
        with contextlib.suppress(OSError, ValueError):
            print(line, file=sys.stderr, flush=True)
    return code


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    try:
        from heartbeat.logs import scrub

        text = scrub(text)
    except ImportError:
        pass
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


if __name__ == "__main__":
    entry()
