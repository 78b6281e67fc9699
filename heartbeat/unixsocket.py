"""A listening Unix socket at a path, mode 0600 from the first moment it exists.

Owns creating and removing the control socket's file. bind() creates the file with
the process umask, and the umask is process-wide (changing it for a moment would race
with the state saver's thread creating files), so the socket is bound inside a fresh
0700 directory next to the target, chmod-ed to 0600 there, then renamed into place:
no other user can ever reach it with wider permissions.

A socket file already at the path is probed first: if a process accepts a connection
on it (another heartbeat with the same configuration) this refuses to start, if not it
is a stale file from a process that died, and it is replaced.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import tempfile
from pathlib import Path

from heartbeat.errors import ConfigError

#: Linux's sun_path holds 108 bytes, the terminating NUL included.
MAX_PATH_BYTES = 107
KEY = "control.socket"


def _check_existing(path: Path) -> None:
    """Raise ConfigError if ``path`` is in use; leave a stale socket to be replaced."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ConfigError(f"{path} exists and is not a socket", key=KEY)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except ConnectionRefusedError:
        return  # nobody listens: a stale file
    except OSError as exc:
        raise ConfigError(f"{path}: cannot check it: {exc.strerror or exc}", key=KEY) from None
    finally:
        probe.close()
    raise ConfigError(
        f"{path}: another process is serving on it (is heartbeat already running?)", key=KEY
    )


def bind_unix_socket(path: Path, backlog: int = 128) -> tuple[socket.socket, tuple[int, int]]:
    """A listening socket at ``path`` (mode 0600) and the file's (st_dev, st_ino).

    Raises ConfigError (key ``control.socket``) when the path is taken or unusable."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigError(f"cannot create {path.parent}: {exc.strerror or exc}", key=KEY) from None
    _check_existing(path)
    try:
        private = tempfile.mkdtemp(prefix=".", dir=path.parent)  # mode 0700
    except OSError as exc:
        raise ConfigError(
            f"cannot write in {path.parent}: {exc.strerror or exc}", key=KEY
        ) from None
    temporary = os.path.join(private, "s")
    if len(os.fsencode(temporary)) > MAX_PATH_BYTES:
        os.rmdir(private)
        raise ConfigError(f"{path} is too long for a Unix socket; choose a shorter path", key=KEY)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(temporary)
        os.chmod(temporary, 0o600)
        sock.listen(backlog)
        os.rename(temporary, path)
        st = os.lstat(path)
    except OSError as exc:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise ConfigError(f"cannot bind {path}: {exc.strerror or exc}", key=KEY) from None
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(private)
    sock.setblocking(False)
    return sock, (st.st_dev, st.st_ino)


def remove_unix_socket(path: Path, identity: tuple[int, int]) -> None:
    """Remove the socket file if it is still the one we bound (not a successor's)."""
    try:
        st = os.lstat(path)
        if (st.st_dev, st.st_ino) == identity:
            os.unlink(path)
    except OSError:
        pass
