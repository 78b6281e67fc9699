"""``[elasticsearch]``: where the cluster is, how to authenticate, and TLS.

Owns the section's keys, types and defaults and the rules that need only this
section: a host is a URL without credentials, exactly one way to authenticate (and
a secret given once, inline or as a file), a usable fingerprint. It does not read the
``*_file`` secrets (heartbeat.config.secret_files), build the TLS context
(heartbeat.config.tls) or check it against other sections (heartbeat.config.checks).
Key names are a public contract: add keys, never rename them.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from heartbeat.config.fields import (
    FilePath,
    HeaderSecret,
    PositiveFloat,
    Secret,
    Section,
    base_url_problem,
    decode_cloud_id,
    secret_problem,
)


class ElasticsearchSettings(Section):
    hosts: list[str] = Field(default_factory=lambda: ["https://localhost:9200"], min_length=1)
    cloud_id: str | None = None
    api_key: HeaderSecret | None = None
    api_key_file: FilePath | None = None
    username: str | None = None
    password: Secret | None = None
    password_file: FilePath | None = None
    bearer_token: HeaderSecret | None = None
    bearer_token_file: FilePath | None = None
    ca_certs: FilePath | None = None
    verify_certs: bool = True
    ssl_assert_fingerprint: str | None = None
    client_cert: FilePath | None = None
    client_key: FilePath | None = None
    request_timeout: PositiveFloat = 10.0
    #: The cluster heartbeat expects (``GET /``'s ``cluster_uuid``); unset: the first one
    #: seen, remembered in the state file. A host of another cluster is never trusted
    #: with a drop (heartbeat.identity).
    cluster_uuid: str | None = Field(default=None, min_length=1, max_length=128)

    @field_validator("hosts")
    @classmethod
    def _hosts_are_urls(cls, hosts: list[str]) -> list[str]:
        cleaned = []
        for index, host in enumerate(hosts):
            if "@" in host.partition("://")[2].partition("/")[0]:
                # Never echoed: it holds a password.
                raise ValueError(
                    f"entry {index} carries credentials (user:password@); "
                    "use username and password_file instead"
                )
            if any(not char.isprintable() or char.isspace() for char in host):
                raise ValueError(f"entry {index} holds a space or a control character")
            problem = base_url_problem(host)
            if problem is not None:
                raise ValueError(f"{host!r} {problem}")
            cleaned.append(host.rstrip("/"))
        return cleaned

    @field_validator("username")
    @classmethod
    def _username(cls, value: str | None) -> str | None:
        if value is not None and (problem := secret_problem(value, in_header=False)):
            raise ValueError(problem)
        if value is not None and ":" in value:
            raise ValueError("cannot contain ':' (HTTP basic authentication)")
        return value

    @field_validator("ssl_assert_fingerprint")
    @classmethod
    def _fingerprint(cls, value: str | None) -> str | None:
        if not value:
            return None
        digits = value.replace(":", "").strip().lower()
        try:
            raw = bytes.fromhex(digits)
        except ValueError:
            raise ValueError("must be hexadecimal (colons allowed)") from None
        if len(raw) != 32:
            raise ValueError(f"must be a SHA-256 fingerprint (32 bytes), got {len(raw)} bytes")
        return digits

    @model_validator(mode="after")
    def _one_way_in(self) -> ElasticsearchSettings:
        if self.cloud_id and "hosts" in self.model_fields_set:
            raise ValueError("set either hosts or cloud_id, not both")
        forms = [
            name
            for name, present in (
                ("api_key", self.api_key or self.api_key_file),
                ("username/password", self.username or self.password or self.password_file),
                ("bearer_token", self.bearer_token or self.bearer_token_file),
            )
            if present
        ]
        if len(forms) > 1:
            raise ValueError(f"set exactly one way to authenticate, not {' and '.join(forms)}")
        if self.api_key and self.api_key_file:
            raise ValueError("set api_key or api_key_file, not both")
        if self.password and self.password_file:
            raise ValueError("set password or password_file, not both")
        if self.bearer_token and self.bearer_token_file:
            raise ValueError("set bearer_token or bearer_token_file, not both")
        if (self.password or self.password_file) and not self.username:
            raise ValueError("password needs username")
        if self.username and not (self.password or self.password_file):
            raise ValueError("username needs password or password_file")
        if self.client_key and not self.client_cert:
            raise ValueError("client_key needs client_cert")
        return self

    def urls(self) -> list[str]:
        """The base URLs to try, in order (``cloud_id`` decoded when set)."""
        if self.cloud_id:
            return [decode_cloud_id(self.cloud_id)]
        return list(self.hosts)
