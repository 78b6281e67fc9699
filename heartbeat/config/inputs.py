"""Checks on the raw inputs, before the models see them.

Owns two rules pydantic cannot express on its own:

- **TOML types are kept** (:func:`check_file_types`): a value from the file must already
  have its key's type. A TOML boolean is not a number, a TOML string is not a number or a
  boolean, a float is not an integer. The models themselves stay lax, because the
  environment's values are strings (``HEARTBEAT_SCHEDULE__INTERVAL=30``) and are parsed.
- **Every ``HEARTBEAT_*`` variable means something** (:func:`check_environment`): one
  that maps to no ``<SECTION>__<KEY>`` is an error naming it (a misspelt section is not
  silently ignored), and a list variable must be a JSON list.

It does not own the keys (heartbeat.config.sections), the order of loading, or the
wording of pydantic's own errors (heartbeat.config.loading).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date, datetime, time
from functools import cache
from typing import Any, get_args, get_origin

from pydantic import BaseModel, TypeAdapter, ValidationError

from heartbeat.config.model import ENV_PREFIX, Config
from heartbeat.config.redact import SECRET_BEARING_KEYS, SECRET_KEYS
from heartbeat.errors import ConfigError

#: Documented variables that are not ``<SECTION>__<KEY>`` overrides.
OTHER_VARIABLES = frozenset(
    {"HEARTBEAT_CONFIG", "HEARTBEAT_CONTROL_TOKEN", "HEARTBEAT_EMULATOR_API_KEY"}
)
#: The example each list variable's error shows.
LIST_EXAMPLES = {
    ("elasticsearch", "hosts"): '["https://es1:9200"]',
    ("jobs", "ids"): '["sync-job-id"]',
    ("discovery", "connector_ids"): '["my-connector"]',
}

_TYPE_NAMES = {
    "float_type": "a number",
    "int_type": "a whole number",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
}


def _sections() -> dict[str, type[BaseModel]]:
    sections = {}
    for name, field in Config.model_fields.items():
        model = field.annotation
        assert isinstance(model, type)
        assert issubclass(model, BaseModel)
        sections[name] = model
    return sections


@cache
def _adapter(section: str, key: str) -> TypeAdapter[Any]:
    # The bare type, without the key's constraints: those are checked by the model.
    annotation = _sections()[section].model_fields[key].annotation
    assert annotation is not None
    return TypeAdapter(annotation)


def _toml_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, (datetime, date, time)):
        return "a date or time"
    return type(value).__name__


def _has_datetime(value: Any) -> bool:
    if isinstance(value, (datetime, date, time)):
        return True
    if isinstance(value, list):
        return any(_has_datetime(item) for item in value)
    return False


def check_file_types(data: Mapping[str, Any], source: str) -> None:
    """Refuse a value whose TOML type is not its key's type (before any coercion)."""
    sections = _sections()
    for section, table in data.items():
        if section not in sections or not isinstance(table, Mapping):
            continue  # unknown sections and non-tables: the model's own error
        for key, value in table.items():
            if key not in sections[section].model_fields:
                continue
            name = f"{section}.{key}"
            shown = "" if key in SECRET_KEYS | SECRET_BEARING_KEYS else _shown(value)
            if _has_datetime(value):
                raise ConfigError(
                    f"{shown}expected {_expected(section, key)}, got {_toml_kind(value)}",
                    key=name,
                    source=source,
                )
            try:
                # JSON mode: a path or a secret may be a string, nothing is converted.
                _adapter(section, key).validate_json(json.dumps(value), strict=True)
            except ValidationError as exc:
                error = exc.errors(include_url=False)[0]
                if not error["type"].endswith("_type"):
                    continue  # the right type, a wrong value: the model words that
                expected = _TYPE_NAMES.get(error["type"], _expected(section, key))
                loc = error["loc"]
                where = "".join(f" (entry {part})" for part in loc if isinstance(part, int))
                got = _toml_kind(_at(value, loc))
                raise ConfigError(
                    f"{shown}expected {expected}{where}, got {got}",
                    key=name,
                    source=source,
                ) from None
            except ValueError:
                continue  # not representable as JSON (nan is): the model's own error


def _at(value: Any, loc: tuple[int | str, ...]) -> Any:
    for part in loc:
        if isinstance(part, int) and isinstance(value, list) and part < len(value):
            value = value[part]
    return value


def _shown(value: Any) -> str:
    if isinstance(value, (list, dict)):
        return ""
    text = repr(value) if isinstance(value, str) else str(value).lower()
    return (text[:77] + "...: ") if len(text) > 80 else f"{text}: "


def _expected(section: str, key: str) -> str:
    annotation = _sections()[section].model_fields[key].annotation
    args = [arg for arg in get_args(annotation) if arg is not type(None)] or [annotation]
    first = args[0]
    if get_origin(first) is list:
        return "a list"
    return {bool: "true or false", int: "a whole number", float: "a number"}.get(first, "a string")


def check_environment(environ: Mapping[str, str]) -> None:
    """Every ``HEARTBEAT_*`` variable is a known ``<SECTION>__<KEY>`` (or documented)."""
    sections = _sections()
    for variable in sorted(environ):
        upper = variable.upper()
        if not upper.startswith(ENV_PREFIX) or upper in OTHER_VARIABLES:
            continue
        section, sep, key = upper.removeprefix(ENV_PREFIX).lower().partition("__")
        if section not in sections:
            raise ConfigError(
                f"no such section {section!r} (sections: {', '.join(sections)})", key=variable
            )
        if not sep:
            raise ConfigError(
                f"must name a key too: {ENV_PREFIX}{section.upper()}__<KEY>", key=variable
            )
        if key not in sections[section].model_fields:
            raise ConfigError(f"no such key {key!r} in [{section}]", key=variable)
        example = LIST_EXAMPLES.get((section, key))
        if example is None and _expected(section, key) == "a list":
            example = '["..."]'
        if example is not None:
            try:
                parsed = json.loads(environ[variable])
            except ValueError:
                parsed = None
            if not isinstance(parsed, list):
                raise ConfigError(f"expected a JSON list, e.g. '{example}'", key=variable)
