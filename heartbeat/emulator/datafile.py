"""``heartbeat emulator --data PATH``: the jobs file, checked at start, replaced at exit.

Owns reading and writing the JSON list that :meth:`JobStore.export_jobs` gives. Every
problem is found before the emulator listens, so an emulator that starts can also save:
a path that is a directory, in a missing or read-only directory, unreadable, not UTF-8,
not JSON, or not a list of jobs is a :class:`DataFileError` with one line naming the
file and the problem. A file that was refused is never overwritten, and the file is
replaced atomically at exit (a temporary file renamed over it), so a crash while saving
never leaves half a file. It does not own serving: :mod:`heartbeat.emulator.server` does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from heartbeat.emulator.store import JOB_TYPES, STATUSES, JobStore
from heartbeat.errors import HeartbeatError

#: A field of one job, and whether it may be null.
_FIELDS = {
    "job_id": False,
    "connector_id": False,
    "job_type": False,
    "status": False,
    "worker_hostname": True,
}


class DataFileError(HeartbeatError):
    """A ``--data`` file the emulator cannot load or could not save."""


def load(path: Path, store: JobStore) -> int:
    """Check that ``path`` can be read and later replaced; load its jobs into ``store``.

    A missing file is an empty store (it is created at exit). Returns the jobs loaded."""
    where = f"--data {path}"
    directory = path.parent
    if not directory.is_dir():
        raise DataFileError(f"{where}: the directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise DataFileError(f"{where}: the directory {directory} is not writable")
    if path.is_dir():
        raise DataFileError(f"{where}: is a directory, not a file")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise DataFileError(f"{where}: cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DataFileError(f"{where}: not UTF-8 text") from None
    if not text.strip():
        return 0  # an empty file: no jobs yet
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFileError(
            f"{where}: not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    jobs = _checked(data, where)
    for job in jobs:
        store.create_job(**job)
    return len(jobs)


def _checked(data: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(data, list):
        raise DataFileError(f"{where}: expected a JSON list of jobs, got {_kind(data)}")
    seen: set[str] = set()
    jobs = []
    for n, job in enumerate(data):
        at = f"{where}: job {n}"
        if not isinstance(job, dict):
            raise DataFileError(f"{at}: expected an object, got {_kind(job)}")
        unknown = sorted(set(job) - set(_FIELDS))
        if unknown:
            raise DataFileError(f"{at}: unknown field {unknown[0]!r}")
        for name, nullable in _FIELDS.items():
            value = job.get(name)
            if value is None and nullable:
                continue
            if not isinstance(value, str):
                got = "missing" if name not in job else f"got {_kind(value)}"
                raise DataFileError(f"{at}: {name}: expected a string, {got}")
        if not job["job_id"]:
            raise DataFileError(f"{at}: job_id: is empty")
        if job["status"] not in STATUSES:
            raise DataFileError(f"{at}: status: {job['status']!r} is not one of {STATUSES}")
        if job["job_type"] not in JOB_TYPES:
            raise DataFileError(f"{at}: job_type: {job['job_type']!r} is not one of {JOB_TYPES}")
        if job["job_id"] in seen:
            raise DataFileError(f"{at}: job_id: {job['job_id']!r} appears twice")
        seen.add(job["job_id"])
        jobs.append({name: job.get(name) for name in _FIELDS})
    return jobs


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number" if isinstance(value, int | float) else "a value")


def save(path: Path, store: JobStore) -> None:
    """Replace ``path`` with the store's jobs, atomically. DataFileError on failure."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("w", encoding="utf-8") as out:
            json.dump(store.export_jobs(), out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise DataFileError(f"--data {path}: cannot save: {exc.strerror or exc}") from None
