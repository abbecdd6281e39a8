"""Helpers shared by the bus tests and their subprocess scripts: realistic messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tradeos_lab.contracts import Bar, Message, new_message

_T0 = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)


def bar_message(i: int, *, symbol: str = "AAPL", producer: str = "ingestion") -> Message:
    """A valid 1m bar for `market_data`; `i` picks its minute and price, so messages differ."""
    price = 100.0 + (i % 1000) / 100
    payload = Bar(
        symbol=symbol,
        timeframe="1m",
        ts=_T0 + timedelta(minutes=i),
        open=price,
        high=price + 0.5,
        low=price - 0.5,
        close=price + 0.25,
        volume=1000.0 + i,
        vwap=price + 0.1,
        trade_count=42,
        source="synthetic",
    )
    return new_message(payload, producer=producer)  # type: ignore[return-value]


def minute_of(message: Message) -> int:
    """The `i` a `bar_message(i)` was made from."""
    ts = message.payload.ts  # type: ignore[union-attr]
    return int((ts - _T0).total_seconds() // 60)
