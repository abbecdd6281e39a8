"""Hypothesis strategies for every payload and message: valid by construction, edge-heavy.

`MESSAGE_STRATEGIES` maps each message class to a strategy; a test fails when a message type
is registered without one, so new contracts cannot skip the property tests.
"""

from __future__ import annotations

import operator
import string
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import assume
from hypothesis import strategies as st

from tradeos_lab.contracts import (
    Audit,
    AuditMessage,
    Bar,
    BarMessage,
    Direction,
    Envelope,
    Fill,
    FillMessage,
    FillV1,
    FillV1Message,
    Intent,
    IntentMessage,
    Liquidity,
    ModifiedSignal,
    ModifiedSignalMessage,
    Modifier,
    NewsArticle,
    NewsArticleMessage,
    Order,
    OrderMessage,
    OrderStatus,
    OrderType,
    OrderV1,
    OrderV1Message,
    PositionMessage,
    PositionUpdate,
    Quote,
    QuoteMessage,
    RawSignal,
    RawSignalMessage,
    RiskEvent,
    RiskEventMessage,
    RiskKind,
    ScoredNews,
    ScoredNewsMessage,
    Severity,
    Side,
    TimeInForce,
    TradeMessage,
    TradePrint,
    new_message_id,
)
from tradeos_lab.contracts.messages import MESSAGE_TYPES
from tradeos_lab.contracts.types import CLIENT_ORDER_ID_MAX_LENGTH
from tradeos_lab.symbols import Timeframe, canonical_name

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2199, 12, 31, tzinfo=UTC)

_UPPER = string.ascii_uppercase + string.digits
_ALNUM = string.ascii_letters + string.digits


def _word(first: str, rest: str, max_size: int, min_size: int = 0) -> st.SearchStrategy[str]:
    """A first character from `first`, then up to `max_size` from `rest` (faster than regex)."""
    tail = st.text(st.sampled_from(rest), min_size=min_size, max_size=max_size)
    return st.builds(operator.add, st.sampled_from(first), tail)


# canonical spellings only: a pair is written BASE-QUOTE, never with "/"
symbols = _word(_UPPER, _UPPER + ".-", 19)
names = _word(_ALNUM, _ALNUM + "_.:@/-", 63)
refs = _word(_ALNUM + "*", _ALNUM + "_.:@/*=-", 127)
external_ids = _word(_ALNUM, _ALNUM + "._:/-", 127)
client_order_ids = _word(_ALNUM, _ALNUM + "._:/-", CLIENT_ORDER_ID_MAX_LENGTH - 1)
currencies = _word(_UPPER, _UPPER, 9, min_size=1)
message_ids = st.builds(new_message_id)

_text_chars = st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from("\t\n\r")


def texts(max_size: int) -> st.SearchStrategy[str]:
    return st.text(_text_chars, min_size=1, max_size=max_size)


finite = st.floats(allow_nan=False, allow_infinity=False)
prices = st.floats(min_value=1e-8, max_value=1e9, exclude_min=False)
quantities = st.floats(min_value=1e-9, max_value=1e12)
non_negative = st.floats(min_value=0, max_value=1e12)
strengths = st.floats(min_value=-1, max_value=1)
probabilities = st.floats(min_value=0, max_value=1)
offsets = st.builds(
    lambda minutes: timezone(timedelta(minutes=minutes)), st.integers(-14 * 60, 14 * 60)
)


@st.composite
def times(draw: st.DrawFn) -> datetime:
    """Any instant 1970..2199, sometimes expressed with a non-UTC offset."""
    instant = draw(st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2199, 12, 30)))
    instant = instant.replace(tzinfo=UTC)
    return instant.astimezone(draw(st.just(UTC) | offsets))


def _direction(strength: float) -> Direction:
    return Direction.LONG if strength > 0 else Direction.SHORT if strength < 0 else Direction.FLAT


@st.composite
def bars(draw: st.DrawFn) -> Bar:
    tf = draw(st.sampled_from(list(Timeframe)))
    steps = draw(st.integers(0, int((LATEST - EPOCH).total_seconds()) // tf.seconds - 1))
    low = draw(prices)
    high = low + draw(st.floats(min_value=0, max_value=1e9))
    span = high - low

    def inside(u: float) -> float:
        return min(max(low + u * span, low), high)

    return Bar(
        symbol=draw(symbols),
        timeframe=tf,
        ts=EPOCH + timedelta(seconds=steps * tf.seconds),
        open=inside(draw(probabilities)),
        high=high,
        low=low,
        close=inside(draw(probabilities)),
        volume=draw(non_negative),
        vwap=draw(st.none() | st.just(inside(0.5))),
        trade_count=draw(st.none() | st.integers(0, 2**53)),
        source=draw(names),
    )


@st.composite
def quotes(draw: st.DrawFn) -> Quote:
    bid, ask = sorted((draw(prices), draw(prices)))
    return Quote(
        symbol=draw(symbols),
        ts=draw(times()),
        bid_price=bid,
        bid_size=draw(non_negative),
        ask_price=ask,
        ask_size=draw(non_negative),
        source=draw(names),
    )


trades = st.builds(
    TradePrint,
    symbol=symbols,
    ts=times(),
    price=prices,
    size=quantities,
    aggressor_side=st.none() | st.sampled_from(list(Side)),
    trade_id=st.none() | external_ids,
    source=names,
)


@st.composite
def raw_signals(draw: st.DrawFn) -> RawSignal:
    strength = draw(strengths | st.sampled_from([-1.0, 0.0, 1.0]))
    return RawSignal(
        strategy=draw(names),
        symbol=draw(symbols),
        timeframe=draw(st.sampled_from(list(Timeframe))),
        ts=draw(times()),
        direction=_direction(strength),
        strength=strength,
        confidence=draw(probabilities),
        features=draw(st.dictionaries(names, finite, max_size=64)),
        source_message_id=draw(message_ids),
    )


modifiers = st.builds(
    Modifier,
    name=names,
    effect=st.floats(min_value=-2, max_value=2),
    reason=st.none() | texts(256),
)


@st.composite
def modified_signals(draw: st.DrawFn) -> ModifiedSignal:
    adjusted = draw(strengths)
    return ModifiedSignal(
        raw_signal_id=draw(message_ids),
        strategy=draw(names),
        symbol=draw(symbols),
        timeframe=draw(st.sampled_from(list(Timeframe))),
        ts=draw(times()),
        direction=_direction(adjusted),
        raw_strength=draw(strengths),
        adjusted_strength=adjusted,
        confidence=draw(probabilities),
        modifiers=draw(st.lists(modifiers, max_size=32)),
        regime=draw(st.none() | names),
    )


@st.composite
def order_prices(draw: st.DrawFn) -> dict[str, Any]:
    order_type = draw(st.sampled_from(list(OrderType)))
    limit = draw(prices) if order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT) else None
    stop = draw(prices) if order_type in (OrderType.STOP, OrderType.STOP_LIMIT) else None
    return {"order_type": order_type, "limit_price": limit, "stop_price": stop}


@st.composite
def intents(draw: st.DrawFn) -> Intent:
    return Intent(
        symbol=draw(symbols),
        side=draw(st.sampled_from(list(Side))),
        quantity=draw(quantities),
        **draw(order_prices()),
        time_in_force=draw(st.sampled_from(list(TimeInForce))),
        strategy=draw(names),
        reduce_only=draw(st.booleans()),
        # unique as the contract spells them (names are case-insensitive)
        checks_passed=draw(st.lists(names, max_size=32, unique_by=canonical_name)),
        signal_id=draw(st.none() | message_ids),
    )


@st.composite
def order_fields(draw: st.DrawFn) -> dict[str, Any]:
    """The fields of an order message common to every major, consistent with its status."""
    status = draw(st.sampled_from(list(OrderStatus)))
    quantity = draw(quantities)
    if status is OrderStatus.FILLED:
        filled = quantity
    elif status is OrderStatus.PARTIALLY_FILLED:
        filled = quantity * draw(st.floats(min_value=0.001, max_value=0.999))
        assume(0 < filled < quantity * (1 - 1e-9))
    elif status in (OrderStatus.CANCELED, OrderStatus.EXPIRED):
        filled = quantity * draw(st.sampled_from([0.0, 0.5]))
    else:
        filled = 0.0
    reason = draw(texts(256)) if status is OrderStatus.REJECTED else draw(st.none() | texts(256))
    return dict(
        intent_id=draw(message_ids),
        strategy=draw(names),
        symbol=draw(symbols),
        side=draw(st.sampled_from(list(Side))),
        quantity=quantity,
        **draw(order_prices()),
        time_in_force=draw(st.sampled_from(list(TimeInForce))),
        status=status,
        filled_quantity=filled,
        average=draw(prices) if filled > 0 else None,
        broker_order_id=draw(st.none() | external_ids),
        reason=reason,
        ts=draw(times()),
    )


@st.composite
def orders(draw: st.DrawFn) -> Order:
    fields = draw(order_fields())
    average = fields.pop("average")
    return Order(client_order_id=draw(client_order_ids), avg_price=average, **fields)


@st.composite
def orders_v1(draw: st.DrawFn) -> OrderV1:
    fields = draw(order_fields())
    average = fields.pop("average")
    return OrderV1(client_order_id=draw(external_ids), avg_fill_price=average, **fields)


_fill_fields: dict[str, st.SearchStrategy[Any]] = {
    "broker_order_id": external_ids,
    "execution_id": external_ids,
    "symbol": symbols,
    "side": st.sampled_from(list(Side)),
    "quantity": quantities,
    "price": prices,
    "fee": finite,
    "fee_currency": currencies,
    "liquidity": st.sampled_from(list(Liquidity)),
    "ts": times(),
}
fills = st.builds(Fill, client_order_id=client_order_ids, **_fill_fields)
fills_v1 = st.builds(FillV1, client_order_id=external_ids, **_fill_fields)


@st.composite
def positions(draw: st.DrawFn) -> PositionUpdate:
    quantity = draw(finite | st.just(0.0))
    avg = draw(prices) if quantity != 0 else draw(st.just(0.0) | prices)
    return PositionUpdate(
        symbol=draw(symbols),
        quantity=quantity,
        avg_price=avg,
        mark_price=draw(st.none() | prices),
        market_value=draw(finite),
        unrealized_pnl=draw(finite),
        realized_pnl=draw(finite),
        ts=draw(times()),
    )


scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | finite | texts(256)

risk_events = st.builds(
    RiskEvent,
    kind=st.sampled_from(list(RiskKind)),
    severity=st.sampled_from(list(Severity)),
    scope=refs,
    detail=texts(4000),
    data=st.dictionaries(names, scalars, max_size=64),
    ts=times(),
)


def json_values(depth: int = 4) -> st.SearchStrategy[Any]:
    """JSON with finite numbers and clean text, nested at most `depth` levels."""
    leaves = st.none() | st.booleans() | st.integers() | finite | st.text(_text_chars, max_size=30)
    if depth == 0:
        return leaves
    inner = json_values(depth - 1)
    return (
        leaves
        | st.lists(inner, max_size=4)
        | st.dictionaries(st.text(_text_chars, max_size=10), inner, max_size=4)
    )


audits = st.builds(
    Audit,
    actor=refs,
    action=names,
    target=refs,
    old_value=json_values(),
    new_value=json_values(),
    reason=texts(4000),
)

content_hashes = st.text("0123456789abcdef", min_size=64, max_size=64)

news_articles = st.builds(
    NewsArticle,
    article_id=content_hashes,
    source=names,
    external_id=st.none() | texts(256),
    url=st.none() | texts(4000),
    title=texts(256),
    body=st.just("") | texts(20_000),
    published_at=st.none() | times(),
    fetched_at=times(),
)

scored_news = st.builds(
    ScoredNews,
    article_id=content_hashes,
    symbol=symbols,
    ts=times(),
    score=strengths,
    scorer=names,
    source=names,
    title=texts(256),
)

PAYLOAD_STRATEGIES: dict[type[Envelope[Any]], st.SearchStrategy[Any]] = {
    BarMessage: bars(),
    QuoteMessage: quotes(),
    TradeMessage: trades,
    NewsArticleMessage: news_articles,
    ScoredNewsMessage: scored_news,
    RawSignalMessage: raw_signals(),
    ModifiedSignalMessage: modified_signals(),
    IntentMessage: intents(),
    OrderMessage: orders(),
    OrderV1Message: orders_v1(),
    FillMessage: fills,
    FillV1Message: fills_v1,
    PositionMessage: positions(),
    RiskEventMessage: risk_events,
    AuditMessage: audits,
}


@st.composite
def messages_of(draw: st.DrawFn, cls: type[Envelope[Any]]) -> Envelope[Any]:
    """A valid message of class `cls` with a random envelope."""
    message_id = draw(message_ids)
    return cls(
        schema=cls.SCHEMA,
        version=cls.VERSION,
        message_id=message_id,
        correlation_id=draw(st.just(message_id) | external_ids),
        causation_id=draw(st.none() | message_ids),
        producer=draw(names),
        produced_at=draw(times()),
        payload=draw(PAYLOAD_STRATEGIES[cls]),
    )


any_message = st.one_of([messages_of(cls) for cls in MESSAGE_TYPES])
