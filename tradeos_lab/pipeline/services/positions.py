"""Positions: fills in, the book out (the `positions` stream, the cache, the records' snapshots).

What it consumes: `fills.raw`. What it decides: each fill is applied once to the records' position
ledger (keyed by the broker's execution id, so a redelivered fill changes nothing); the position
of its symbol is the ledger's sum, its average price and realised P&L (net of fees) follow from
the ledger in order (average cost), marked at the cache's latest price.

What it emits: a `positions` message for the fill's symbol. Around that: the cache's position,
balance and portfolio value (`cache.set_account`, from the broker's account in the records) and
a snapshot of the whole book in the records on every fill and on a schedule (`timers`), whose
positions are published too (mark to market).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, ClassVar

from tradeos_lab.brokers import PaperBroker
from tradeos_lab.contracts import (
    FillMessage,
    FillV1Message,
    PositionUpdate,
    derive,
    new_message,
)
from tradeos_lab.errors import ContractError, ValidationError
from tradeos_lab.keys import Stream
from tradeos_lab.pipeline.service import Service, Timer

if TYPE_CHECKING:
    from tradeos_lab.contracts import Message
    from tradeos_lab.stores.records import LedgerEntry, RecordsStore

SNAPSHOT_EVERY_S = 60.0
"""How often the whole book is snapshotted and marked to market without a fill."""
_FLAT = 1e-12


def position_of(
    symbol: str, entries: Iterable[LedgerEntry], mark: float | None, at: datetime
) -> PositionUpdate:
    """A symbol's position from its ledger entries in execution order, by average cost: adding
    to a position moves the average price, reducing it realises P&L against that price; fees
    are taken from realised P&L."""
    quantity = avg = realized = 0.0
    for e in entries:
        signed, price = e.signed_quantity, e.price
        realized -= e.fee
        if abs(quantity) <= _FLAT or math.copysign(1, quantity) == math.copysign(1, signed):
            avg = (avg * abs(quantity) + price * abs(signed)) / (abs(quantity) + abs(signed))
            quantity += signed
            continue
        closed = min(abs(signed), abs(quantity))
        realized += closed * (price - avg) * math.copysign(1, quantity)
        quantity += signed
        if abs(quantity) <= _FLAT:
            quantity, avg = 0.0, 0.0
        elif abs(signed) > closed:  # went through flat: the rest opens at this price
            avg = price
    marked = mark if mark is not None else (avg or None)
    value = quantity * marked if marked is not None else 0.0
    return PositionUpdate(
        symbol=symbol,
        quantity=quantity,
        avg_price=avg,
        mark_price=marked,
        market_value=value,
        unrealized_pnl=(marked - avg) * quantity if marked is not None and quantity else 0.0,
        realized_pnl=realized,
        ts=at,
    )


class Positions(Service):
    """Applies fills to the ledger once and keeps the book in the cache and the records."""

    name: ClassVar[str] = "positions"
    inputs: ClassVar[tuple[Stream, ...]] = (Stream.FILLS_RAW,)
    outputs: ClassVar[tuple[Stream, ...]] = (Stream.POSITIONS,)

    @property
    def records(self) -> RecordsStore:
        return self.ctx.lab.records

    @cached_property
    def broker(self) -> PaperBroker:
        """The paper account, read from the records (cash, positions)."""
        lab = self.ctx.lab
        return PaperBroker.of_stack(
            lab.records, lab.cache, self.ctx.settings.pipeline_timeframe, clock=self.ctx.clock
        )

    @cached_property
    def _one_at_a_time(self) -> threading.Lock:
        return threading.Lock()

    #: The book as last computed (a copy of the records' ledger, rebuilt on first use and by
    #: every scheduled snapshot).
    _last_book: dict[str, PositionUpdate] | None = None

    def handle(self, message: Message) -> Sequence[Message]:
        if not isinstance(message, FillMessage | FillV1Message):
            raise ContractError(f"positions takes fills, not {message.schema_name}")
        fill = message.payload
        try:
            order = self.records.order(fill.client_order_id)
        except ValidationError:
            raise ValidationError(
                f"fill {fill.execution_id} is of order {fill.client_order_id}, which the records "
                "do not hold (Execution records an order before its fills)"
            ) from None
        self.records.record_fill(
            execution_id=fill.execution_id,
            client_order_id=fill.client_order_id,
            symbol=fill.symbol,
            side=fill.side.value,
            quantity=fill.quantity,
            price=fill.price,
            fee=fill.fee,
            filled_at=fill.ts,
            broker=order.broker or self.broker.name,
        )
        with self._one_at_a_time:  # the snapshot timer fires on another thread
            if self._last_book is None:
                self._last_book = self._book(fill.ts)
            # Only this fill's symbol moved: read its ledger; the others stand as last computed
            # (the scheduled snapshot recomputes the whole book).
            entries = self.records.ledger(symbol=fill.symbol)
            price = self.ctx.lab.cache.get_price(fill.symbol)
            position = position_of(
                fill.symbol, entries, price.price if price is not None else fill.price, fill.ts
            )
            book = {**self._last_book, fill.symbol: position}
            self._last_book = book
            self.records.snapshot_positions(book.values(), account=self.broker.name, at=fill.ts)
            self._cache(book, [fill.symbol])
        return [derive(message, position, producer=self.name, produced_at=self.ctx.now())]

    def timers(self) -> Sequence[Timer]:
        return (Timer("snapshot", SNAPSHOT_EVERY_S, self.snapshot),)

    def snapshot(self) -> list[Message]:
        """Snapshot the whole book now, refresh the cache, and publish the open positions."""
        with self._one_at_a_time:
            book = self._book(self.ctx.now())
            self._last_book = book
            if not book:
                return []
            self.records.snapshot_positions(
                book.values(), account=self.broker.name, at=self.ctx.now()
            )
            self._cache(book, list(book))
        return [
            new_message(p, producer=self.name, produced_at=self.ctx.now())
            for p in book.values()
            if p.quantity
        ]

    def _book(self, at: datetime) -> dict[str, PositionUpdate]:
        """Every symbol the ledger holds, as a position marked at the cache's latest price."""
        by_symbol: dict[str, list[LedgerEntry]] = {}
        for entry in self.records.ledger():
            by_symbol.setdefault(entry.symbol, []).append(entry)
        prices = self.ctx.lab.cache.get_prices(by_symbol) if by_symbol else {}
        return {
            symbol: position_of(
                symbol, entries, prices[symbol].price if symbol in prices else None, at
            )
            for symbol, entries in sorted(by_symbol.items())
        }

    def _cache(self, book: dict[str, PositionUpdate], symbols: list[str]) -> None:
        cache = self.ctx.lab.cache
        for symbol in symbols:
            p = book[symbol]
            if p.quantity:
                cache.set_position(symbol, quantity=p.quantity, avg_price=p.avg_price)
            else:
                cache.remove_position(symbol)
        account = self.broker.account()
        cache.set_account(balance=account.cash, portfolio_value=account.equity)
