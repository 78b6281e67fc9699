"""Run many ``heartbeat`` command lines in one subprocess, for tests/test_hostile_config.py.

``python -m tests.hostile_driver CASES.json`` reads a list of cases, ``{"commands":
[argv, ...], "env": {...}}``, and runs each command line through
:func:`heartbeat.cli.main`, exactly as the ``heartbeat`` script does
(``sys.exit(main())``), with the case's environment and its stdout and stderr captured.
An exception escaping ``main`` is what an operator would see as a traceback: it is
reported as such, with its text. A ``run`` is not run (``"skipped"``) once a command of
its case exited 0: with an accepted configuration it would start a daemon. With
``$HOSTILE_DROP_TO`` (a uid and gid), the driver becomes that user before the cases.
It prints one JSON list (per case) of lists (per command) of ``{"code", "stdout",
"stderr"}``.

One interpreter for a hundred invocations keeps the hostile-config module's run time
low (an interpreter start costs ~0.35 s here); the module still runs a few command lines
as their own processes, to prove that this driver behaves like the real script.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import traceback
from typing import Any

#: Variables a case may set; every other HEARTBEAT_* variable is removed between cases.
CASE_VARIABLES = ("CREDENTIALS_DIRECTORY",)


def run_one(argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    from heartbeat.cli import main

    for name in list(os.environ):
        if name.upper().startswith("HEARTBEAT_") or name in CASE_VARIABLES:
            del os.environ[name]
    os.environ.update(env)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code: Any = main(argv)
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code
        except BaseException:
            code = "traceback"
            err.write(traceback.format_exc())
    return {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as handle:
        cases = json.load(handle)
    drop_to = os.environ.pop("HOSTILE_DROP_TO", None)
    if drop_to is not None:
        # Another user, for files that root could read whatever their mode. Everything
        # the commands import lazily is imported first, while the checkout is readable.
        import heartbeat.cli
        import heartbeat.cli.checkin
        import heartbeat.cli.commands
        import heartbeat.client
        import heartbeat.config.warnings
        import heartbeat.daemon  # noqa: F401

        os.setgroups([])
        os.setgid(int(drop_to))
        os.setuid(int(drop_to))
    results = []
    for case in cases:
        outcome: list[dict[str, Any]] = []
        for argv in case["commands"]:
            if argv[0] == "run" and any(result["code"] == 0 for result in outcome):
                outcome.append({"code": "skipped", "stdout": "", "stderr": ""})
            else:
                outcome.append(run_one(argv, case.get("env", {})))
        results.append(outcome)
    assert sys.__stdout__ is not None
    sys.__stdout__.write(json.dumps(results))


if __name__ == "__main__":
    main()
