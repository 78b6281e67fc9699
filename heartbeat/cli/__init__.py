"""The command line: ``heartbeat run | check-in | validate | emulator | demo | jobs``.

One module per concern:

- :mod:`heartbeat.cli.commands`: the parser, :func:`main` (a ConfigError becomes one
  line and status 78) and the verbs too small for a module (``run``, ``validate``,
  ``emulator``);
- :mod:`heartbeat.cli.checkin`, :mod:`heartbeat.cli.demo`, :mod:`heartbeat.cli.jobs`
  (with :mod:`heartbeat.cli.control_api`, finding the daemon and asking it): one verb
  each, imported only when that verb runs, so ``--version`` and ``--help`` import none
  of aiohttp, pydantic or prometheus_client;
- :mod:`heartbeat.cli.exits`: every exit status, one enum;
- :mod:`heartbeat.cli.guard`: the process edge (Ctrl-C, a closed stdout, a bug).

This package's own import costs nothing: ``main`` and ``build_parser`` load
:mod:`heartbeat.cli.commands` on first use (PEP 562), so that
:mod:`heartbeat.__main__` can install the Ctrl-C handling before ``argparse``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from heartbeat.cli.commands import build_parser, main

__all__ = ["build_parser", "entry", "main"]


def __getattr__(name: str) -> Any:
    if name not in ("build_parser", "main"):
        raise AttributeError(f"module 'heartbeat.cli' has no attribute {name!r}")
    value = getattr(importlib.import_module("heartbeat.cli.commands"), name)
    globals()[name] = value  # once imported, a plain module attribute
    return value


def entry() -> NoReturn:
    """The ``heartbeat`` command (kept for installs made before ``heartbeat.__main__``)."""
    from heartbeat.cli import guard

    guard.install()
    # main as this module has it when called (imported now, unless already replaced).
    guard.run(lambda: (globals().get("main") or __getattr__("main"))())
