"""heartbeat: keeps Elasticsearch connector sync jobs alive by checking them in.

The public API for embedding::

    from heartbeat import Heartbeat, load_config

    async with Heartbeat(load_config(path)) as hb:
        hb.watch("sync-job-id")
"""

from heartbeat._version import __version__
from heartbeat.config import Config
from heartbeat.config import load as load_config
from heartbeat.daemon import Heartbeat
from heartbeat.errors import ConfigError, HeartbeatError, InvalidJobId
from heartbeat.scheduler import JobView

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
