"""systemd integration: the sd_notify(3) protocol, without libsystemd.

Owns the datagrams heartbeat sends to the service manager on ``$NOTIFY_SOCKET`` and
the reading of ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID``. It does not
decide *when* to send them (the daemon does, see below), it does not keep a timer
(the scheduler calls :meth:`Notifier.watchdog`), and it never talks to D-Bus or the
journal. The unit files that rely on it live in ``systemd/`` at the top of the repo.

Contract with the daemon, matching ``Type=notify``, ``WatchdogSec=30`` and
``ExecReload=/bin/kill -HUP $MAINPID`` in ``systemd/heartbeat.service``::

    notifier = Notifier.from_env()
    # load the config, start the sources; a config error exits 78 before ready().
    # Until ready(), TimeoutStartSec= (90 s by default) bounds the start-up.
    notifier.ready(status="watching 0 jobs")        # once: the unit becomes "active"
    notifier.status("watching 812 jobs, 0 failing") # periodically, one line
    # from the scheduler loop, every notifier.watchdog_interval() s when not None
    # (15 s), from ready() until stopping(), reloads included:
    notifier.watchdog()        # a keep-alive missed for 30 s: SIGABRT, then a restart
    # on SIGHUP:
    notifier.reloading()       # the unit shows "reloading"...
    notifier.ready(status=...) # ...until the new config is in force (or was rejected)
    # on SIGTERM / shutdown, before draining in-flight check-ins:
    notifier.stopping()

On systemd 252 (Debian 12) ``systemctl reload`` returns as soon as ``kill`` has
sent the signal; it does not wait for the ``ready()`` that ends the reload.

Every method is a cheap no-op when ``NOTIFY_SOCKET`` is unset (running by hand, in
tests, under another supervisor). A send that fails never raises: it is logged once as
``sd_notify_failed`` (again only after a send has succeeded in between) and the daemon
carries on, because a heartbeat that dies for want of a status line would be worse than
one that systemd cannot see.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

import structlog

__all__ = ["MAX_STATUS_BYTES", "Notifier"]

# systemd reads notifications into a PIPE_BUF (4096-byte) buffer and drops a longer
# datagram whole, so a runaway status line must not cost us READY=1 next to it.
MAX_STATUS_BYTES = 1024


class Notifier:
    """Sends sd_notify(3) state changes to the service manager.

    Build it with :meth:`from_env`. Each call opens a socket, sends one datagram and
    closes it, as libsystemd's ``sd_notify()`` does: nothing to close, nothing to
    leak across ``fork``, and a restarted manager is picked up on the next call.
    """

    def __init__(
        self,
        address: str | None,
        *,
        watchdog_usec: int | None = None,
    ) -> None:
        """``address`` is the socket address as ``sendto`` wants it (a leading NUL
        for the abstract namespace) or None to disable; ``watchdog_usec`` is the
        keep-alive deadline that applies to *this* process, or None."""
        self._address = address
        self._watchdog_usec = watchdog_usec
        self._failing = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        """Read ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` like
        ``sd_notify()`` and ``sd_watchdog_enabled()`` do.

        ``NOTIFY_SOCKET`` is a filesystem path or, when it starts with ``@``, a name in
        the abstract namespace. The watchdog applies only when ``WATCHDOG_USEC`` is a
        positive integer and ``WATCHDOG_PID`` is unset or this process's PID (a child
        that inherited the environment must not keep its parent "alive").
        """
        raw = environ.get("NOTIFY_SOCKET", "")
        address: str | None
        if not raw:
            address = None
        elif raw.startswith("@"):
            address = "\0" + raw[1:]
        elif raw.startswith("/"):
            address = raw
        else:
            # e.g. "vsock:..." (systemd >= 254, VMs): we only speak AF_UNIX. A relative
            # path would resolve against our working directory, never the manager's.
            _log_failure("unsupported NOTIFY_SOCKET address", socket=raw)
            address = None
        return cls(address, watchdog_usec=_watchdog_usec(environ))

    @property
    def enabled(self) -> bool:
        """True when a service manager is listening (``NOTIFY_SOCKET`` was set)."""
        return self._address is not None

    def watchdog_interval(self) -> float | None:
        """Seconds between :meth:`watchdog` calls: half of ``WATCHDOG_USEC``, as
        sd_watchdog_enabled(3) advises; None when systemd expects no keep-alives."""
        if self._address is None or self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 2 / 1_000_000

    def ready(self, status: str | None = None) -> None:
        """Startup (or a reload) is complete: ``READY=1``, optionally with a status."""
        if status is None:
            self.notify("READY=1")
        else:
            self.notify("READY=1", _status_assignment(status))

    def status(self, text: str) -> None:
        """A one-line summary for ``systemctl status`` (newlines become spaces)."""
        self.notify(_status_assignment(text))

    def watchdog(self) -> None:
        """Keep-alive: ``WATCHDOG=1``. Sent only when :meth:`watchdog_interval` is
        not None, so a process the watchdog is not for never feeds it."""
        if self.watchdog_interval() is not None:
            self.notify("WATCHDOG=1")

    def reloading(self) -> None:
        """A reload has started: ``RELOADING=1`` with ``MONOTONIC_USEC``, which
        systemd >= 253 requires to tell this reload from an earlier one."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        """Shutdown has started: ``STOPPING=1``."""
        self.notify("STOPPING=1")

    def notify(self, *assignments: str) -> None:
        """Send ``VARIABLE=value`` assignments in one datagram, newline-separated.

        Raises ValueError for a malformed assignment (a programming error); never
        raises because the send failed.
        """
        for assignment in assignments:
            if "=" not in assignment or "\n" in assignment or "\0" in assignment:
                raise ValueError(f"not a one-line VARIABLE=value assignment: {assignment!r}")
        if self._address is None or not assignments:
            return
        datagram = "\n".join(assignments).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                # A full manager queue must cost us a lost datagram, never a blocked loop.
                sock.setblocking(False)
                sock.sendto(datagram, self._address)
        except OSError as exc:
            if not self._failing:
                self._failing = True
                _log_failure(
                    str(exc),
                    socket=_printable(self._address),
                    errno=exc.errno,
                    variables=[assignment.partition("=")[0] for assignment in assignments],
                )
        else:
            self._failing = False

    def __repr__(self) -> str:
        address = None if self._address is None else _printable(self._address)
        return f"Notifier(address={address!r}, watchdog_usec={self._watchdog_usec!r})"


def _watchdog_usec(environ: Mapping[str, str]) -> int | None:
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = environ.get("WATCHDOG_PID")
    if pid is not None:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec


def _status_assignment(text: str) -> str:
    # systemd ignores a datagram with an embedded NUL and reads a newline as the end
    # of the assignment, so both become spaces; the length cap is on UTF-8 bytes.
    line = " ".join(text.replace("\0", " ").splitlines()).strip()
    encoded = line.encode()
    if len(encoded) > MAX_STATUS_BYTES:
        line = encoded[: MAX_STATUS_BYTES - 3].decode(errors="ignore") + "..."
    return f"STATUS={line}"


def _printable(address: str) -> str:
    return "@" + address[1:] if address.startswith("\0") else address


def _log_failure(error: str, **fields: object) -> None:
    # Looked up per call, not cached at import: it is the rare path, and a fresh
    # logger honours the configuration in force (including capture_logs in tests).
    structlog.get_logger("heartbeat.systemd").warning("sd_notify_failed", error=error, **fields)
