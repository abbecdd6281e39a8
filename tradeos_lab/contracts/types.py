"""Field types shared by every message: bounded strings, finite numbers, UTC times, ids.

Each type carries its JSON Schema constraints, so the committed schemas say the same as the
models. Rules a JSON Schema cannot express (a symbol's look-alike letters, a time's range) are
enforced by validators and named in the field's description.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, TypeAlias

from pydantic import (
    AfterValidator,
    AwareDatetime,
    Field,
    JsonValue,
    SerializeAsAny,
    StringConstraints,
)
from pydantic.json_schema import WithJsonSchema

from tradeos_lab.contracts.ids import MESSAGE_ID_PATTERN
from tradeos_lab.symbols import canonical_name, validate_symbol

# ---- strings ----------------------------------------------------------------------------------

SYMBOL_PATTERN = r"^[A-Z0-9][A-Z0-9./-]{0,19}$"
"""The JSON Schema of a ticker; a message must also carry it in its canonical spelling."""


def _symbol(value: str) -> str:
    """A message carries the canonical spelling: the wire has one form per instrument, so a
    consumer never has to normalise (producers call `canonical_symbol` on what they are given)."""
    canonical = validate_symbol(value)
    if canonical != value:
        raise ValueError(f"symbol {value!r} is not in its canonical spelling {canonical!r}")
    return value


Symbol: TypeAlias = Annotated[
    str,
    AfterValidator(_symbol),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": 20,
            "pattern": SYMBOL_PATTERN,
            "description": "Ticker or pair in ASCII: A-Z, 0-9, '.', '-', '/' (BRK.B, BTC-USD).",
        }
    ),
]

MessageId: TypeAlias = Annotated[str, StringConstraints(pattern=MESSAGE_ID_PATTERN)]
"""A UUIDv7 made by `new_message_id`; sorts by creation time."""

ExternalId: TypeAlias = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
]
"""An id made elsewhere (broker order id, execution id, run id)."""

CLIENT_ORDER_ID_MAX_LENGTH = 48
"""Alpaca's limit on `client_order_id`; the contracts, the records column and every validator
use this one number, so an id we accept is never refused by the broker."""

CLIENT_ORDER_ID_PATTERN = rf"^[A-Za-z0-9][A-Za-z0-9._:/-]{{0,{CLIENT_ORDER_ID_MAX_LENGTH - 1}}}$"

ClientOrderId: TypeAlias = Annotated[str, StringConstraints(pattern=CLIENT_ORDER_ID_PATTERN)]
"""Our idempotency key for an order at the broker, derived from its intent."""

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,63}$"
"""The JSON Schema twin of `canonical_name`'s check of the raw text."""


def _name(value: str) -> str:
    return canonical_name(value)


Name: TypeAlias = Annotated[
    str, AfterValidator(_name), WithJsonSchema({"type": "string", "pattern": NAME_PATTERN})
]
"""A machine name: a service, strategy, feature, check, modifier, regime or action; spelled
canonically (lower-case) like everywhere else, so `Momo` in a signal is the strategy `momo`."""

ContentHash: TypeAlias = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
"""A SHA-256 digest in lower-case hex: the identity of a piece of content (a news article)."""

Ref: TypeAlias = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9*][A-Za-z0-9_.:@/*=-]{0,127}$")
]
"""What something applies to: `global`, `symbol:AAPL`, `stream:orders`, `kill:strategy:momo`."""

Currency: TypeAlias = Annotated[str, StringConstraints(pattern=r"^[A-Z0-9]{2,10}$")]

SEMVER_PATTERN = r"^(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})$"
SemVer: TypeAlias = Annotated[str, StringConstraints(pattern=SEMVER_PATTERN)]


# Surrogates cannot be written as UTF-8 and control characters hide text in logs and terminals;
# tab, newline and carriage return are text.
_UNCLEAN_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def _clean_text(value: str) -> str:
    found = _UNCLEAN_TEXT.search(value)
    if found is not None:
        code = ord(found.group())
        raise ValueError(f"text contains the control or surrogate character U+{code:04X}")
    return value


ShortText: TypeAlias = Annotated[
    str, StringConstraints(min_length=1, max_length=256), AfterValidator(_clean_text)
]
"""Human text up to 256 characters with no control characters (tab and newline allowed)."""

LongText: TypeAlias = Annotated[
    str, StringConstraints(min_length=1, max_length=4000), AfterValidator(_clean_text)
]
"""Human text up to 4000 characters with no control characters (tab and newline allowed)."""

ARTICLE_TEXT_MAX_LENGTH = 20_000
"""The longest article body a news message carries: enough for the text a sentiment model reads,
far below the bus's message limit; fetchers cut longer bodies."""

ArticleText: TypeAlias = Annotated[
    str,
    StringConstraints(max_length=ARTICLE_TEXT_MAX_LENGTH),
    AfterValidator(_clean_text),
]
"""An article's body as plain text, up to `ARTICLE_TEXT_MAX_LENGTH` characters, no control
characters (tab and newline allowed); may be empty (a headline-only post)."""

# ---- numbers ----------------------------------------------------------------------------------

Finite: TypeAlias = Annotated[float, Field(allow_inf_nan=False)]
Price: TypeAlias = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Quantity: TypeAlias = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegative: TypeAlias = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Strength: TypeAlias = Annotated[float, Field(ge=-1, le=1, allow_inf_nan=False)]
Probability: TypeAlias = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Count: TypeAlias = Annotated[int, Field(ge=0, le=2**53)]

# ---- times ------------------------------------------------------------------------------------

_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(2200, 1, 1, tzinfo=UTC)


def utc_time(value: datetime) -> datetime:
    """An aware time in UTC; raises `ValueError` outside 1970..2199."""
    value = value.astimezone(UTC)
    if not _EARLIEST <= value < _LATEST:
        raise ValueError(f"time {value.isoformat()} is outside 1970..2199")
    return value


UtcDatetime: TypeAlias = Annotated[
    AwareDatetime,
    AfterValidator(utc_time),
    Field(description="RFC 3339 time with an offset, stored as UTC, in 1970..2199."),
]

# ---- JSON values (audit old/new values, risk event data) ---------------------------------------

MAX_JSON_DEPTH = 8


def _check_json(value: JsonValue) -> None:
    """Raise `ValueError` for a value nested deeper than `MAX_JSON_DEPTH` levels, holding a NaN
    or infinite number, or text (a string or a key) with a control or surrogate character.

    Every audit entry built or decoded passes here, so a plain value is judged in one loop over
    its levels that gathers its text for a single search; only a value that loop cannot clear
    (a fault, or a type other than JSON's own) is walked by `_json_fault`, which names the first
    fault in document order."""
    if value is None:
        return
    texts: list[str] = []
    level: list[Any] = [value]
    depth = 0
    while level:
        if depth > MAX_JSON_DEPTH:
            return _json_fault(value)
        below: list[Any] = []
        for item in level:
            kind = type(item)
            if kind is str:
                texts.append(item)
            elif kind is dict:
                texts.extend(item)
                below.extend(item.values())
            elif kind is list:
                below.extend(item)
            elif kind is float:
                if not math.isfinite(item):
                    return _json_fault(value)
            elif kind is not int and kind is not bool and item is not None:
                return _json_fault(value)
        level = below
        depth += 1
    try:
        unclean = _UNCLEAN_TEXT.search("".join(texts)) is not None
    except TypeError:  # a key that is not text
        unclean = True
    if unclean:
        _json_fault(value)


def _json_fault(value: JsonValue, depth: int = 0) -> None:
    """Raise `ValueError` for the first fault `_check_json` looks for, walking the value in
    document order."""
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"JSON value is nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("JSON value holds a NaN or infinite number")
    if isinstance(value, str):
        _clean_text(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _clean_text(key)
            _json_fault(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _json_fault(item, depth + 1)


def _json_value(value: JsonValue) -> JsonValue:
    _check_json(value)
    return value


Json: TypeAlias = Annotated[
    JsonValue,
    AfterValidator(_json_value),
    # Serialised by the value's own types: it holds only JSON's types once validated, and
    # `JsonValue`'s serialiser would call back into Python for each of its nodes.
    SerializeAsAny(),
    WithJsonSchema({"description": f"Any JSON value, finite numbers, depth <= {MAX_JSON_DEPTH}."}),
]

Int64: TypeAlias = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]

Scalar: TypeAlias = bool | Int64 | Finite | ShortText | None
"""A value in a flat data map: a boolean, an integer, a finite number, short text or null."""
