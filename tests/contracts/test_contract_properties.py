"""Property tests of the codec: round trips for every message type, and no input crashes decode."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from contract_strategies import (
    PAYLOAD_STRATEGIES,
    any_message,
    external_ids,
    json_values,
    message_ids,
    messages_of,
    names,
    times,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import JsonValue, TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from tradeos_lab.contracts import (
    MESSAGE_TYPES,
    Envelope,
    decode,
    derive,
    encode,
    restamped,
    schema_for,
)
from tradeos_lab.contracts.export import generated_schemas, schema_filename
from tradeos_lab.contracts.types import Json, _check_json, _json_fault
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


@pytest.mark.parametrize(
    "cls", [c for c in MESSAGE_TYPES if schema_for(c.SCHEMA) is c], ids=lambda c: c.SCHEMA
)
@PROPERTY
@given(data=st.data())
def test_derive_and_restamped_build_what_validation_builds(
    cls: type[Envelope[Any]], data: Any
) -> None:
    """`derive` and `restamped` assemble an envelope without validating it again: the message
    must be the one pydantic's validation makes of the same fields, field for field and byte for
    byte."""
    parent = data.draw(any_message)
    payload = data.draw(PAYLOAD_STRATEGIES[cls])
    producer, at = data.draw(names), data.draw(times())
    child = derive(parent, payload, producer=producer, produced_at=at)
    latest = type(child)
    assert latest is cls
    validated = latest(
        schema=latest.SCHEMA,
        version=latest.VERSION,
        message_id=child.message_id,
        correlation_id=parent.correlation_id,
        causation_id=parent.message_id,
        producer=producer,
        produced_at=at,
        payload=payload,
    )
    assert type(child.payload) is type(payload)
    assert child == validated
    assert child.model_fields_set == validated.model_fields_set
    assert encode(child) == encode(validated)
    assert decode(encode(child)) == child
    ids = {
        "message_id": data.draw(message_ids),
        "correlation_id": data.draw(external_ids),
        "causation_id": data.draw(message_ids),
    }
    moved = restamped(child, **ids)
    assert moved == validated.model_copy(update=ids)
    reread = latest.model_validate_json(json.dumps(json.loads(encode(validated)) | ids))
    assert encode(moved) == encode(reread)


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


# ---- JSON values: the one-pass check gives the walk's verdicts ----------------------------------

_faulty_chars = st.characters(exclude_categories=()) | st.sampled_from(
    "\x00\x08\x0b\x0c\x1f\x7f\ud800\udfff\t\n\r\\bfu[{"
)
_any_leaf = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and infinities too
    | st.text(_faulty_chars, max_size=6)
)


def _nested(leaf: Any, levels: int) -> Any:
    for i in range(levels):
        leaf = [leaf] if i % 2 else {"k": leaf}
    return leaf


_any_json = st.recursive(
    _any_leaf,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(_faulty_chars, max_size=4), inner, max_size=3)
    ),
    max_leaves=12,
) | st.builds(_nested, _any_leaf, st.integers(min_value=0, max_value=12))


def _verdict(check: Any, value: Any) -> str | None:
    try:
        check(value)
    except ValueError as e:
        return str(e)
    return None


@PROPERTY
@given(value=_any_json)
def test_the_json_check_gives_the_verdict_of_the_walk_in_document_order(value: Any) -> None:
    """`_check_json` (one pass, every audit entry) raises what `_json_fault` (the document-order
    walk) raises, faults included: NaN, infinities, control and surrogate characters in text and
    keys, depth."""
    assert _verdict(_check_json, value) == _verdict(_json_fault, value)


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ({"a": [1, "ok\ttab\nline\r"]}, None),
        ({"a": float("nan")}, "NaN or infinite"),
        ([1.0, float("-inf")], "NaN or infinite"),
        ({"a": "bell\x07"}, "U+0007"),
        ({"key\x7f": 1}, "U+007F"),
        (["\ud800"], "U+D800"),
        ({"a": "fine", "b": ["\x1b", float("nan")]}, "U+001B"),  # the first in document order
        (_nested(1, 8), None),
        (_nested(1, 9), "nested deeper than 8"),
        (_nested([], 8), None),
        (_nested([], 9), "nested deeper than 8"),
    ],
)
def test_json_values_are_finite_clean_and_at_most_eight_levels_deep(
    value: Any, error: str | None
) -> None:
    verdict = _verdict(_check_json, value)
    assert verdict is None if error is None else error in (verdict or "")


_JSON = TypeAdapter(Json)
_JSON_VALUE = TypeAdapter(JsonValue)


@PROPERTY
@given(
    value=st.recursive(
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**80), max_value=2**80)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=8),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
        ),
        max_leaves=12,
    )
)
def test_a_json_value_serialises_as_pydantics_json_value_does(value: Any) -> None:
    """`Json` is serialised by its values' own types, to the same output as `JsonValue`'s
    serialiser in every mode."""
    expected = _JSON_VALUE.validate_python(value)
    try:
        checked = _JSON.validate_python(value)
    except PydanticValidationError:  # nested deeper than the contracts allow
        return
    assert _JSON.dump_json(checked) == _JSON_VALUE.dump_json(expected)
    for mode in ("json", "python"):
        assert _JSON.dump_python(checked, mode=mode) == _JSON_VALUE.dump_python(expected, mode=mode)
