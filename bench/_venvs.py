"""The venvs a start-up benchmark measures: what an operator runs, and the development one.

An operator installs the wheel (``pip install connector-heartbeat``): heartbeat and its
runtime dependencies, nothing else. The development venv (``.venv``, ``pip install -e
'.[dev]'``) also holds the test and packaging tools, and one of them changes what
heartbeat loads: twine pulls in ``rich``, and ``structlog.dev`` (imported by ``import
structlog``) imports ``rich`` whenever it is installed, some MB and tens of ms that no
operator pays. So start-up figures are measured in :func:`runtime_venv`.

:func:`runtime_venv` builds that venv from the checkout once and reuses it: a wheel
built from the checkout (``pip wheel --no-deps``), installed with its dependencies into
``bench/.cache/runtime-venv`` (ignored by git). It is rebuilt when the interpreter,
``pyproject.toml`` or a file under ``heartbeat/`` changes (a digest of them is kept in
the venv), and only heartbeat's wheel is reinstalled when just the sources changed.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
CACHE = Path(__file__).resolve().parent / ".cache"


def _digest(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def _sources_digest(checkout: Path) -> str:
    files = sorted(
        path
        for path in (checkout / "heartbeat").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    )
    return _digest(
        *(part for f in files for part in (str(f.relative_to(checkout)).encode(), f.read_bytes()))
    )


def _interpreter_digest(python: str, checkout: Path) -> str:
    version = subprocess.run(
        [python, "-c", "import sys; print(sys.version, sys.base_prefix)"],
        capture_output=True,
        check=True,
    ).stdout
    return _digest(version, (checkout / "pyproject.toml").read_bytes())


def _run(command: list[str]) -> None:
    """Run a set-up step quietly; its output only if it fails."""
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise RuntimeError(f"{' '.join(command)} exited {result.returncode}")


def runtime_venv(checkout: Path = CHECKOUT, python: str = sys.executable) -> Path:
    """A venv with heartbeat's wheel and its runtime dependencies only; returns its bin/."""
    venv = CACHE / "runtime-venv"
    bin_dir = venv / "bin"
    base_stamp, sources_stamp = venv / "base.sha256", venv / "sources.sha256"
    base, sources = _interpreter_digest(python, checkout), _sources_digest(checkout)
    fresh = not (bin_dir / "python").exists() or _read(base_stamp) != base
    if not fresh and _read(sources_stamp) == sources and (bin_dir / "heartbeat").exists():
        return bin_dir
    print(f"bench: {'building' if fresh else 'updating'} the runtime-only venv {venv}", flush=True)
    if fresh:
        sources_stamp.unlink(missing_ok=True)
        _run([python, "-m", "venv", "--clear", str(venv)])
        base_stamp.write_text(base)
    pip = [str(bin_dir / "python"), "-m", "pip", "--quiet", "--disable-pip-version-check"]
    with tempfile.TemporaryDirectory() as wheels:
        # A wheel, as an operator installs it (not editable, no extras).
        _run([*pip, "wheel", "--no-deps", "--wheel-dir", wheels, str(checkout)])
        (wheel,) = Path(wheels).glob("connector_heartbeat-*.whl")
        _run([*pip, "install", "--no-deps", "--force-reinstall", str(wheel)])
        _run([*pip, "install", str(wheel)])  # the dependencies
    sources_stamp.write_text(sources)
    return bin_dir


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def dev_venv() -> Path:
    """The venv this benchmark runs in (``.venv`` under ``make bench``); returns its bin/."""
    return Path(sys.executable).parent
