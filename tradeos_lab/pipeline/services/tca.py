"""TCA Monitor: fills in; what they cost, what their signals earned, how good each strategy is.

What it consumes: `fills.raw` (its own consumer group). Each fill is traced through the records'
attribution chain (trade -> modified signal) to the bar that caused it; that bar's close is the
fill's arrival price (the bar from the cache, else the lake).

What it decides, per fill, each idempotent by its key so a redelivered fill changes nothing:
- the fill's slippage against the arrival price (`fill_costs`, by execution id);
- its order's implementation shortfall, revised with each fill (`order_costs`, by order);
- for a fill from a real venue (the order's broker is not the built-in paper broker), the paper
  broker's fill model run on the same order and bar: the shadow fill and its differences;
- its signal opened at each holding horizon (`signal_horizons`, by signal and horizon).

A timer closes the horizons whose bars have come, writes a signal's outcome once all its
horizons are closed (`signal_outcomes`, by signal) and keeps each touched strategy's win rate and
information coefficient, over its latest `SCORE_WINDOW` outcomes, in the cache.

What it emits: an `audit` entry per signal outcome closed; nothing per fill.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, TypeAlias

import numpy as np
import pandas as pd

from tradeos_lab.brokers import PaperBroker
from tradeos_lab.contracts import Bar, FillMessage, FillV1Message, new_message
from tradeos_lab.errors import ContractError, LakeInUse, TransientError, ValidationError
from tradeos_lab.keys import Stream
from tradeos_lab.pipeline.service import Service, Timer
from tradeos_lab.stores.records import fill_columns
from tradeos_lab.symbols import Timeframe
from tradeos_lab.tca import (
    horizon_result,
    implementation_shortfall,
    scores,
    shadow_fill,
    slippage_bps,
)

if TYPE_CHECKING:
    from tradeos_lab.contracts import Fill, Message
    from tradeos_lab.stores.records import (
        FillAmountRow,
        RecordsStore,
        SignalHorizonRow,
        SignalRow,
        TradeChainRow,
    )
    from tradeos_lab.tiers.cache import Price

HORIZONS_BARS: tuple[int, ...] = (5, 15, 60)
"""Holding horizons a filled signal is measured at, in bars of its timeframe after its bar."""
SCORE_HORIZON_BARS = HORIZONS_BARS[0]
"""The horizon win rate and IC are measured at."""
SCORE_WINDOW = 100
"""Latest outcomes of a strategy its win rate and IC are computed over."""
COMPLETE_EVERY_S = 1.0
"""How often open horizons are checked for their bars."""
EXPIRE_AFTER_HORIZONS = 3.0
"""A signal whose longest horizon has not closed after this many times its length (wall clock,
from when it was opened) is expired: its symbol's bars stopped coming."""
_REL_TOL = 1e-9
SWEEP_LIMIT = 100
"""Signals left unconcluded that one run of the timer concludes."""

log = logging.getLogger(__name__)


class TcaMonitor(Service):
    """Measures every fill against its arrival price and every filled signal over its horizons."""

    name: ClassVar[str] = "tca"
    inputs: ClassVar[tuple[Stream, ...]] = (Stream.FILLS_RAW,)
    outputs: ClassVar[tuple[Stream, ...]] = (Stream.AUDIT,)
    background: ClassVar[bool] = True  # measures fills after the fact

    @property
    def records(self) -> RecordsStore:
        return self.ctx.lab.records

    @cached_property
    def fill_model(self) -> PaperBroker:
        """The built-in paper broker as the records configure it; only its fill model is used."""
        lab = self.ctx.lab
        return PaperBroker.of_stack(
            lab.records, lab.cache, self.ctx.settings.pipeline_timeframe, clock=self.ctx.clock
        )

    @cached_property
    def _one_at_a_time(self) -> threading.RLock:
        # The completion timer runs on its own thread beside the fills. Taken before any records
        # transaction (a batch holds one), so the two threads never wait on each other's.
        return threading.RLock()

    @cached_property
    def _unscored(self) -> set[str]:
        """Strategies whose scores the cache did not take (it was down): retried next run."""
        return set()

    #: Whether the records were swept for signals left unconcluded (by a crash, or by another
    #: process): done at the first runs of the timer, then each run concludes what it ended.
    _swept: bool = False

    # ---- fills, a batch at a time -----------------------------------------------------------

    def handle(self, message: Message) -> Sequence[Message]:
        return self.handle_batch([message])[0]

    def handle_batch(self, messages: Sequence[Message]) -> list[Sequence[Message]]:
        """The batch's fills measured with a few statements for all of them: their trades with
        their orders and their signals read in one query each, as plain rows, each series'
        cached bars read once (every fill's arrival bar was cached before the fill was made),
        the latest price of each symbol once, the fills kept before of their orders and
        signals in one query, then the fill costs, order costs and signal horizons written in
        one records transaction, a statement each. A fill that cannot be measured fails the
        batch: the runner then hands the fills over one at a time, so it fails alone."""
        fills = [_fill_of(m) for m in messages]
        records = self.records
        with self._one_at_a_time:
            # its reads in one read transaction, before the write transaction
            with records.reading():
                chains = records.trade_chains_of(f.execution_id for f in fills)
                signals = records.signal_rows_of(
                    sid for c in chains.values() if (sid := c.trade.modified_signal_id) is not None
                )
                bars: dict[tuple[str, Timeframe], _Series] = {}
                measured: list[_Measured] = []
                for message, fill in zip(messages, fills, strict=True):
                    chain = chains.get(fill.execution_id)
                    if chain is None:
                        raise ValidationError(
                            f"fill {fill.execution_id} has no trade in the records (Execution "
                            "records a fill's trade before it publishes the fill)"
                        )
                    _check_against_trade(fill, chain)
                    signal = _signal_of(chain, signals)
                    arrival = None if signal is None else self._arrival(signal, bars)
                    measured.append(_Measured(message, fill, chain, signal, arrival))
                costs = self._fill_costs(measured)
                with_arrival = [m for m in measured if m.arrival is not None]
                order_costs: list[dict[str, Any]] = []
                openings: list[dict[str, Any]] = []
                if with_arrival:
                    by_order, by_signal = self._fill_amounts(with_arrival, costs)
                    cache = self.ctx.lab.cache
                    symbols = {m.chain.order.symbol for m in with_arrival}
                    prices = cache.get_prices(symbols)
                    order_costs = self._order_costs(with_arrival, prices, by_order)
                    openings = self._openings(with_arrival, by_signal)
            # This process runs at a lower priority (`Service.background`): whatever it did
            # while holding the records' write lock would keep the trading stages waiting the
            # longer, so the lock is held for the three writes alone.
            with records.batch():
                records.record_fill_costs(costs)
                records.record_order_costs(order_costs)
                records.open_signals(openings)
        return [[] for _ in messages]

    def _fill_amounts(
        self, measured: Sequence[_Measured], costs: Sequence[Mapping[str, Any]]
    ) -> tuple[dict[str, list[_Amount]], dict[str, list[_Amount]]]:
        """Every fill kept of the measured fills' orders and signals, by order and by signal,
        with the batch's own `costs` not kept yet (a batch handled again counts each once)."""
        cids = {m.chain.order.client_order_id for m in measured}
        sids = {sid for m in measured if (sid := m.chain.trade.raw_signal_id)}
        amounts: list[_Amount] = list(
            self.records.fill_amounts_of(client_order_ids=cids, signal_ids=sids)
        )
        kept = {a.execution_id for a in amounts}
        for c in costs:  # as the records will hold them: once per execution id
            if c["execution_id"] not in kept and (
                c["client_order_id"] in cids or c["signal_id"] in sids
            ):
                kept.add(c["execution_id"])
                amounts.append(_BatchFill(*(c[f] for f in _BatchFill._fields)))
        by_order: dict[str, list[_Amount]] = defaultdict(list)
        by_signal: dict[str, list[_Amount]] = defaultdict(list)
        for amount in amounts:
            by_order[amount.client_order_id].append(amount)
            if amount.signal_id is not None:
                by_signal[amount.signal_id].append(amount)
        return by_order, by_signal

    def _arrival(
        self, signal: SignalRow, bars: dict[tuple[str, Timeframe], _Series]
    ) -> _Arrival | None:
        """The bar the signal was made on (the chain's first message): its close is the arrival
        price of everything the signal caused. None when neither the cache nor the lake has it.
        `bars`: the cached bars read for the batch, by series."""
        tf = Timeframe.parse(signal.payload["timeframe"])
        ts: datetime = signal.ts
        cached = bars.get((signal.symbol, tf))
        if cached is None:
            cached = bars[signal.symbol, tf] = _Series.of(
                self.ctx.lab.cache.get_bars(signal.symbol, tf)
            )
        at = _ns(ts)
        if cached.holds(at):  # the bar is looked up where it is, as `_bars` would slice it
            found, i = cached, cached.first_after(at - tf.seconds * 1_000_000_000)
        else:
            after = ts - timedelta(seconds=tf.seconds)
            found, i = self._bars(signal.symbol, tf, after=after, count=1, cached=cached), 0
        if i >= len(found) or found.ts_ns[i] != at:
            return None
        return _Arrival(signal.symbol, tf, ts, float(found.close[i]), found, i)

    def _bars(
        self,
        symbol: str,
        tf: Timeframe,
        *,
        after: datetime,
        count: int,
        cached: _Series,
    ) -> _Series:
        """Up to `count` bars of `symbol` after `after`, oldest first: from the `cached` bars
        when they still hold the bar right after `after`, else the lake."""
        first_wanted = after + timedelta(seconds=tf.seconds)
        if cached.holds(_ns(first_wanted)):
            return cached.after(after, count)
        # The cache lost (or never had) the start: read a span wide enough for gaps.
        end = first_wanted + timedelta(seconds=tf.seconds * count * 2)
        try:
            stored = self.ctx.lab.lake.read_bars(symbol, tf, start=first_wanted, end=end)
        except (LakeInUse, TransientError) as e:
            # A fill is measured without its arrival price rather than held or dead-lettered:
            # the lake is history, and its outage must not stop the fills' costs being kept.
            log.warning("tca could not read %s %s bars from the lake: %s", symbol, tf.value, e)
            return cached.after(after, 0)
        return _Series.of(stored.head(count))

    def _fill_costs(self, measured: Sequence[_Measured]) -> list[dict[str, Any]]:
        """The fills' costs as `RecordsStore.record_fill_cost` keeps them; for a real venue's
        fill with an arrival bar, the paper fill model's shadow of it too (on the order as the
        records hold it, read for those fills only)."""
        paper = self.fill_model.name
        venue = {
            m.chain.order.client_order_id
            for m in measured
            if m.arrival is not None and (m.chain.order.broker or paper) != paper
        }
        orders = self.records.orders_of(venue) if venue else {}
        costs = []
        for m in measured:
            fill, chain, arrival = m.fill, m.chain, m.arrival
            broker = chain.order.broker or paper
            shadow: dict[str, float | None] = {}
            if arrival is not None and broker != paper:
                model = shadow_fill(
                    self.fill_model,
                    orders[chain.order.client_order_id],
                    arrival.bar(),
                    filled_before=self._filled_before(fill),
                    venue_quantity=fill.quantity,
                    venue_price=fill.price,
                    venue_fee=fill.fee,
                )
                shadow = {
                    "shadow_quantity": model.quantity,
                    "shadow_price": model.price,
                    "shadow_fee": model.fee,
                    "shadow_price_diff_bps": model.price_diff_bps,
                }
            costs.append(
                {
                    **fill_columns(fill),
                    "correlation_id": m.message.correlation_id,
                    "signal_id": chain.trade.raw_signal_id,
                    "strategy": chain.order.strategy,
                    "broker": broker,
                    "arrival_price": None if arrival is None else arrival.close,
                    "arrival_at": None if arrival is None else arrival.ts,
                    "slippage_bps": None
                    if arrival is None
                    else slippage_bps(fill.side, fill.price, arrival.close),
                    **shadow,
                }
            )
        return costs

    def _filled_before(self, fill: Fill) -> float:
        """What the order had filled before this fill, by the records' fills in fill order."""
        before = 0.0
        for kept in self.records.fills(fill.client_order_id):
            if kept.execution_id == fill.execution_id:
                break
            before += kept.quantity
        return before

    def _order_costs(
        self,
        measured: Sequence[_Measured],
        prices: Mapping[str, Price | None],
        kept: Mapping[str, list[_Amount]],
    ) -> list[dict[str, Any]]:
        """Each order's shortfall over all its fills measured so far, `kept` by order (this
        batch's included), as `RecordsStore.record_order_costs` keeps it; the unfilled rest at
        the symbol's latest price in the cache, `prices` (the arrival close when there is
        none)."""
        latest: dict[tuple[str, str], _Measured] = {}
        for m in measured:  # one per order: its fills in the batch share its arrival bar
            latest[m.chain.order.client_order_id, m.chain.order.symbol] = m
        rows = []
        for (cid, symbol), m in latest.items():
            order, arrival = m.chain.order, m.arrival
            assert arrival is not None  # measured with an arrival bar only
            price = prices.get(symbol)
            last = price.price if price is not None else arrival.close
            shortfall = implementation_shortfall(
                order.side,
                ordered_quantity=order.quantity,
                arrival_price=arrival.close,
                fills=[(f.quantity, f.price, f.fee) for f in kept[cid]],
                last_price=last,
            )
            rows.append(
                {
                    "client_order_id": cid,
                    "strategy": order.strategy,
                    "broker": order.broker or self.fill_model.name,
                    "symbol": symbol,
                    "side": order.side,
                    "quantity": order.quantity,
                    "filled_quantity": shortfall.filled_quantity,
                    "arrival_price": arrival.close,
                    "avg_price": shortfall.avg_price,
                    "last_price": last,
                    "fees": shortfall.fees,
                    "execution_cost": shortfall.execution_cost,
                    "opportunity_cost": shortfall.opportunity_cost,
                    "shortfall": shortfall.total,
                    "shortfall_bps": shortfall.bps,
                }
            )
        return rows

    def _openings(
        self, measured: Sequence[_Measured], kept: Mapping[str, list[_Amount]]
    ) -> list[dict[str, Any]]:
        """Each raw signal behind these fills opened at every horizon with its fills so far,
        `kept` by signal (all of one side: one order), as `RecordsStore.open_signals` keeps
        them."""
        by_signal = {sid: m for m in measured if (sid := m.chain.trade.raw_signal_id) is not None}
        openings = []
        for signal_id, m in by_signal.items():
            fills, signal, arrival = kept[signal_id], m.signal, m.arrival
            assert signal is not None  # measured with an arrival bar: from a signal
            assert arrival is not None
            quantity = sum(f.quantity for f in fills)
            openings.append(
                {
                    "signal_id": signal_id,
                    "horizons": HORIZONS_BARS,
                    "strategy": signal.strategy,
                    "symbol": signal.symbol,
                    "timeframe": arrival.timeframe.value,
                    "signal_at": signal.ts,
                    "strength": float(signal.payload["raw_strength"]),
                    "side": fills[0].side,
                    "quantity": quantity,
                    "avg_price": sum(f.quantity * f.price for f in fills) / quantity,
                    "fees": sum(f.fee for f in fills),
                    "arrival_price": arrival.close,
                }
            )
        return openings

    # ---- the timer: horizons closed, outcomes written, scores kept ---------------------------

    def timers(self) -> Sequence[Timer]:
        return (Timer("complete", COMPLETE_EVERY_S, self.complete),)

    def complete(self) -> list[Message]:
        """Close every open horizon whose bar has come; an audit entry per outcome closed.

        A few statements for all the signals (every horizon of the signals with one open read
        once, the closes written, the fills read and the outcomes written once each), the
        writes in one records transaction that holds the write lock only for them. A signal
        this run ends is concluded from its horizons as read and closed here; only one a crash
        left is read again."""
        with self._one_at_a_time:
            by_signal: dict[str, list[SignalHorizonRow]] = defaultdict(list)
            for row in self.records.horizons_of_open_signals():
                by_signal[row.signal_id].append(row)
            by_market: dict[tuple[str, str], list[str]] = defaultdict(list)
            for signal_id, rows in by_signal.items():
                by_market[rows[0].symbol, rows[0].timeframe].append(signal_id)
            scored: set[str] = set()
            closes: list[dict[str, Any]] = []
            expired: list[str] = []
            # Signals with nothing open once this run's writes are in, with their horizons so.
            ended: dict[str, _Concluded] = {}
            count = max(HORIZONS_BARS)
            for (symbol, timeframe), signal_ids in by_market.items():
                tf = Timeframe.parse(timeframe)
                cached = _Series.of(self.ctx.lab.cache.get_bars(symbol, tf))  # once per market
                # Where each signal's bars start in the cached ones, found for all at once.
                at_ns = [_ns(by_signal[s][0].signal_at) for s in signal_ids]
                starts = np.searchsorted(cached.ts_ns, np.array(at_ns, np.int64), side="right")
                step_ns = tf.seconds * 1_000_000_000
                for signal_id, at, start in zip(signal_ids, at_ns, starts.tolist(), strict=True):
                    rows = by_signal[signal_id]
                    still_open = [r for r in rows if r.status == "open"]
                    if cached.holds(at + step_ns):
                        within = min(count, len(cached) - start)
                        closing = _closes(still_open, cached, start, within)
                    else:  # the cache lost the start: the lake's bars (see `_bars`)
                        after = rows[0].signal_at
                        bars = self._bars(symbol, tf, after=after, count=count, cached=cached)
                        closing = _closes(still_open, bars, 0, len(bars))
                    closes += closing
                    if any(c["horizon_bars"] == SCORE_HORIZON_BARS for c in closing):
                        scored.add(rows[0].strategy)
                    if len(closing) < len(still_open):
                        if not self._overdue(still_open, tf):
                            continue
                        expired.append(signal_id)
                    ended[signal_id] = _Concluded.of(rows, closing)
            # Signals a crash left with nothing open: a query over every horizon kept, so only
            # until it finds fewer than it asks for. Read before this run's closes, so the
            # signals this run ends (concluded below anyway) neither fill it nor keep it going.
            left: list[str] = []
            if not self._swept:
                left = self.records.signals_to_conclude(SWEEP_LIMIT)
                self._swept = len(left) < SWEEP_LIMIT
            # Every signal with nothing open left: those this run ended, and those a crash left.
            outcomes, out = self._conclude(ended, [s for s in left if s not in ended])
            with self.records.batch():  # the writes alone hold the write lock
                self.records.close_signal_horizons(closes)
                for signal_id in expired:
                    self.records.expire_signal_horizons(signal_id)
                self.records.record_signal_outcomes(outcomes)
            self._score(scored | self._unscored)
        return out

    def _overdue(self, rows: list[SignalHorizonRow], tf: Timeframe) -> bool:
        longest = max(HORIZONS_BARS) * tf.seconds * EXPIRE_AFTER_HORIZONS
        opened_at: datetime = rows[0].opened_at
        return (self.ctx.now() - opened_at).total_seconds() > longest

    def _conclude(
        self, ended: Mapping[str, _Concluded], left: Sequence[str]
    ) -> tuple[list[dict[str, Any]], list[Message]]:
        """Signals none of whose horizons is open: each one's outcome as
        `RecordsStore.record_signal_outcomes` keeps it (from its longest closed horizon, or
        expired) and the audit entry saying so. `ended`: those this run ended, with their
        horizons as it left them; `left`: those a crash left, read here."""
        concluded: dict[str, _Concluded] = {}
        if left:
            kept: dict[str, list[SignalHorizonRow]] = defaultdict(list)
            for row in self.records.signal_horizons(signal_ids=left):
                kept[row.signal_id].append(row)
            concluded.update((s, _Concluded.of(kept[s], [])) for s in left)
        concluded.update(ended)
        if not concluded:
            return [], []
        costs: dict[str, list[FillAmountRow]] = defaultdict(list)
        for cost in self.records.fill_amounts_of(signal_ids=concluded):
            costs[cost.signal_id].append(cost)
        outcomes: list[dict[str, Any]] = []
        audits: list[Message] = []
        for signal_id, signal in concluded.items():
            outcome, audit = self._outcome(signal_id, signal, costs[signal_id])
            outcomes.append(outcome)
            audits.append(audit)
        return outcomes, audits

    def _outcome(
        self, signal_id: str, signal: _Concluded, fills: list[FillAmountRow]
    ) -> tuple[dict[str, Any], Message]:
        """A concluded signal's outcome (as `RecordsStore.record_signal_outcome` keeps it) and
        its audit entry."""
        first = signal.first
        done = [h for h in signal.horizons if h.status == "done"]
        last = max(done, key=lambda h: h.horizon_bars) if done else None
        measured = [f for f in fills if f.slippage_bps is not None]
        filled = sum(f.quantity for f in measured)
        slippage = (
            sum(f.quantity * (f.slippage_bps or 0.0) for f in measured) / filled if filled else None
        )
        tf = Timeframe.parse(first.timeframe)
        outcome = "expired"
        if last is not None and last.pnl is not None:
            outcome = "win" if last.pnl > 0 else "loss" if last.pnl < 0 else "flat"
        kept = {
            "signal_id": signal_id,
            "signal_at": first.signal_at,
            "symbol": first.symbol,
            "outcome": outcome,
            "slippage_bps": slippage,
            "pnl": None if last is None else last.pnl,
            "holding_seconds": None if last is None else float(last.horizon_bars * tf.seconds),
            "execution_id": fills[0].execution_id if fills else None,
            "closed_at": None if last is None else last.exit_at,
        }
        per_horizon = {str(h.horizon_bars): h.pnl for h in signal.horizons}
        payload = self.ctx.audit_payload(
            action="signal_outcome.close",
            target=f"signal:{signal_id}",
            reason=(
                f"{first.strategy} {first.symbol}: {outcome}"
                + ("" if last is None else f" over {last.horizon_bars} bars, P&L {last.pnl:.6g}")
            ),
            new_value={"outcome": outcome, "pnl_by_horizon_bars": per_horizon},
        )
        audit = new_message(
            payload,
            producer=self.ctx.producer,
            # in the chain of the signal's bar when its fills say which that is
            correlation_id=fills[0].correlation_id if fills else None,
            produced_at=self.ctx.now(),
        )
        return kept, audit

    def _score(self, strategies: set[str]) -> None:
        """Win rate and IC of each strategy over its latest outcomes at the score horizon, into
        the cache (a copy the records rebuild: a cache outage retries at the next run)."""
        for strategy in sorted(strategies):
            rows = self.records.signal_horizons(
                status="done",
                strategy=strategy,
                horizon_bars=SCORE_HORIZON_BARS,
                latest=SCORE_WINDOW,
            )
            if not rows:
                continue
            s = scores(
                [r.strength for r in rows],
                [r.forward_return or 0.0 for r in rows],
                [r.pnl or 0.0 for r in rows],
            )
            try:
                cache = self.ctx.lab.cache
                cache.set_win_rate(strategy, wins=s.wins.wins, total=s.wins.total)
                if not math.isnan(s.ic):
                    cache.set_ic(strategy, ic=s.ic, samples=s.wins.total)
            except TransientError as e:
                log.warning("tca: cache unavailable, %s scored at the next run: %s", strategy, e)
                self._unscored.add(strategy)
            else:
                self._unscored.discard(strategy)


def _check_against_trade(fill: Fill, chain: TradeChainRow) -> None:
    """A fill must be the execution the records hold under its id, not something else."""
    trade = chain.trade
    mine = (fill.client_order_id, fill.symbol, fill.side.value)
    kept = (trade.client_order_id, trade.symbol, trade.side)
    same = math.isclose(fill.quantity, trade.quantity, rel_tol=_REL_TOL) and math.isclose(
        fill.price, trade.price, rel_tol=_REL_TOL
    )
    if mine != kept or not same:
        raise ValidationError(
            f"fill {fill.execution_id} ({fill.side.value} {fill.quantity:g} {fill.symbol} "
            f"@ {fill.price:g}, order {fill.client_order_id}) disagrees with the trade the "
            f"records hold under that id ({trade.side} {trade.quantity:g} {trade.symbol} "
            f"@ {trade.price:g}, order {trade.client_order_id})"
        )


def _closes(
    rows: list[SignalHorizonRow], bars: _Series, start: int, count: int
) -> list[dict[str, Any]]:
    """The closes (as `RecordsStore.close_signal_horizons` takes them) of the horizons whose
    bar is among the `count` bars of `bars` from `start` (the bars after the signal's)."""
    closes: list[dict[str, Any]] = []
    for row in rows:
        if count < row.horizon_bars:
            continue
        at = start + row.horizon_bars - 1
        exit_price = float(bars.close[at])
        result = horizon_result(
            row.side,
            quantity=row.quantity,
            avg_price=row.avg_price,
            fees=row.fees,
            arrival_price=row.arrival_price,
            exit_price=exit_price,
        )
        closes.append(
            {
                "signal_id": row.signal_id,
                "horizon_bars": row.horizon_bars,
                "exit_at": bars.time(at),
                "exit_price": exit_price,
                "forward_return": result.forward_return,
                "pnl": result.pnl,
            }
        )
    return closes


@dataclass(frozen=True)
class _Series:
    """One series' bars as arrays, oldest first: a bar is found by a binary search on its time
    rather than a frame filter (a batch looks one up per fill, the timer one per signal)."""

    ts_ns: np.ndarray  # epoch nanoseconds
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    @classmethod
    def of(cls, frame: pd.DataFrame) -> _Series:
        columns = ("open", "high", "low", "close", "volume")
        return cls(
            pd.DatetimeIndex(frame["ts"]).as_unit("ns").asi8,
            *(frame[c].to_numpy(dtype=np.float64) for c in columns),
        )

    def __len__(self) -> int:
        return len(self.ts_ns)

    def holds(self, at_ns: int) -> bool:
        """Whether the bars start at or before `at_ns` (epoch nanoseconds)."""
        return len(self.ts_ns) > 0 and int(self.ts_ns[0]) <= at_ns

    def first_after(self, after_ns: int) -> int:
        """The index of the first bar after `after_ns` (epoch nanoseconds); `len` if none."""
        return int(np.searchsorted(self.ts_ns, after_ns, side="right"))

    def after(self, after: datetime, count: int) -> _Series:
        """Up to `count` bars after `after`."""
        start = self.first_after(_ns(after))
        end = start + count
        return _Series(
            self.ts_ns[start:end],
            self.open[start:end],
            self.high[start:end],
            self.low[start:end],
            self.close[start:end],
            self.volume[start:end],
        )

    def time(self, i: int) -> datetime:
        return datetime.fromtimestamp(int(self.ts_ns[i]) / 1e9, UTC)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _ns(at: datetime) -> int:
    """An aware datetime as epoch nanoseconds (exact: a datetime counts whole microseconds)."""
    return (at - _EPOCH) // _MICROSECOND * 1000


@dataclass(frozen=True, slots=True)
class _Ended:
    """One horizon of a concluded signal as it was left: done (with its P&L) or expired."""

    horizon_bars: int
    status: str
    pnl: float | None
    exit_at: datetime | None


@dataclass(frozen=True, slots=True)
class _Concluded:
    """A signal with no horizon open: its first horizon row (what every row of it shares) and
    each horizon as it was left, in horizon order."""

    first: SignalHorizonRow
    horizons: list[_Ended]

    @classmethod
    def of(cls, rows: list[SignalHorizonRow], closes: list[dict[str, Any]]) -> _Concluded:
        """The signal of `rows` as read, with `closes` (as `_closes` makes them) applied and
        any horizon still open then expired (as the timer expires what it cannot close)."""
        closed = {c["horizon_bars"]: c for c in closes}
        horizons = []
        for r in rows:
            c = closed.get(r.horizon_bars) if r.status == "open" else None
            if c is not None:
                horizons.append(_Ended(r.horizon_bars, "done", c["pnl"], c["exit_at"]))
            elif r.status == "open":
                horizons.append(_Ended(r.horizon_bars, "expired", r.pnl, r.exit_at))
            else:
                horizons.append(_Ended(r.horizon_bars, r.status, r.pnl, r.exit_at))
        return cls(rows[0], horizons)


@dataclass(frozen=True, slots=True)
class _Arrival:
    """A fill's arrival bar (bar `at` of `found`, its series as read): a `Bar` is built of it
    only for the shadow fill of a real venue's fill."""

    symbol: str
    timeframe: Timeframe
    ts: datetime
    close: float
    found: _Series
    at: int

    def bar(self) -> Bar:
        found, at = self.found, self.at
        return Bar(
            symbol=self.symbol,
            timeframe=self.timeframe,
            ts=self.ts,
            open=float(found.open[at]),
            high=float(found.high[at]),
            low=float(found.low[at]),
            close=self.close,
            volume=float(found.volume[at]),
            source="cache",
        )


class _BatchFill(NamedTuple):
    """A fill cost of the batch in hand, not kept yet, as `RecordsStore.fill_amounts_of`
    reads a kept one."""

    execution_id: str
    client_order_id: str
    correlation_id: str
    signal_id: str | None
    side: str
    quantity: float
    price: float
    fee: float
    slippage_bps: float | None


_Amount: TypeAlias = "FillAmountRow | _BatchFill"


@dataclass(frozen=True, slots=True)
class _Measured:
    """A fill of the batch in hand with what it is measured against."""

    message: Message
    fill: Fill
    chain: TradeChainRow
    signal: SignalRow | None
    arrival: _Arrival | None


def _fill_of(message: Message) -> Fill:
    if not isinstance(message, FillMessage | FillV1Message):
        raise ContractError(f"tca takes fills, not {message.schema_name}")
    return message.payload


def _signal_of(chain: TradeChainRow, signals: Mapping[str, SignalRow]) -> SignalRow | None:
    """The modified signal behind the fill's order (from the batch's `signals`); None for a
    manual order."""
    signal_id = chain.trade.modified_signal_id
    if signal_id is None:
        return None
    signal = signals.get(signal_id)
    if signal is None:
        raise ValidationError(
            f"trade {chain.trade.execution_id} names signal {signal_id}, which the records "
            "do not hold"
        )
    return signal
