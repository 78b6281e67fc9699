"""Every exit status the ``heartbeat`` command ends with, in one enum.

The numbers are a public contract (the README's exit-code table, systemd's
``RestartPreventExitStatus=78``): a member may be added, never renumbered.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    #: Success, or a clean stop (SIGTERM/SIGINT once running).
    OK = 0
    #: The job asked about is not there: ``check-in``'s 404 from Elasticsearch (and
    #: nothing else failed); ``jobs show/remove``: not watched; ``jobs restore``: not
    #: a dropped job.
    NOT_FOUND = 1
    #: Any other failure of a command (invalid id, server error, no connection), and
    #: argparse's usage error.
    FAILED = 2
    #: sysexits.h EX_SOFTWARE: an internal error (a bug); one line, never a traceback.
    SOFTWARE = 70
    #: sysexits.h EX_CONFIG: a configuration that cannot be used; systemd does not
    #: restart on it.
    CONFIG = 78
    #: 128 + SIGINT, what a shell reports for Ctrl-C.
    INTERRUPTED = 130
    #: 128 + SIGPIPE: stdout was closed (``heartbeat jobs list | head``).
    BROKEN_PIPE = 141
