"""Compatibility of contract schemas across versions, checked against `compat.lock.json`.

The lock records, for each `schema@major`, every field path with its JSON type, whether it is
required, and the values of its enums. Within one major a schema may only grow backward
compatibly, so every message ever written under that major still validates:

- allowed with a minor bump: a new optional field, a new enum value;
- a major bump (a new `<name>.v<N+1>.json`, the old file stays): removing, renaming or retyping
  any field, making a field required or optional, adding a required field, dropping an enum value.

A new major starts its own lock entry; old majors keep theirs and their schema files.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

LOCK_COMMENT = (
    "Required and optional fields, JSON types and enum values of every schema@major. "
    "Regenerate with `python -m tradeos_lab.contracts.export`; it refuses incompatible changes."
)


@dataclass(frozen=True)
class Field:
    """One field path of a schema, flattened."""

    type: str
    required: bool
    parent: str
    enum: tuple[str, ...] = ()


def schema_key(schema: Mapping[str, Any]) -> str:
    """`name@major` of a schema document, from its `x-schema` and `x-version`."""
    return f"{schema['x-schema']}@{_version(schema['x-version'])[0]}"


def flatten(schema: Mapping[str, Any]) -> dict[str, Field]:
    """Every field path of `schema` (`payload.modifiers[].name`, `payload.features{}`)."""
    out: dict[str, Field] = {}
    _walk_object(schema, schema, "", out)
    return out


def lock_entry(schema: Mapping[str, Any]) -> dict[str, Any]:
    """What the lock records for one schema document."""
    fields = flatten(schema)
    return {
        "version": schema["x-version"],
        "stream": schema.get("x-stream"),
        "required": {p: f.type for p, f in fields.items() if f.required},
        "optional": {p: f.type for p, f in fields.items() if not f.required},
        "enums": {p: list(f.enum) for p, f in fields.items() if f.enum},
    }


def updated_lock(lock: Mapping[str, Any], schemas: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """`lock` with the entries of `schemas` replaced; entries of other schemas kept."""
    entries = dict(lock.get("schemas", {}))
    for schema in schemas:
        entries[schema_key(schema)] = lock_entry(schema)
    return {"comment": LOCK_COMMENT, "schemas": dict(sorted(entries.items()))}


def check_compatibility(schemas: Iterable[Mapping[str, Any]], lock: Mapping[str, Any]) -> list[str]:
    """Every incompatible change of `schemas` against `lock`; an empty list means compatible."""
    problems: list[str] = []
    current: dict[str, Mapping[str, Any]] = {}
    for schema in schemas:
        key = schema_key(schema)
        if key in current:
            problems.append(f"{key}: two schema documents claim this schema and major")
        current[key] = schema
    locked: Mapping[str, Any] = lock.get("schemas", {})
    for key, entry in locked.items():
        if key not in current:
            problems.append(f"{key}: in the lock but its schema file is gone (old majors stay)")
            continue
        problems.extend(f"{key}: {p}" for p in _compare(entry, current[key]))
    return problems


def _compare(entry: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    fields = flatten(schema)
    locked: dict[str, str] = {**entry["optional"], **entry["required"]}
    problems = _changed_fields(entry, locked, fields)
    enum_problems, enum_added = _changed_enums(entry, fields)
    problems += enum_problems
    added = enum_added
    for path, field in fields.items():
        if path in locked:
            continue
        added = True
        parent_is_new = field.parent and field.parent not in locked
        if field.required and not parent_is_new:
            problems.append(f"required field {path} was added without a major version bump")
    old_version, new_version = _version(entry["version"]), _version(schema["x-version"])
    if new_version < old_version:
        problems.append(f"version went back from {entry['version']} to {schema['x-version']}")
    elif added and new_version[:2] <= old_version[:2]:
        problems.append(
            f"fields or enum values were added but the version stayed at {schema['x-version']} "
            f"(lock has {entry['version']}): bump the minor version"
        )
    return problems


def _changed_fields(
    entry: Mapping[str, Any], locked: Mapping[str, str], fields: Mapping[str, Field]
) -> list[str]:
    problems: list[str] = []
    for path, old_type in locked.items():
        was_required = path in entry["required"]
        field = fields.get(path)
        if field is None:
            what = "required field" if was_required else "field"
            problems.append(f"{what} {path} was removed or renamed without a major version bump")
            continue
        if field.type != old_type:
            problems.append(
                f"field {path} was retyped from {old_type} to {field.type} without a major "
                "version bump"
            )
        if field.required != was_required:
            now = "required" if field.required else "optional"
            problems.append(f"field {path} became {now} without a major version bump")
    return problems


def _changed_enums(entry: Mapping[str, Any], fields: Mapping[str, Field]) -> tuple[list[str], bool]:
    """Problems (values removed) and whether values were added."""
    problems: list[str] = []
    added = False
    for path, field in fields.items():
        values = set(entry["enums"].get(path, ()))
        if not values:
            continue  # a field new to this version, or one without an enum
        removed = sorted(values - set(field.enum))
        if removed:
            problems.append(
                f"enum values {removed} of {path} were removed without a major version bump"
            )
        added = added or bool(set(field.enum) - values)
    return problems, added


def _version(text: str) -> tuple[int, int, int]:
    major, minor, patch = (int(p) for p in str(text).split("."))
    return major, minor, patch


# ---- flattening -------------------------------------------------------------------------------


def _resolve(root: Mapping[str, Any], node: Mapping[str, Any]) -> Mapping[str, Any]:
    seen = 0
    while "$ref" in node:
        ref = str(node["$ref"])
        if not ref.startswith("#/") or seen > 32:
            raise ValueError(f"cannot resolve $ref {ref!r}")
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        seen += 1
    return node


def _options(root: Mapping[str, Any], node: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    node = _resolve(root, node)
    if "anyOf" in node or "oneOf" in node:
        out: list[Mapping[str, Any]] = []
        for option in node.get("anyOf", node.get("oneOf", [])):
            out.extend(_options(root, option))
        return out
    return [node]


def _json_types(node: Mapping[str, Any]) -> set[str]:
    """The JSON types a node admits; a string's `format` counts as part of its type."""
    declared = node.get("type")
    if "const" in node:
        types = {_type_of(node["const"])}
    elif isinstance(declared, str | list):
        types = {declared} if isinstance(declared, str) else {str(t) for t in declared}
    elif "enum" in node:
        types = {_type_of(v) for v in node["enum"]}
    else:
        types = {"object"} if "properties" in node else {"any"}
    if "format" in node and "string" in types:
        types = (types - {"string"}) | {f"string({node['format']})"}
    return types


def _type_of(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _add(
    root: Mapping[str, Any],
    node: Mapping[str, Any],
    *,
    path: str,
    required: bool,
    parent: str,
    out: dict[str, Field],
) -> None:
    options = _options(root, node)
    types: set[str] = set()
    enum: set[str] = set()
    for option in options:
        types |= _json_types(option)
        if "const" in option:
            enum.add(str(option["const"]))
        enum |= {str(v) for v in option.get("enum", [])}
    out[path] = Field("|".join(sorted(types)), required, parent, tuple(sorted(enum)))
    for option in options:
        kinds = _json_types(option)
        if "object" in kinds:
            _walk_object(root, option, path, out)
        if "array" in kinds and isinstance(option.get("items"), Mapping):
            _add(root, option["items"], path=f"{path}[]", required=True, parent=path, out=out)


def _walk_object(
    root: Mapping[str, Any], node: Mapping[str, Any], prefix: str, out: dict[str, Field]
) -> None:
    node = _resolve(root, node)
    required = set(node.get("required", []))
    for name, child in node.get("properties", {}).items():
        path = f"{prefix}.{name}" if prefix else name
        _add(root, child, path=path, required=name in required, parent=prefix, out=out)
    values = [*node.get("patternProperties", {}).values()]
    if isinstance(node.get("additionalProperties"), Mapping):
        values.append(node["additionalProperties"])
    for child in values:
        _add(root, child, path=f"{prefix}{{}}", required=False, parent=prefix, out=out)
