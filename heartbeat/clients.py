"""The Elasticsearch clients of one Heartbeat: the one in use, and those a reload retired.

Owns building a :class:`~heartbeat.client.Client` for a configuration (its secrets
registered with the log scrubber first; every client shares the one
:class:`~heartbeat.identity.ClusterIdentity`, which outlives them), whether a new
configuration needs a new client (``[elasticsearch]`` or ``max_in_flight`` changed),
swapping one in, and closing them all at exit. A retired client's in-flight requests
finish on its own session; it is closed at the next swap, or at exit. It does not speak
HTTP itself (:mod:`heartbeat.client` does) and does not decide when to reload
(:mod:`heartbeat.reload` does).
"""

from __future__ import annotations

from heartbeat import logs
from heartbeat.client import Client
from heartbeat.config import Config
from heartbeat.identity import ClusterIdentity

__all__ = ["Clients", "register_secrets"]


def register_secrets(config: Config) -> None:
    """Keep ``[elasticsearch]``'s credentials out of every log line."""
    es = config.elasticsearch
    for secret in (es.api_key, es.password, es.bearer_token):
        if secret is not None:
            logs.register_secret(secret.get_secret_value())


class Clients:
    """The client in use (:attr:`current`) and the ones it replaced."""

    def __init__(self, config: Config, identity: ClusterIdentity) -> None:
        self.identity = identity
        self.current = self._build(config)
        self.identity.forget([host.url for host in self.current.pool.hosts])
        self._retired: list[Client] = []

    def _build(self, config: Config) -> Client:
        register_secrets(config)
        return Client(
            config.elasticsearch,
            max_in_flight=config.schedule.max_in_flight,
            identity=self.identity,
        )

    async def prepare(self, old: Config, new: Config) -> Client | None:
        """The client ``new`` needs, opened (its TLS context built), or None when the one
        in use will do. Raises ConfigError; nothing in use is touched."""
        if (
            old.elasticsearch == new.elasticsearch
            and old.schedule.max_in_flight == new.schedule.max_in_flight
        ):
            return None
        client = self._build(new)
        try:
            await client.open()
        except BaseException:
            await client.close()
            raise
        return client

    async def swap(self, client: Client, cluster_uuid: str | None) -> None:
        """Put ``client`` (from :meth:`prepare`) in use, expecting ``cluster_uuid``."""
        self.identity.pin(cluster_uuid)
        self.identity.forget([host.url for host in client.pool.hosts])
        for retired in self._retired:
            await retired.close()
        self._retired = [self.current]
        self.current = client

    async def close(self) -> None:
        for client in (*self._retired, self.current):
            await client.close()
