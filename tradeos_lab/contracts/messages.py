"""The envelope every message shares, one message class per schema, and the stream registry.

Messages are immutable: a stage never edits what it received, it emits new messages with
`derive(parent, payload, producer=...)`, which keeps the parent's correlation id (the whole
chain from bar to fill shares it) and points `causation_id` at the parent.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from types import MappingProxyType
from typing import Any, ClassVar, Generic, Self, TypeAlias, TypeVar, cast

from pydantic import Field, GetJsonSchemaHandler, model_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from tradeos_lab.contracts.base import ContractModel
from tradeos_lab.contracts.ids import is_message_id, new_message_id
from tradeos_lab.contracts.payloads import (
    Audit,
    Bar,
    Fill,
    FillV1,
    Intent,
    ModifiedSignal,
    NewsArticle,
    Order,
    OrderV1,
    Payload,
    PositionUpdate,
    Quote,
    RawSignal,
    RiskEvent,
    ScoredNews,
    TradePrint,
)
from tradeos_lab.contracts.types import (
    ExternalId,
    MessageId,
    Name,
    SemVer,
    UtcDatetime,
    utc_time,
)
from tradeos_lab.errors import ContractError, ValidationError
from tradeos_lab.keys import Stream
from tradeos_lab.symbols import canonical_name

P = TypeVar("P", bound=Payload)
# Covariant: a message of a `Bar` is a message of a `Payload` (envelopes are immutable).
P_co = TypeVar("P_co", bound=Payload, covariant=True)
# Any message class, kept by the helpers that copy a message (`restamped`).
M = TypeVar("M", bound="Envelope[Any]")


@lru_cache(maxsize=256)  # on the decode path; a handful of versions ever exist
def parse_version(version: str) -> tuple[int, int, int]:
    """`"1.2.3"` -> `(1, 2, 3)`; raises `ContractError` for anything that is not semver."""
    parts = version.split(".")
    if len(parts) != 3 or not all(p.isascii() and p.isdigit() and len(p) <= 6 for p in parts):
        raise ContractError(f"version {version!r} is not MAJOR.MINOR.PATCH")
    major, minor, patch = (int(p) for p in parts)
    return major, minor, patch


class Envelope(ContractModel, Generic[P_co]):
    """Who made a message, when, in answer to what, under which schema version; and its body."""

    SCHEMA: ClassVar[str] = ""
    VERSION: ClassVar[str] = ""
    STREAM: ClassVar[Stream]
    PAYLOAD: ClassVar[type[Payload]]

    schema_name: Name = Field(alias="schema", description="The schema name, e.g. market_data.bar.")
    version: SemVer = Field(
        description="Schema version the producer wrote; readers accept any minor up to theirs."
    )
    message_id: MessageId = Field(description="UUIDv7, unique and time-ordered.")
    correlation_id: ExternalId = Field(
        description="Shared by every message of one chain (bar -> signal -> ... -> fill)."
    )
    causation_id: MessageId | None = Field(
        description="The message this one answers; null for the first of a chain."
    )
    producer: Name = Field(description="The service or notebook that made it.")
    produced_at: UtcDatetime
    payload: P_co

    @classmethod
    def major(cls) -> int:
        return parse_version(cls.VERSION)[0]

    @model_validator(mode="after")
    def _matches_class(self) -> Self:
        cls = type(self)
        if self.schema_name != cls.SCHEMA:
            raise ValueError(f"schema {self.schema_name!r} sent to the {cls.SCHEMA} model")
        major, minor, _ = parse_version(self.version)
        own_major, own_minor, _ = parse_version(cls.VERSION)
        if major != own_major:
            raise ValueError(f"version {self.version} is not major {own_major}")
        if minor > own_minor:
            raise ValueError(
                f"version {self.version} is newer than this reader's {cls.VERSION}; "
                "upgrade consumers before producers"
            )
        return self

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = super().__get_pydantic_json_schema__(core_schema, handler)
        target = handler.resolve_ref_schema(schema)
        if cls.SCHEMA:
            props = target["properties"]
            props["schema"] = {"const": cls.SCHEMA, "type": "string"} | {
                "description": props["schema"].get("description", "")
            }
            props["version"]["pattern"] = (
                rf"^{cls.major()}\.(0|[1-9][0-9]{{0,5}})\.(0|[1-9][0-9]{{0,5}})$"
            )
        return schema


# ---- one message class per schema --------------------------------------------------------------


class BarMessage(Envelope[Bar]):
    """A closed OHLCV bar from Ingestion."""

    SCHEMA = Bar.SCHEMA
    VERSION = "1.0.0"
    STREAM = Stream.MARKET_DATA
    PAYLOAD = Bar


class QuoteMessage(Envelope[Quote]):
    """A top-of-book quote tick from Ingestion."""

    SCHEMA = Quote.SCHEMA
    VERSION = "1.0.0"
    STREAM = Stream.MARKET_DATA
    PAYLOAD = Quote


class TradeMessage(Envelope[TradePrint]):
    """A trade print from Ingestion."""

    SCHEMA = TradePrint.SCHEMA
    VERSION = "1.0.1"
    STREAM = Stream.MARKET_DATA
    PAYLOAD = TradePrint


class NewsArticleMessage(Envelope[NewsArticle]):
    """A news article or post from the news fetcher."""

    SCHEMA = NewsArticle.SCHEMA
    VERSION = "1.0.0"
    STREAM = Stream.NEWS_RAW
    PAYLOAD = NewsArticle


class ScoredNewsMessage(Envelope[ScoredNews]):
    """One article's sentiment for one ticker, from the sentiment scorer."""

    SCHEMA = ScoredNews.SCHEMA
    VERSION = "1.0.0"
    STREAM = Stream.NEWS_SCORED
    PAYLOAD = ScoredNews


class RawSignalMessage(Envelope[RawSignal]):
    """A strategy's signal from the Signal Engine."""

    SCHEMA = RawSignal.SCHEMA
    VERSION = "1.1.0"
    STREAM = Stream.SIGNALS_RAW
    PAYLOAD = RawSignal


class ModifiedSignalMessage(Envelope[ModifiedSignal]):
    """A signal after the Signal Modifier."""

    SCHEMA = ModifiedSignal.SCHEMA
    VERSION = "1.0.0"
    STREAM = Stream.SIGNALS_MODIFIED
    PAYLOAD = ModifiedSignal


class IntentMessage(Envelope[Intent]):
    """An order intent cleared by Feasibility."""

    SCHEMA = Intent.SCHEMA
    VERSION = "1.1.0"
    STREAM = Stream.INTENTS
    PAYLOAD = Intent


class OrderMessage(Envelope[Order]):
    """An order status from Execution."""

    SCHEMA = Order.SCHEMA
    VERSION = "2.0.0"
    STREAM = Stream.ORDERS
    PAYLOAD = Order


class OrderV1Message(Envelope[OrderV1]):
    """An order status from Execution."""

    SCHEMA = OrderV1.SCHEMA
    VERSION = "1.0.1"
    STREAM = Stream.ORDERS
    PAYLOAD = OrderV1


class FillMessage(Envelope[Fill]):
    """A broker execution from Execution."""

    SCHEMA = Fill.SCHEMA
    VERSION = "2.0.0"
    STREAM = Stream.FILLS_RAW
    PAYLOAD = Fill


class FillV1Message(Envelope[FillV1]):
    """A broker execution from Execution."""

    SCHEMA = FillV1.SCHEMA
    VERSION = "1.0.1"
    STREAM = Stream.FILLS_RAW
    PAYLOAD = FillV1


class PositionMessage(Envelope[PositionUpdate]):
    """A position update from Execution."""

    SCHEMA = PositionUpdate.SCHEMA
    VERSION = "1.0.1"
    STREAM = Stream.POSITIONS
    PAYLOAD = PositionUpdate


class RiskEventMessage(Envelope[RiskEvent]):
    """A risk event from any service."""

    SCHEMA = RiskEvent.SCHEMA
    VERSION = "1.0.1"
    STREAM = Stream.RISK_EVENTS
    PAYLOAD = RiskEvent


class AuditMessage(Envelope[Audit]):
    """An audit record from any service or notebook."""

    SCHEMA = Audit.SCHEMA
    VERSION = "1.0.0"
    STREAM = Stream.AUDIT
    PAYLOAD = Audit


Message: TypeAlias = Envelope[Payload]
"""Any message: narrow it with `isinstance(m, BarMessage)` (or on `m.payload`) to reach fields."""

# ---- registry ---------------------------------------------------------------------------------

MESSAGE_TYPES: tuple[type[Envelope[Any]], ...] = (
    BarMessage,
    QuoteMessage,
    TradeMessage,
    NewsArticleMessage,
    ScoredNewsMessage,
    RawSignalMessage,
    ModifiedSignalMessage,
    IntentMessage,
    OrderMessage,
    OrderV1Message,
    FillMessage,
    FillV1Message,
    PositionMessage,
    RiskEventMessage,
    AuditMessage,
)
"""Every (schema, major) this reader knows. An old major stays listed while it is still read."""

_BY_KEY: dict[tuple[str, int], type[Envelope[Any]]] = {
    (c.SCHEMA, c.major()): c for c in MESSAGE_TYPES
}
_LATEST: dict[str, type[Envelope[Any]]] = {}
for _cls in MESSAGE_TYPES:
    if _cls.SCHEMA not in _LATEST or _cls.major() > _LATEST[_cls.SCHEMA].major():
        _LATEST[_cls.SCHEMA] = _cls
_BY_PAYLOAD: dict[type[Payload], type[Envelope[Any]]] = {c.PAYLOAD: c for c in _LATEST.values()}

STREAM_SCHEMAS: Mapping[Stream, frozenset[str]] = MappingProxyType(
    {s: frozenset(c.SCHEMA for c in MESSAGE_TYPES if c.STREAM is s) for s in Stream}
)
"""Which schemas each stream carries; the bus rejects any other."""


def schema_names() -> tuple[str, ...]:
    """Every schema name, in pipeline order."""
    return tuple(_LATEST)


def schema_for(name: str, major: int | None = None) -> type[Envelope[Any]]:
    """The message class for a schema name (the newest major unless `major` is given)."""
    if name not in _LATEST:
        raise ContractError(f"unknown schema {name!r}; known: {', '.join(_LATEST)}")
    if major is None:
        return _LATEST[name]
    try:
        return _BY_KEY[(name, major)]
    except KeyError:
        known = sorted(m for (n, m) in _BY_KEY if n == name)
        raise ContractError(
            f"unsupported major version {major} of {name}; this reader knows {known}"
        ) from None


def stream_for(name: str) -> Stream:
    """The stream a schema travels on."""
    return schema_for(name).STREAM


def new_message(
    payload: P,
    *,
    producer: str,
    correlation_id: str | None = None,
    produced_at: datetime | None = None,
    message_id: str | None = None,
) -> Envelope[P]:
    """Wrap `payload` in a fresh envelope that starts a chain (or joins `correlation_id`).

    The envelope is the payload's message class (a `Bar` gives a `BarMessage`); its static type
    is `Envelope[P]`, so `.payload` keeps the payload's type and any message fits a `Message`.
    `message_id`: an id derived from what the message says (a bar's feed, symbol and time), so a
    producer that makes it again makes a duplicate a consumer can tell; a fresh one otherwise.
    """
    message_id = message_id or new_message_id()
    return _build(
        payload,
        producer=producer,
        message_id=message_id,
        correlation_id=correlation_id or message_id,
        causation_id=None,
        produced_at=produced_at,
    )


def derive(
    parent: Envelope[Payload],
    payload: P,
    *,
    producer: str,
    produced_at: datetime | None = None,
    message_id: str | None = None,
) -> Envelope[P]:
    """A new message caused by `parent`: same correlation id, `causation_id` = parent's id.

    `message_id`: the id the runner will give it (`derived_message_id`), for a stage that keeps
    its outputs itself; a fresh one otherwise.

    Every stage derives each of its outputs, so the envelope is assembled from fields that are
    valid already (the parent's ids, validated when it was read or built; a checked producer,
    time and id; a payload validated when it was built) instead of being validated again."""
    cls = _message_class(payload)
    if message_id is None:
        message_id = new_message_id()
    elif not is_message_id(message_id):
        raise ContractError(f"{cls.__name__}: message_id {message_id!r} is not a UUIDv7 id")
    values = {
        "schema_name": cls.SCHEMA,
        "version": cls.VERSION,
        "message_id": message_id,
        "correlation_id": parent.correlation_id,
        "causation_id": parent.message_id,
        "producer": _producer(producer),
        "produced_at": _produced_at(produced_at),
        "payload": payload,
    }
    return cast("Envelope[P]", _assembled(cls, values))


def restamped(
    message: M,
    *,
    message_id: str | None = None,
    correlation_id: str | None = None,
    causation_id: str | None = None,
) -> M:
    """`message` under the ids given, as the runner stamps an output with the id derived from
    its input's: a copy of the fields, like `model_copy`, for a message each stage makes
    several of per input."""
    values = message.__dict__.copy()
    if message_id is not None:
        values["message_id"] = message_id
    if correlation_id is not None:
        values["correlation_id"] = correlation_id
    if causation_id is not None:
        values["causation_id"] = causation_id
    return _assembled(type(message), values)


def _build(
    payload: P,
    *,
    producer: str,
    message_id: str,
    correlation_id: str,
    causation_id: str | None,
    produced_at: datetime | None,
) -> Envelope[P]:
    cls = _message_class(payload)
    message = cls(
        schema=cls.SCHEMA,
        version=cls.VERSION,
        message_id=message_id,
        correlation_id=correlation_id,
        causation_id=causation_id,
        producer=producer,
        produced_at=produced_at or datetime.now(UTC),
        payload=payload,
    )
    return cast("Envelope[P]", message)  # a string: subscripting a generic model costs at run time


_ENVELOPE_FIELDS = frozenset(Envelope.model_fields)


def _message_class(payload: Payload) -> type[Envelope[Any]]:
    cls = _BY_PAYLOAD.get(type(payload))
    if cls is None:
        raise ContractError(f"{type(payload).__name__} is not a message payload")
    return cls


def _assembled(cls: type[M], values: dict[str, Any]) -> M:
    """An envelope of `values`, each valid already: what pydantic's validation would build from
    them (frozen, every field set), without validating them again."""
    message = cls.__new__(cls)
    object.__setattr__(message, "__dict__", values)
    object.__setattr__(message, "__pydantic_fields_set__", set(_ENVELOPE_FIELDS))
    object.__setattr__(message, "__pydantic_extra__", None)
    object.__setattr__(message, "__pydantic_private__", None)
    return message


def _producer(name: str) -> str:
    try:
        return canonical_name(name, "producer")
    except ValidationError as e:
        raise ContractError(str(e)) from None


def _produced_at(at: datetime | None) -> datetime:
    if at is None:
        return datetime.now(UTC)
    if not isinstance(at, datetime) or at.utcoffset() is None:
        raise ContractError(f"produced_at {at!r} is not a time with its offset")
    try:
        return utc_time(at)
    except ValueError as e:
        raise ContractError(f"produced_at: {e}") from None
