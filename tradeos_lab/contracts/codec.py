"""Bytes on the bus <-> typed messages. The one place a message is serialised or parsed.

A Redis stream entry is `{FIELD: encode(message)}`. `decode` is on every consumer's hot path and
is the bus's validation gate: whatever the input, it returns a valid message or raises
`ContractError` with the reason (the consumer dead-letters it), never anything else.

Speed: `encode` writes `schema` and `version` first, so `decode` reads the schema name and major
from the first bytes without parsing, picks the one model for it and parses once with
`model_validate_json`. Input from elsewhere with other key order takes a slower, equally strict
path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pydantic_core
from pydantic import ValidationError as PydanticValidationError

from tradeos_lab.contracts.base import describe_errors
from tradeos_lab.contracts.messages import Envelope, Message, parse_version, schema_for
from tradeos_lab.errors import ContractError
from tradeos_lab.keys import Stream

FIELD = "m"
"""The field of a Redis stream entry that holds the encoded message."""

MAX_MESSAGE_BYTES = 256 * 1024
"""Largest encoded message accepted in either direction."""

_HEAD = re.compile(
    rb'\s*\{\s*"schema"\s*:\s*"([A-Za-z0-9_.:@/-]{1,64})"\s*,\s*"version"\s*:\s*"([0-9]{1,6})\.'
)


def encode(message: Envelope[Any]) -> bytes:
    """Compact UTF-8 JSON of `message`; raises `ContractError` when it is over the size limit."""
    if not isinstance(message, Envelope):
        raise ContractError(f"cannot encode a {type(message).__name__}; build it with new_message")
    try:
        data = type(message).__pydantic_serializer__.to_json(message, by_alias=True)
    except pydantic_core.PydanticSerializationError as e:
        raise ContractError(f"{message.schema_name}: cannot serialise: {e}") from e
    if len(data) > MAX_MESSAGE_BYTES:
        raise ContractError(
            f"{message.schema_name} message is {len(data)} bytes; the limit is "
            f"{MAX_MESSAGE_BYTES} (nothing was published)"
        )
    return data


def decode(raw: bytes | str, *, stream: Stream | None = None) -> Message:
    """Parse and validate one message; with `stream`, also require that it may travel there."""
    try:
        return _decode(raw, stream)
    except ContractError:
        raise
    except Exception as e:  # the bus's promise: a bad message is a ContractError, never a crash
        raise ContractError(f"undecodable message: {type(e).__name__}: {e}") from e


def encode_entry(message: Envelope[Any]) -> dict[str, bytes]:
    """The Redis stream entry fields for `message`."""
    return {FIELD: encode(message)}


def decode_entry(fields: Mapping[Any, Any], *, stream: Stream | None = None) -> Message:
    """Decode a Redis stream entry (keys as bytes or str) written by `encode_entry`."""
    raw = fields.get(FIELD.encode(), fields.get(FIELD)) if isinstance(fields, Mapping) else None
    if raw is None:
        raise ContractError(f"stream entry has no {FIELD!r} field")
    return decode(raw, stream=stream)


def _decode(raw: object, stream: Stream | None) -> Message:
    data = _as_bytes(raw)
    if len(data) > MAX_MESSAGE_BYTES:
        raise ContractError(f"message is {len(data)} bytes; the limit is {MAX_MESSAGE_BYTES}")
    head = _HEAD.match(data)
    if head is not None:
        name, major = head[1].decode("ascii"), int(head[2])
    else:
        name, major = _read_head(data)
    cls = schema_for(name, major)
    if stream is not None:
        wanted = _stream(stream)
        if cls.STREAM is not wanted:
            raise ContractError(
                f"schema {name} belongs on stream {cls.STREAM.value}, not {wanted.value}"
            )
    try:
        message = cls.model_validate_json(data)
    except PydanticValidationError as e:
        if any(err["type"] == "json_invalid" for err in e.errors()):
            _require_utf8(data)
        raise ContractError(f"{name}@{major}: {describe_errors(e)}") from None
    return message


def _as_bytes(raw: object) -> bytes:
    if isinstance(raw, bytes):
        return raw
    if isinstance(raw, bytearray | memoryview):
        return bytes(raw)
    if isinstance(raw, str):
        try:
            return raw.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ContractError(f"message text is not valid UTF-8: {e.reason}") from None
    raise ContractError(f"a message is bytes or str, not {type(raw).__name__}")


def _require_utf8(data: bytes) -> None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ContractError(
            f"message is not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start})"
        ) from None


def _read_head(data: bytes) -> tuple[str, int]:
    """Schema name and major of a message whose keys are not in `encode`'s order."""
    try:
        obj = pydantic_core.from_json(data)
    except ValueError as e:
        _require_utf8(data)
        raise ContractError(f"message is not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ContractError(f"message is a JSON {type(obj).__name__}, not an object")
    name = obj.get("schema")
    if not isinstance(name, str):
        raise ContractError("message has no string field 'schema'")
    version = obj.get("version")
    if not isinstance(version, str):
        raise ContractError(f"{_safe(name)} message has no string field 'version'")
    try:
        major = parse_version(version)[0]
    except ContractError:
        raise ContractError(
            f"{_safe(name)} message has version {_safe(version)!r}; expected MAJOR.MINOR.PATCH"
        ) from None
    if name != _safe(name):
        raise ContractError(f"unknown schema {_safe(name)!r}")
    return name, major


def _safe(text: str) -> str:
    """Text fit for an error message: short and ASCII."""
    return text[:64].encode("ascii", "backslashreplace").decode("ascii")


def _stream(stream: object) -> Stream:
    try:
        return Stream(str(stream))
    except ValueError:
        raise ContractError(f"unknown stream {_safe(str(stream))!r}") from None
