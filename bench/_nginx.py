"""nginx as the benchmarks' Elasticsearch stand-in: a C server that is never the bottleneck.

Serves every request as ``bench/_stub.py`` does, the answer Elasticsearch gives to a
successful check-in: HTTP 200, ``{"result":"updated"}``, ``Content-Type:
application/json`` and ``X-Elastic-Product: Elasticsearch``, with keep-alive
connections that are never closed under a benchmark. One worker process, no access
log. nginx comes from the system (package ``nginx-light``, which ``make bench``
installs through ``scripts/system-packages bench`` where it is missing).

``running_nginx()`` starts it on a free loopback port with its own prefix directory (a
temporary one: nothing outside it is read or written) and yields it; ``stats(nginx)``
answers what the stub's ``/_stub/stats`` does: requests served (from nginx's
``stub_status``) and the server's CPU seconds (master and worker, from ``/proc``).
:func:`running_server` starts either server by name, for benchmarks that run both.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _stub import running_stub, stop, stub_stats

#: The servers a benchmark can run against, in the order they run.
SERVERS = ("stub", "nginx")

CONFIG = """\
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 600s;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=1024;
        location = /_stub/stats {{
            stub_status;
        }}
        location / {{
            default_type application/json;
            add_header X-Elastic-Product Elasticsearch always;
            return 200 '{{"result":"updated"}}';
        }}
    }}
}}
"""


@dataclass(frozen=True)
class Nginx:
    url: str
    master: int

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.master}/task/{self.master}/children")
        return [int(pid) for pid in children.read_text().split()]


def nginx_binary() -> str:
    # /usr/sbin is not on every user's PATH.
    found = shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
    if found is None:
        raise RuntimeError("no nginx: run scripts/system-packages bench (nginx-light)")
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def running_nginx() -> Iterator[Nginx]:
    """Start nginx on a free loopback port; yield it; stop it at the end."""
    binary = nginx_binary()
    prefix = Path(tempfile.mkdtemp(prefix="hb-nginx-"))
    port = free_port()
    (prefix / "nginx.conf").write_text(CONFIG.format(prefix=prefix, port=port))
    config, errors = prefix / "nginx.conf", prefix / "error.log"
    proc = subprocess.Popen(
        [binary, "-p", str(prefix), "-c", str(config), "-e", str(errors)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                error = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"nginx did not start: {error.strip()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("nginx did not listen within 10 s")
            time.sleep(0.05)
        yield Nginx(url=f"http://127.0.0.1:{port}", master=proc.pid)
    finally:
        stop(proc)
        shutil.rmtree(prefix, ignore_errors=True)


def server_cpu(server: Nginx) -> float:
    """CPU seconds (user + system) of nginx's master and workers so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in (server.master, *server.worker_pids()):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def stats(server: Nginx) -> dict[str, Any]:
    """``{"requests": n, "cpu_s": seconds}`` so far (a blocking call)."""
    with urllib.request.urlopen(f"{server.url}/_stub/stats", timeout=5) as answer:  # noqa: S310
        text = answer.read().decode()
    # "Active connections: 1 \nserver accepts handled requests\n 1 1 1 \n..."
    requests = int(text.splitlines()[2].split()[2])
    return {"requests": requests, "cpu_s": server_cpu(server)}


@contextlib.contextmanager
def running_server(name: str) -> Iterator[tuple[str, Callable[[], dict[str, Any]], str]]:
    """(base URL, a stats() callable, a description) of the server ``name`` in SERVERS."""
    if name == "stub":
        with running_stub() as url:
            yield url, lambda: stub_stats(url), "bench/_stub.py: aiohttp, separate process"
    elif name == "nginx":
        with running_nginx() as server:
            yield server.url, lambda: stats(server), "nginx, one worker process"
    else:
        raise ValueError(f"unknown server {name!r}; one of {SERVERS}")
