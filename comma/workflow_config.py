"""The workflow's config before any rule reads it: values from the command line typed as the
schema says, then the schema check (rules/common.smk calls :func:`prepare_config`).

``snakemake --config seeds=[1,2]`` parses the YAML structure of a value but hands its scalars
over as strings (``['1', '2']``, ``{'dropout': '0.3'}``), which the schema then rejects. Where
the schema expects a number, boolean or null and finds a string, the string is read as YAML;
a string the schema expects stays a string, so no checksum or name is ever reinterpreted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

__all__ = ["coerce_to_schema", "prepare_config"]

_SCALARS = {"integer": int, "number": (int, float), "boolean": bool, "null": type(None)}


def _resolve(schema: dict, root: dict) -> dict:
    while isinstance(schema, dict) and "$ref" in schema:
        node: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema if isinstance(schema, dict) else {}


def _types(schema: dict) -> set[str]:
    kind = schema.get("type")
    return {kind} if isinstance(kind, str) else set(kind or ())


def _coerce_scalar(value: str, schema: dict) -> Any:
    types = _types(schema)
    if "string" in types or not types & set(_SCALARS):
        return value
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        return value  # the schema check names the key and what it expected
    for kind in types & set(_SCALARS):
        wanted = _SCALARS[kind]
        if isinstance(parsed, wanted) and not (kind != "boolean" and isinstance(parsed, bool)):
            return parsed
    return value


def coerce_to_schema(value: Any, schema: dict, root: dict | None = None) -> Any:
    """`value` with every string leaf that the schema types as a number, boolean or null read
    as YAML (in place for dicts and lists; returns the value)."""
    root = schema if root is None else root
    schema = _resolve(schema, root)
    for alternative in schema.get("anyOf", []) + schema.get("oneOf", []):
        value = coerce_to_schema(value, alternative, root)
    if isinstance(value, str):
        return _coerce_scalar(value, schema)
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key in list(value):
            sub = properties.get(key, extra if isinstance(extra, dict) else None)
            if sub is not None:
                value[key] = coerce_to_schema(value[key], sub, root)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for k, item in enumerate(value):
            value[k] = coerce_to_schema(item, schema["items"], root)
    return value


def prepare_config(config: dict, schema_path: str | Path) -> dict:
    """Type the command line's values by the schema at `schema_path` (in place); returns
    `config`. The caller validates it afterwards."""
    schema = yaml.safe_load(Path(schema_path).read_text(encoding="utf-8"))
    return coerce_to_schema(config, schema)
