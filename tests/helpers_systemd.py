"""A stand-in for systemd's notification socket, for tests.

``notify_socket(tmp_path)`` binds a real AF_UNIX datagram socket (a path under
``tmp_path``, or an abstract ``@name`` with ``abstract=True``), receives on a thread,
and records each datagram with its arrival time and the sender's PID (from
SCM_CREDENTIALS, the same check systemd's ``NotifyAccess=main`` makes). Use it as a
sync or async context manager::

    with notify_socket(tmp_path) as sd:
        proc = subprocess.Popen([...], env={**os.environ, **sd.env(WATCHDOG_USEC="2000000")})
        ready = sd.wait_for("READY", timeout=10)
        assert ready.pid == proc.pid

    async with notify_socket(tmp_path) as sd:
        with anyio.fail_after(10):
            await sd.wait_for_async("STOPPING")
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import anyio

_UCRED = struct.Struct("iII")  # struct ucred: pid_t pid; uid_t uid; gid_t gid
_MAX_DATAGRAM = 4096  # systemd's NOTIFY_BUFFER_MAX (PIPE_BUF)


@dataclass(frozen=True)
class NotifyMessage:
    """One datagram as the service manager would have received it."""

    raw: bytes
    received_at: float  # time.monotonic()
    pid: int | None  # sender, from SCM_CREDENTIALS

    @property
    def text(self) -> str:
        return self.raw.decode()

    @property
    def fields(self) -> dict[str, str]:
        """``{"READY": "1", "STATUS": "..."}``; the last assignment of a name wins."""
        pairs = (line.partition("=") for line in self.text.split("\n") if line)
        return {name: value for name, _, value in pairs}


class NotifySocket:
    """A bound notification socket and the messages received on it so far."""

    def __init__(self, address: str) -> None:
        self.address = address  # the NOTIFY_SOCKET value: a path, or "@name"
        bind_to = "\0" + address[1:] if address.startswith("@") else address
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self._sock.bind(bind_to)
        self._sock.settimeout(0.05)
        self._messages: list[NotifyMessage] = []
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="notify-socket", daemon=True)

    def env(self, **extra: str) -> dict[str, str]:
        """``{"NOTIFY_SOCKET": address, **extra}``, to merge into a child's env."""
        return {"NOTIFY_SOCKET": self.address, **extra}

    @property
    def messages(self) -> list[NotifyMessage]:
        with self._changed:
            return list(self._messages)

    def wait_for(
        self, name: str, value: str | None = None, *, timeout: float = 5.0
    ) -> NotifyMessage:
        """Block until a message (received before or after the call) assigns
        ``name`` (``=value`` if given); TimeoutError otherwise."""
        with self._changed:
            found = self._changed.wait_for(lambda: self._find(name, value), timeout=timeout)
        if found is None:
            raise TimeoutError(f"no {name}={value or '*'} in {self.messages!r}")
        return found

    async def wait_for_async(self, name: str, value: str | None = None) -> NotifyMessage:
        """:meth:`wait_for` without blocking the event loop; bound it with
        ``anyio.fail_after``."""
        while True:
            with self._changed:
                found = self._find(name, value)
            if found is not None:
                return found
            await anyio.sleep(0.01)

    def _find(self, name: str, value: str | None) -> NotifyMessage | None:
        for message in self._messages:
            fields = message.fields
            if name in fields and (value is None or fields[name] == value):
                return message
        return None

    def _receive(self) -> None:
        cmsg_space = socket.CMSG_SPACE(_UCRED.size)
        while not self._stop.is_set():
            try:
                raw, ancillary, _flags, _addr = self._sock.recvmsg(_MAX_DATAGRAM, cmsg_space)
            except TimeoutError:
                continue
            except OSError:
                return
            pid = None
            for level, kind, data in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = _UCRED.unpack(data[: _UCRED.size])[0]
            message = NotifyMessage(raw=raw, received_at=time.monotonic(), pid=pid)
            with self._changed:
                self._messages.append(message)
                self._changed.notify_all()

    def start(self) -> NotifySocket:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._sock.close()
        if not self.address.startswith("@"):
            Path(self.address).unlink(missing_ok=True)

    def __enter__(self) -> NotifySocket:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> NotifySocket:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def notify_socket(tmp_path: Path, *, abstract: bool = False) -> NotifySocket:
    """Bind a notification socket (under ``tmp_path``, or abstract) and start
    receiving; use the result as a context manager so it is closed."""
    if abstract:
        address = f"@heartbeat-test-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    else:
        address = str(tmp_path / "notify.sock")
        # sun_path holds 108 bytes; pytest's tmp_path is normally far shorter.
        assert len(os.fsencode(address)) < 108, f"socket path too long: {address}"
    return NotifySocket(address).start()
