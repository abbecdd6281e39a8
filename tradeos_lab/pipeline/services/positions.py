"""Positions: fills in, the book out (the `positions` stream, the cache, the records' snapshots).

What it consumes: `fills.raw`. What it decides: each fill is applied once to the records' position
ledger (keyed by the broker's execution id, so a redelivered fill changes nothing); the book is
the ledger's, by average cost (`Holding`: position, average price, realised P&L net of fees),
loaded from the records once and then moved by each fill once, marked at the cache's latest
price.

What it emits: a `positions` message for the fill's symbol. Around that: the cache's position,
balance and portfolio value (`cache.set_account`, from the broker's account in the records) and
a snapshot of the whole book in the records with every batch of fills (as of its last fill, in
the transaction that records them) and on a schedule (`timers`), whose positions are published
too (mark to market).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from tradeos_lab.brokers import PaperBroker
from tradeos_lab.contracts import (
    Fill,
    FillMessage,
    FillV1,
    FillV1Message,
    PositionUpdate,
    Side,
    derive,
    new_message,
)
from tradeos_lab.errors import ContractError, ValidationError
from tradeos_lab.keys import Stream
from tradeos_lab.pipeline.service import Service, Timer
from tradeos_lab.stores.records import fill_columns

if TYPE_CHECKING:
    from tradeos_lab.contracts import Message
    from tradeos_lab.stores.records import LedgerEntry, RecordsStore
    from tradeos_lab.tiers.cache import Price

SNAPSHOT_EVERY_S = 60.0
"""How often the whole book is snapshotted and marked to market without a fill."""
_FLAT = 1e-12


@dataclass
class Holding:
    """A symbol's position by average cost, moved one execution at a time: adding to a position
    moves the average price, reducing it realises P&L against that price; fees are taken from
    realised P&L."""

    quantity: float = 0.0
    avg: float = 0.0
    realized: float = 0.0

    def apply(self, signed: float, price: float, fee: float) -> None:
        quantity, avg = self.quantity, self.avg
        self.realized -= fee
        if abs(quantity) <= _FLAT or math.copysign(1, quantity) == math.copysign(1, signed):
            self.avg = (avg * abs(quantity) + price * abs(signed)) / (abs(quantity) + abs(signed))
            self.quantity = quantity + signed
            return
        closed = min(abs(signed), abs(quantity))
        self.realized += closed * (price - avg) * math.copysign(1, quantity)
        self.quantity = quantity + signed
        if abs(self.quantity) <= _FLAT:
            self.quantity, self.avg = 0.0, 0.0
        elif abs(signed) > closed:  # went through flat: the rest opens at this price
            self.avg = price

    def position(self, symbol: str, mark: float | None, at: datetime) -> PositionUpdate:
        """The holding as a `positions` message payload, marked at `mark` (else at cost)."""
        quantity, avg = self.quantity, self.avg
        marked = mark if mark is not None else (avg or None)
        value = quantity * marked if marked is not None else 0.0
        return PositionUpdate(
            symbol=symbol,
            quantity=quantity,
            avg_price=avg,
            mark_price=marked,
            market_value=value,
            unrealized_pnl=(marked - avg) * quantity if marked is not None and quantity else 0.0,
            realized_pnl=self.realized,
            ts=at,
        )


def position_of(
    symbol: str, entries: Iterable[LedgerEntry], mark: float | None, at: datetime
) -> PositionUpdate:
    """A symbol's position from its ledger entries in execution order (see `Holding`)."""
    holding = Holding()
    for e in entries:
        holding.apply(e.signed_quantity, e.price, e.fee)
    return holding.position(symbol, mark, at)


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

    #: Each symbol's holding, loaded from the records' ledger on first use (and again by every
    #: scheduled snapshot), then moved by each fill once, by its execution id.
    _holdings: dict[str, Holding] | None = None
    _applied: set[str]

    def handle(self, message: Message) -> Sequence[Message]:
        return self.handle_batch([message])[0]

    def handle_batch(self, messages: Sequence[Message]) -> list[Sequence[Message]]:
        """The batch's fills recorded in the ledger and applied to the book, and the book
        snapshotted as of the batch's last fill, in one records transaction; the cache's
        positions and account written once for the batch."""
        fills: list[Fill | FillV1] = []
        for message in messages:
            if not isinstance(message, FillMessage | FillV1Message):
                raise ContractError(f"positions takes fills, not {message.schema_name}")
            fills.append(message.payload)
        symbols = sorted({f.symbol for f in fills})
        prices = self.ctx.lab.cache.get_prices(symbols)
        out: list[Sequence[Message]] = []
        with self._one_at_a_time:  # the snapshot timer fires on another thread
            holdings = self._loaded()
            before = {s: replace(h) for s, h in holdings.items()}
            # what the batch adds to the applied ids (a copy of them all would grow with the book)
            fresh = {f.execution_id for f in fills} - self._applied
            try:
                # Read and built before the write transaction, so the records' write lock is
                # held only for the writes (a fill recorded since the read is skipped by them).
                unrecorded = self._unrecorded(fills)
                for message, fill in zip(messages, fills, strict=True):
                    position = self._move(fill, prices)
                    out.append(
                        [derive(message, position, producer=self.name, produced_at=self.ctx.now())]
                    )
                at = max(f.ts for f in fills)
                book = [
                    h.position(s, prices[s].price if s in prices else None, at)
                    for s, h in sorted(holdings.items())
                ]
                with self.records.batch():
                    if unrecorded:
                        self.records.record_fills(unrecorded)
                    self.records.snapshot_positions(book, account=self.broker.name, at=at)
            except BaseException:
                # nothing of the batch was kept: the book stands as before it
                self._holdings = before
                self._applied -= fresh
                raise
            self._cache(holdings, symbols)
        return out

    def _unrecorded(self, fills: Sequence[Fill | FillV1]) -> list[dict[str, Any]]:
        """The fills the records' ledger still lacks, as `record_fills` takes them. Execution's
        broker recorded most of them already (with their ledger entries; a recorded fill's order
        is recorded, by its foreign key): one read finds those, and only the others are looked
        up."""
        kept = self.records.known_fills(f.execution_id for f in fills)
        fills = [f for f in fills if f.execution_id not in kept]
        if not fills:
            return []
        brokers = self.records.brokers_of(f.client_order_id for f in fills)
        for fill in fills:
            if fill.client_order_id not in brokers:
                raise ValidationError(
                    f"fill {fill.execution_id} is of order {fill.client_order_id}, which the "
                    "records do not hold (Execution records an order before its fills)"
                )
        return [
            {**fill_columns(fill), "broker": brokers[fill.client_order_id] or self.broker.name}
            for fill in fills
        ]

    def _move(self, fill: Fill | FillV1, prices: dict[str, Price]) -> PositionUpdate:
        """Move the fill's symbol's holding by the fill (once, by its execution id)."""
        holding = self._loaded().setdefault(fill.symbol, Holding())
        if fill.execution_id not in self._applied:
            signed = fill.quantity if fill.side is Side.BUY else -fill.quantity
            holding.apply(signed, fill.price, fill.fee)
            self._applied.add(fill.execution_id)
        mark = prices[fill.symbol].price if fill.symbol in prices else fill.price
        return holding.position(fill.symbol, mark, fill.ts)

    def _loaded(self) -> dict[str, Holding]:
        if self._holdings is None:
            self._load()
        assert self._holdings is not None
        return self._holdings

    def _load(self) -> None:
        """The book from the records' whole ledger, in execution order."""
        holdings: dict[str, Holding] = {}
        applied: set[str] = set()
        for entry in self.records.ledger_amounts():
            holdings.setdefault(entry.symbol, Holding()).apply(
                entry.signed_quantity, entry.price, entry.fee
            )
            applied.add(entry.execution_id)
        self._holdings, self._applied = holdings, applied

    def timers(self) -> Sequence[Timer]:
        return (Timer("snapshot", SNAPSHOT_EVERY_S, self.snapshot),)

    def snapshot(self) -> list[Message]:
        """Reload the book from the records (fills other processes applied included), snapshot it
        now, refresh the cache, and publish the open positions."""
        with self._one_at_a_time:
            self._load()
            holdings = self._loaded()
            if not holdings:
                return []
            at = self.ctx.now()
            prices = self.ctx.lab.cache.get_prices(holdings)
            book = [
                h.position(s, prices[s].price if s in prices else None, at)
                for s, h in sorted(holdings.items())
            ]
            self.records.snapshot_positions(book, account=self.broker.name, at=at)
            self._cache(holdings, list(holdings))
        return [
            new_message(p, producer=self.name, produced_at=self.ctx.now())
            for p in book
            if p.quantity
        ]

    def _cache(self, holdings: dict[str, Holding], symbols: list[str]) -> None:
        """The batch's symbols' positions and the account in the cache, in one round trip."""
        account = self.broker.account()
        self.ctx.lab.cache.set_book(
            {s: (holdings[s].quantity, holdings[s].avg) for s in symbols},  # flat: removed
            balance=account.cash,
            portfolio_value=account.equity,
        )
