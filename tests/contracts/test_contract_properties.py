"""Property tests of the codec: round trips for every message type, and no input crashes decode."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from contract_strategies import PAYLOAD_STRATEGIES, any_message, json_values, messages_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tradeos_lab.contracts import MESSAGE_TYPES, Envelope, decode, encode
from tradeos_lab.contracts.export import generated_schemas, schema_filename
from tradeos_lab.errors import ContractError

PROPERTY = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

_VALIDATORS = {
    name: jsonschema.Draft202012Validator(
        doc, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    for name, doc in generated_schemas().items()
}


def test_every_message_type_has_a_strategy() -> None:
    assert set(PAYLOAD_STRATEGIES) == set(MESSAGE_TYPES)


@pytest.mark.parametrize("cls", MESSAGE_TYPES, ids=lambda c: c.SCHEMA)
@PROPERTY
@given(data=st.data())
def test_encode_then_decode_gives_the_same_message(cls: type[Envelope[Any]], data: Any) -> None:
    message = data.draw(messages_of(cls))
    raw = encode(message)
    back = decode(raw, stream=cls.STREAM)
    assert type(back) is cls
    assert back == message
    assert encode(back) == raw  # one canonical encoding


@pytest.mark.parametrize("cls", MESSAGE_TYPES, ids=lambda c: c.SCHEMA)
@PROPERTY
@given(data=st.data())
def test_every_valid_message_satisfies_its_published_json_schema(
    cls: type[Envelope[Any]], data: Any
) -> None:
    message = data.draw(messages_of(cls))
    document = json.loads(encode(message))
    _VALIDATORS[schema_filename(cls.SCHEMA, cls.major())].validate(document)


@PROPERTY
@given(raw=st.binary(max_size=2048))
def test_decode_of_arbitrary_bytes_raises_only_contract_error(raw: bytes) -> None:
    with pytest.raises(ContractError):
        decode(raw)


@PROPERTY
@given(value=json_values(depth=5))
def test_decode_of_arbitrary_json_raises_only_contract_error(value: Any) -> None:
    with pytest.raises(ContractError):
        decode(json.dumps(value))


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, (*prefix, i))
    return out


def _replace(node: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copy = dict(node) if isinstance(node, dict) else list(node)
    copy[path[0]] = _replace(node[path[0]], path[1:], value)
    return copy


@PROPERTY
@given(message=any_message, data=st.data())
def test_a_mutated_message_is_either_rejected_or_still_a_valid_message(
    message: Envelope[Any], data: Any
) -> None:
    """Change one value anywhere in a valid message: decode rejects it or yields a message that
    round-trips; it never crashes and never yields something it cannot encode again."""
    document = json.loads(encode(message))
    path = data.draw(st.sampled_from(_paths(document)[1:]))
    mutant = _replace(document, path, data.draw(json_values(depth=2)))
    raw = data.draw(
        st.sampled_from([json.dumps(mutant), json.dumps(mutant, ensure_ascii=False).encode()])
    )
    try:
        decoded = decode(raw)
    except ContractError:
        return
    assert decode(encode(decoded)) == decoded


@PROPERTY
@given(message=any_message, cut=st.integers(min_value=0), junk=st.binary(min_size=1, max_size=8))
def test_truncated_or_corrupted_bytes_raise_only_contract_error(
    message: Envelope[Any], cut: int, junk: bytes
) -> None:
    raw = encode(message)
    position = cut % len(raw)
    for broken in (raw[:position], raw[:position] + junk + raw[position + 1 :]):
        try:
            decoded = decode(broken)
        except ContractError:
            continue
        assert decode(encode(decoded)) == decoded
