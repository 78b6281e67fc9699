"""The root :class:`Config`: every section, and how the environment overrides the file.

Owns which sections make up the configuration and the ``HEARTBEAT_<SECTION>__<KEY>``
environment overrides (pydantic-settings): the environment wins over the file, which
comes in as keyword arguments. It does not own the sections' keys
(heartbeat.config.sections), reading the file or ``*_file`` secrets, or wording errors
(heartbeat.config.loading): build a :class:`Config` with
:func:`heartbeat.config.load`, or directly in code.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from heartbeat.config.elasticsearch import ElasticsearchSettings
from heartbeat.config.sections import (
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

ENV_PREFIX = "HEARTBEAT_"


class Config(BaseSettings):
    """The whole configuration. Build it with :func:`load`, or directly in code."""

    model_config = SettingsConfigDict(
        extra="forbid",
        frozen=True,
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        nested_model_default_partial_update=True,
    )

    elasticsearch: ElasticsearchSettings = Field(default_factory=ElasticsearchSettings)
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)
    backoff: BackoffSettings = Field(default_factory=BackoffSettings)
    jobs: JobsSettings = Field(default_factory=JobsSettings)
    state: StateSettings = Field(default_factory=StateSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    discovery: DiscoverySettings = Field(default_factory=DiscoverySettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    control: ControlSettings = Field(default_factory=ControlSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file (passed in as init kwargs).
        return (env_settings, init_settings)
