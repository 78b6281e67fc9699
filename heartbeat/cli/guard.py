"""The process edge around every command: Ctrl-C, a closed stdout, a bug.

Owns what no command can own itself because it must be in place before any of them
is imported: Ctrl-C at any moment (even in the middle of importing aiohttp) ends the
process with status 130 and one line, a closed stdout (``heartbeat validate | head``)
ends it quietly with 141, and an unexpected error becomes one line and status 70, never
a traceback. It imports nothing heavy and nothing of the commands: the entry points
(:mod:`heartbeat.__main__`, :func:`heartbeat.cli.entry`) install the handler first,
then hand :func:`run` the command line's ``main``.

A command that runs until stopped (``run``, ``emulator``, ``demo``) takes SIGINT over
with its own signal handling once it is running, and then stops cleanly (status 0).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

from heartbeat.cli.exits import ExitCode

if TYPE_CHECKING:
    from types import FrameType

INTERRUPTED = "heartbeat: interrupted"


def install() -> None:
    """From now on, SIGINT ends the process with status 130 and one line."""
    signal.signal(signal.SIGINT, _interrupted)


def _interrupted(_signum: int, _frame: FrameType | None) -> NoReturn:
    """SIGINT: one line, status 130, now.

    A handler that exits rather than raising KeyboardInterrupt: raised inside an
    import, that exception can be swallowed by a library's bare except, and CPython
    3.11 remembers one raised inside exec() (dataclasses and pydantic build methods
    with it) and then ends the process by SIGINT instead of with our status."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C: no traceback either
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    with contextlib.suppress(OSError):
        os.write(sys.stderr.fileno(), f"{INTERRUPTED}\n".encode())
    os._exit(ExitCode.INTERRUPTED)


def run(main: Callable[[], int]) -> NoReturn:
    """Run ``main`` and exit with its status; any exception becomes one line."""
    try:
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
            code = _quit(ExitCode.BROKEN_PIPE, None, stdout_closed=True)
        else:
            code = _quit(ExitCode.SOFTWARE, f"heartbeat: internal error: {_describe(leaf)}")
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
