"""The typed bodies of the pipeline's messages, one per schema and major (the streams' contents).

A payload says what happened; the envelope (`messages.py`) says who made it, when, and why.
Cross-field rules live here and are listed in each class's `RULES` (exported as `x-rules`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Self
from uuid import UUID

from pydantic import Field, model_validator

from tradeos_lab.contracts.base import ContractModel
from tradeos_lab.contracts.enums import (
    Direction,
    Liquidity,
    OrderStatus,
    OrderType,
    RiskKind,
    Severity,
    Side,
    TimeInForce,
)
from tradeos_lab.contracts.types import (
    ArticleText,
    ClientOrderId,
    ContentHash,
    Count,
    Currency,
    ExternalId,
    Finite,
    Json,
    LongText,
    MessageId,
    Name,
    NonNegative,
    Price,
    Probability,
    Quantity,
    Ref,
    Scalar,
    ShortText,
    Strength,
    Symbol,
    UtcDatetime,
)
from tradeos_lab.symbols import Timeframe

# Enums accept their plain value in Python too (`side="buy"`); JSON carries the value anyway.
SideField = Annotated[Side, Field(strict=False)]
DirectionField = Annotated[Direction, Field(strict=False)]
OrderTypeField = Annotated[OrderType, Field(strict=False)]
TimeInForceField = Annotated[TimeInForce, Field(strict=False)]
OrderStatusField = Annotated[OrderStatus, Field(strict=False)]
LiquidityField = Annotated[Liquidity, Field(strict=False)]
RiskKindField = Annotated[RiskKind, Field(strict=False)]
SeverityField = Annotated[Severity, Field(strict=False)]
TimeframeField = Annotated[Timeframe, Field(strict=False)]

MAX_FEATURES = 64
MAX_MODIFIERS = 32
MAX_CHECKS = 32
MAX_DATA_ITEMS = 64
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_REL_TOL = 1e-9


class Payload(ContractModel):
    """Base of every message body; `SCHEMA` is the schema name it travels under."""

    SCHEMA: ClassVar[str] = ""


# ---- market_data ------------------------------------------------------------------------------


class Bar(Payload):
    """One OHLCV bar; `ts` is the bar's open time on its timeframe's grid."""

    SCHEMA: ClassVar[str] = "market_data.bar"
    RULES: ClassVar[tuple[str, ...]] = (
        "low <= open <= high and low <= close <= high",
        "ts is a whole multiple of the timeframe's seconds since 1970-01-01T00:00:00Z",
    )

    symbol: Symbol
    timeframe: TimeframeField
    ts: UtcDatetime
    open: Price
    high: Price
    low: Price
    close: Price
    volume: NonNegative
    vwap: Price | None = None
    trade_count: Count | None = None
    source: Name = Field(description="Where the bar came from: coinbase, alpaca, synthetic, ...")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.high < self.low:
            raise ValueError(f"high {self.high} is below low {self.low}")
        for name in ("open", "close"):
            value = getattr(self, name)
            if not self.low <= value <= self.high:
                raise ValueError(f"{name} {value} is outside [low {self.low}, high {self.high}]")
        offset = self.ts - _EPOCH
        if offset.microseconds or (offset.days * 86400 + offset.seconds) % self.timeframe.seconds:
            raise ValueError(f"ts {self.ts.isoformat()} is not on the {self.timeframe.value} grid")
        return self


class Quote(Payload):
    """Top of book: best bid and ask with their sizes."""

    SCHEMA: ClassVar[str] = "market_data.quote"
    RULES: ClassVar[tuple[str, ...]] = ("bid_price <= ask_price (a crossed book is rejected)",)

    symbol: Symbol
    ts: UtcDatetime
    bid_price: Price
    bid_size: NonNegative
    ask_price: Price
    ask_size: NonNegative
    source: Name

    @model_validator(mode="after")
    def _not_crossed(self) -> Self:
        if self.bid_price > self.ask_price:
            raise ValueError(f"bid {self.bid_price} is above ask {self.ask_price}")
        return self


class TradePrint(Payload):
    """One print on the tape: a trade between other parties at the venue. Our own executions
    are `Fill`s; a `Trade` in the records is one of our fills with its attribution chain."""

    SCHEMA: ClassVar[str] = "market_data.trade"

    symbol: Symbol
    ts: UtcDatetime
    price: Price
    size: Quantity
    aggressor_side: SideField | None = Field(
        default=None, description="The side that crossed the spread, when the venue reports it."
    )
    trade_id: ExternalId | None = None
    source: Name


# ---- news ------------------------------------------------------------------------------------


class NewsArticle(Payload):
    """One article or post as a news source published it (the `news.raw` stream); `article_id`
    is the SHA-256 of its normalised title and body, the key of every effect downstream."""

    SCHEMA: ClassVar[str] = "news.article"

    article_id: ContentHash = Field(description="SHA-256 (hex) of the normalised title and body.")
    source: Name = Field(description="Where it came from: rss:HOST, reddit:SUBREDDIT, ...")
    external_id: ShortText | None = Field(
        default=None, description="The source's own id: an RSS guid, an Atom id, a Reddit fullname."
    )
    url: LongText | None = None
    title: ShortText
    body: ArticleText = Field(description="Plain text, HTML removed, cut to the contract's limit.")
    published_at: UtcDatetime | None = Field(
        default=None, description="When the source says it was published; null when it does not."
    )
    fetched_at: UtcDatetime


class ScoredNews(Payload):
    """One article's sentiment for one ticker it names (the `news.scored` stream): an article
    naming three tickers gives three messages."""

    SCHEMA: ClassVar[str] = "news.scored"

    article_id: ContentHash
    symbol: Symbol
    ts: UtcDatetime = Field(
        description="The article's time: published_at, else when it was fetched."
    )
    score: Strength = Field(description="Sentiment in [-1, 1]: negative bearish, positive bullish.")
    scorer: Name = Field(description="The model that scored it: vader, finbert, ...")
    source: Name
    title: ShortText


# ---- signals ----------------------------------------------------------------------------------


def _direction_matches(direction: Direction, strength: float, field: str) -> None:
    expected = (
        Direction.LONG if strength > 0 else Direction.SHORT if strength < 0 else Direction.FLAT
    )
    if direction is not expected:
        raise ValueError(f"direction {direction.value} disagrees with {field} {strength}")


_DIRECTION_RULE = "long when {0} > 0, short when {0} < 0, flat when {0} == 0"


class RawSignal(Payload):
    """What a strategy concluded from one market-data message."""

    SCHEMA: ClassVar[str] = "signal.raw"
    RULES: ClassVar[tuple[str, ...]] = (_DIRECTION_RULE.format("strength"),)

    strategy: Name
    symbol: Symbol
    timeframe: TimeframeField
    ts: UtcDatetime = Field(description="The market time the signal refers to (the bar's ts).")
    direction: DirectionField
    strength: Strength
    confidence: Probability
    features: Annotated[dict[Name, Finite], Field(max_length=MAX_FEATURES)] = Field(
        description="The inputs the strategy saw, for attribution and research."
    )
    source_message_id: MessageId = Field(description="The market-data message it came from.")
    run_id: UUID | None = Field(
        default=None,
        description="The backtest run whose strategy and parameters were promoted to trade "
        "this; null for a strategy not promoted from research.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _direction_matches(self.direction, self.strength, "strength")
        return self


class Modifier(ContractModel):
    """One adjustment the Signal Modifier applied, and how much it moved the strength."""

    name: Name
    effect: Annotated[float, Field(ge=-2, le=2, allow_inf_nan=False)] = Field(
        description="Strength after this modifier minus strength before it."
    )
    reason: ShortText | None = None


class ModifiedSignal(Payload):
    """A raw signal after regime, hero and policy modifiers."""

    SCHEMA: ClassVar[str] = "signal.modified"
    RULES: ClassVar[tuple[str, ...]] = (_DIRECTION_RULE.format("adjusted_strength"),)

    raw_signal_id: MessageId
    strategy: Name
    symbol: Symbol
    timeframe: TimeframeField
    ts: UtcDatetime
    direction: DirectionField
    raw_strength: Strength
    adjusted_strength: Strength
    confidence: Probability
    modifiers: Annotated[list[Modifier], Field(max_length=MAX_MODIFIERS)]
    regime: Name | None = Field(default=None, description="Market regime label, e.g. high_vol.")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _direction_matches(self.direction, self.adjusted_strength, "adjusted_strength")
        return self


# ---- orders -----------------------------------------------------------------------------------

_PRICE_RULES = (
    "market: no limit_price, no stop_price",
    "limit: limit_price, no stop_price",
    "stop: stop_price, no limit_price",
    "stop_limit: limit_price and stop_price",
)


def _needs(order_type: OrderType) -> tuple[bool, bool]:
    """(needs limit_price, needs stop_price) for an order type."""
    return (
        order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT),
        order_type in (OrderType.STOP, OrderType.STOP_LIMIT),
    )


def _check_prices(order_type: OrderType, limit: float | None, stop: float | None) -> None:
    needs_limit, needs_stop = _needs(order_type)
    for name, needed, value in (
        ("limit_price", needs_limit, limit),
        ("stop_price", needs_stop, stop),
    ):
        if needed and value is None:
            raise ValueError(f"a {order_type.value} order needs {name}")
        if not needed and value is not None:
            raise ValueError(f"a {order_type.value} order must not have {name}")


def _price_rules_schema() -> dict[str, Any]:
    """The order-type price rules as JSON Schema conditionals."""
    rules = []
    for order_type in OrderType:
        needs_limit, needs_stop = _needs(order_type)
        required = [
            n for n, need in (("limit_price", needs_limit), ("stop_price", needs_stop)) if need
        ]
        properties = {
            name: ({"type": "number"} if need else {"type": "null"})
            for name, need in (("limit_price", needs_limit), ("stop_price", needs_stop))
        }
        then: dict[str, Any] = {"properties": properties}
        if required:
            then["required"] = required
        rules.append(
            {"if": {"properties": {"order_type": {"const": order_type.value}}}, "then": then}
        )
    return {"allOf": rules}


class Intent(Payload):
    """An order the Feasibility stage cleared: risk checks passed, no kill switch in the way."""

    SCHEMA: ClassVar[str] = "intent"
    RULES: ClassVar[tuple[str, ...]] = (*_PRICE_RULES, "checks_passed has no duplicates")
    JSON_SCHEMA_EXTRA: ClassVar[dict[str, Any]] = _price_rules_schema()

    symbol: Symbol
    side: SideField
    quantity: Quantity
    order_type: OrderTypeField
    limit_price: Price | None = None
    stop_price: Price | None = None
    time_in_force: TimeInForceField
    strategy: Name
    reduce_only: bool = Field(description="Only allowed to shrink an existing position.")
    checks_passed: Annotated[list[Name], Field(max_length=MAX_CHECKS)] = Field(
        description="The risk checks this intent passed, by name."
    )
    signal_id: MessageId | None = Field(
        default=None, description="The modified signal behind it; null for a manual intent."
    )
    policy_profile: Ref | None = Field(
        default=None,
        description="The policy profile and its version it was sized under: NAME@VERSION.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _check_prices(self.order_type, self.limit_price, self.stop_price)
        if len(set(self.checks_passed)) != len(self.checks_passed):
            raise ValueError("checks_passed lists a check twice")
        return self


def _check_order(order: Order | OrderV1, avg_price: float | None, avg_name: str) -> None:
    """The cross-field rules of an order message (every major)."""
    _check_prices(order.order_type, order.limit_price, order.stop_price)
    filled, qty, status = order.filled_quantity, order.quantity, order.status
    slack = qty * _REL_TOL
    if filled > qty + slack:
        raise ValueError(f"filled_quantity {filled} exceeds quantity {qty}")
    if status is OrderStatus.FILLED and filled < qty - slack:
        raise ValueError(f"a filled order has filled_quantity {filled} of {qty}")
    if status is OrderStatus.PARTIALLY_FILLED and not 0 < filled < qty - slack:
        raise ValueError(f"a partially filled order has filled_quantity {filled} of {qty}")
    if status in (OrderStatus.NEW, OrderStatus.SUBMITTED, OrderStatus.ACCEPTED) and filled:
        raise ValueError(f"a {status.value} order has filled_quantity {filled}")
    if (avg_price is None) != (filled == 0):
        raise ValueError(f"{avg_name} must be set exactly when filled_quantity > 0")
    if status is OrderStatus.REJECTED and order.reason is None:
        raise ValueError("a rejected order needs a reason")


def _order_rules(avg_name: str) -> tuple[str, ...]:
    return (
        *_PRICE_RULES,
        "filled_quantity <= quantity",
        "partially_filled: 0 < filled_quantity < quantity; filled: filled_quantity == quantity",
        "new, submitted, accepted: filled_quantity == 0",
        f"{avg_name} is set exactly when filled_quantity > 0",
        "rejected: reason is set",
    )


class Order(Payload):
    """An order's state as Execution knows it; each status change is a new message."""

    SCHEMA: ClassVar[str] = "order"
    RULES: ClassVar[tuple[str, ...]] = _order_rules("avg_price")
    JSON_SCHEMA_EXTRA: ClassVar[dict[str, Any]] = _price_rules_schema()

    client_order_id: ClientOrderId
    intent_id: MessageId
    strategy: Name
    symbol: Symbol
    side: SideField
    quantity: Quantity
    order_type: OrderTypeField
    limit_price: Price | None = None
    stop_price: Price | None = None
    time_in_force: TimeInForceField
    status: OrderStatusField
    filled_quantity: NonNegative
    avg_price: Price | None = Field(
        default=None, description="Average price of the fills so far; null before the first."
    )
    broker_order_id: ExternalId | None = None
    reason: ShortText | None = Field(default=None, description="Why it was rejected or canceled.")
    ts: UtcDatetime = Field(description="When the order reached this status.")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _check_order(self, self.avg_price, "avg_price")
        return self


# Major 1 of `order`, read while a stream may still hold it: `avg_fill_price` (now `avg_price`)
# and client order ids up to 128 characters (now 48, the broker's limit). Its docstring is the
# one major 1 was published with.
class OrderV1(Payload):
    """An order's state as Execution knows it; each status change is a new message."""

    SCHEMA: ClassVar[str] = "order"
    RULES: ClassVar[tuple[str, ...]] = _order_rules("avg_fill_price")
    JSON_SCHEMA_EXTRA: ClassVar[dict[str, Any]] = _price_rules_schema()

    client_order_id: ExternalId
    intent_id: MessageId
    strategy: Name
    symbol: Symbol
    side: SideField
    quantity: Quantity
    order_type: OrderTypeField
    limit_price: Price | None = None
    stop_price: Price | None = None
    time_in_force: TimeInForceField
    status: OrderStatusField
    filled_quantity: NonNegative
    avg_fill_price: Price | None = None
    broker_order_id: ExternalId | None = None
    reason: ShortText | None = Field(default=None, description="Why it was rejected or canceled.")
    ts: UtcDatetime = Field(description="When the order reached this status.")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _check_order(self, self.avg_fill_price, "avg_fill_price")
        return self


class Fill(Payload):
    """One execution reported by the broker (paper or Alpaca paper)."""

    SCHEMA: ClassVar[str] = "fill"

    client_order_id: ClientOrderId
    broker_order_id: ExternalId
    execution_id: ExternalId = Field(description="Unique per fill at the broker; the dedup key.")
    symbol: Symbol
    side: SideField
    quantity: Quantity
    price: Price
    fee: Finite = Field(description="Fee charged; negative for a rebate.")
    fee_currency: Currency
    liquidity: LiquidityField
    ts: UtcDatetime


# Major 1 of `fill`, read while a stream may still hold it: client order ids up to 128
# characters (now 48, the broker's limit). Its docstring is the one major 1 was published with.
class FillV1(Fill):
    """One execution reported by the broker (paper or Alpaca paper)."""

    client_order_id: ExternalId


class PositionUpdate(Payload):
    """One symbol's position after a fill or a mark-to-market (records keep it as a
    `PositionSnapshot`; the ledger behind it is `LedgerEntry`)."""

    SCHEMA: ClassVar[str] = "position"
    RULES: ClassVar[tuple[str, ...]] = ("avg_price > 0 when quantity != 0",)

    symbol: Symbol
    quantity: Finite = Field(description="Signed: positive long, negative short, 0 flat.")
    avg_price: NonNegative
    mark_price: Price | None = None
    market_value: Finite
    unrealized_pnl: Finite
    realized_pnl: Finite
    ts: UtcDatetime

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.quantity != 0 and self.avg_price == 0:
            raise ValueError("an open position needs avg_price > 0")
        return self


# ---- risk and audit ---------------------------------------------------------------------------


class RiskEvent(Payload):
    """Something an operator or the autonomous agent must see: limit breaches, breakers, execution
    failures, data problems (the `risk_events` stream)."""

    SCHEMA: ClassVar[str] = "risk_event"

    kind: RiskKindField
    severity: SeverityField
    scope: Ref = Field(description="What it concerns: global, symbol:AAPL, stream:orders, ...")
    detail: LongText
    data: Annotated[dict[Name, Scalar], Field(max_length=MAX_DATA_ITEMS)] = Field(
        description="Flat facts for dashboards: limit, value, stream, entry ids, ..."
    )
    ts: UtcDatetime = Field(description="When it happened (may precede produced_at).")


class Audit(Payload):
    """A change made by a person or an agent: who, what, from which value to which, and why."""

    SCHEMA: ClassVar[str] = "audit"

    actor: Ref = Field(description="Who acted: user:alice, agent:autonomous, service:feasibility.")
    action: Name = Field(description="What was done: kill_switch.clear, config.set, ...")
    target: Ref
    old_value: Json
    new_value: Json
    reason: LongText
