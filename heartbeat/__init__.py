"""heartbeat: keeps Elasticsearch connector sync jobs alive by checking them in.

The public API for embedding::

    from heartbeat import Heartbeat, load_config

    async with Heartbeat(load_config(path)) as hb:
        hb.watch("sync-job-id")

The names are imported on first use (PEP 562), not with the package: ``heartbeat
--version`` and ``--help`` need none of aiohttp, pydantic or prometheus_client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from heartbeat._version import __version__

if TYPE_CHECKING:
    from heartbeat.config import Config
    from heartbeat.config import load as load_config
    from heartbeat.daemon import Heartbeat
    from heartbeat.errors import ConfigError, HeartbeatError, InvalidJobId
    from heartbeat.watchlist import JobView

__all__ = [
    "Config",
    "ConfigError",
    "Heartbeat",
    "HeartbeatError",
    "InvalidJobId",
    "JobView",
    "__version__",
    "load_config",
]

#: Public name -> (module, attribute in it).
_LAZY = {
    "Config": ("heartbeat.config", "Config"),
    "ConfigError": ("heartbeat.errors", "ConfigError"),
    "Heartbeat": ("heartbeat.daemon", "Heartbeat"),
    "HeartbeatError": ("heartbeat.errors", "HeartbeatError"),
    "InvalidJobId": ("heartbeat.errors", "InvalidJobId"),
    "JobView": ("heartbeat.watchlist", "JobView"),
    "load_config": ("heartbeat.config", "load"),
}


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'heartbeat' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # once imported, a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
