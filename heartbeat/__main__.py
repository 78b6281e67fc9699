"""``python -m heartbeat`` and the ``heartbeat`` command's entry point.

Installs the Ctrl-C handling of :mod:`heartbeat.cli.guard` as this module is
imported, before the command line's own imports (``argparse`` and up), then runs
:func:`heartbeat.cli.main` inside it. Nothing heavy is imported at module level: this
module, the package ``__init__`` and ``heartbeat.cli`` cost only the interpreter's
start. Nothing imports this module but the command itself.
"""

from __future__ import annotations

from typing import NoReturn

from heartbeat.cli import guard

guard.install()  # first: a Ctrl-C from here on is one line and status 130


def entry() -> NoReturn:
    import heartbeat.cli

    # Looked up now, not at import: main is read from heartbeat.cli when called.
    guard.run(lambda: heartbeat.cli.main())


if __name__ == "__main__":
    entry()
