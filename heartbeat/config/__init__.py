"""Settings: the TOML file, environment overrides, validation, secrets.

Owns turning ``--config PATH`` (default ``$HEARTBEAT_CONFIG``, else
``/etc/heartbeat/heartbeat.toml``) plus ``HEARTBEAT_<SECTION>__<KEY>`` environment
variables into one validated, immutable :class:`Config`, or a :class:`ConfigError`
that names the file, the key and the problem. Section and key names are a public
contract: add keys, never rename them.

Secrets (API key, password, bearer token) are ``SecretStr``: they print as
``'**********'`` in reprs and in ``heartbeat validate``. ``*_file`` keys are read here,
once, with ``$VARIABLES`` expanded, so ``api_key_file =
"${CREDENTIALS_DIRECTORY}/api_key"`` works with systemd's ``LoadCredential=``.
It does not open network connections or touch the watch list.

One module per concern; import from ``heartbeat.config``, which re-exports them all:

- ``fields``: shared annotated types and pure parsers (``host:port``, ``k/N``, Redis URL
  password, cloud ID);
- ``sections``: one model per ``[section]``, with its defaults and one-section rules;
- ``model``: the root :class:`Config` and how the environment overrides the file;
- ``secret_files``: reading the ``*_file`` keys and systemd credentials;
- ``inputs``: the raw inputs before the models see them (TOML types kept, every
  ``HEARTBEAT_*`` variable known, list variables JSON);
- ``checks``: rules that span sections or need a resolved secret;
- ``tls``: the TLS context, built (every file it names read) while checking;
- ``warnings``: legal but risky settings, warned about by ``run`` and ``validate``;
- ``loading``: finding and parsing the file, :func:`build` and :func:`load`, and the
  wording of a :class:`ConfigError`;
- ``redact``: which keys are secret, and the redacted forms for output.
"""

from heartbeat.config.checks import MIN_TOKEN_LENGTH, usable_token
from heartbeat.config.elasticsearch import ElasticsearchSettings
from heartbeat.config.fields import (
    FilePath,
    ListenAddress,
    PositiveFloat,
    decode_cloud_id,
    is_loopback,
    parse_listen,
    parse_shard,
    url_password,
)
from heartbeat.config.loading import DEFAULT_PATH, ENV_PATH, build, config_path, load, read_file
from heartbeat.config.model import ENV_PREFIX, Config
from heartbeat.config.redact import (
    REDACTED,
    SECRET_BEARING_KEYS,
    SECRET_KEYS,
    holds_secret,
    redact_url,
    redacted,
    world_readable,
)
from heartbeat.config.sections import (
    MAX_SOCKET_PATH,
    BackoffSettings,
    ControlSettings,
    DiscoverySettings,
    JobsSettings,
    LoggingSettings,
    MetricsSettings,
    QueueSettings,
    ScheduleSettings,
    StateSettings,
    WorkerSettings,
)

__all__ = [
    "DEFAULT_PATH",
    "ENV_PATH",
    "ENV_PREFIX",
    "MAX_SOCKET_PATH",
    "MIN_TOKEN_LENGTH",
    "REDACTED",
    "SECRET_BEARING_KEYS",
    "SECRET_KEYS",
    "BackoffSettings",
    "Config",
    "ControlSettings",
    "DiscoverySettings",
    "ElasticsearchSettings",
    "FilePath",
    "JobsSettings",
    "ListenAddress",
    "LoggingSettings",
    "MetricsSettings",
    "PositiveFloat",
    "QueueSettings",
    "ScheduleSettings",
    "StateSettings",
    "WorkerSettings",
    "build",
    "config_path",
    "decode_cloud_id",
    "holds_secret",
    "is_loopback",
    "load",
    "parse_listen",
    "parse_shard",
    "read_file",
    "redact_url",
    "redacted",
    "url_password",
    "usable_token",
    "world_readable",
]
