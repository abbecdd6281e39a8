"""The live monitor (`apps/monitor.ipynb`): the pipeline as a trader watches it, refreshed in
place from the bus, the cache, the flags tier and the records, never by re-running a notebook.

What it reads, and how often:
- at once, whenever they arrive (a blocking XREAD from the end of each stream, joining no group,
  so it takes nothing from the services): fills, orders, modified signals and risk events;
- every `every_s`: prices and recent bars per symbol, positions and P&L, the equity curve, the
  kill switches, circuit breakers and rate-limit budgets with their TTLs;
- every `slow_every_s`: lag, pending and dead letters per stream and group, and the health of
  every tier and service with its restarts (`tradeos_lab.status`).

The equity curve starts with the account's history in the records (the starting cash plus the
book's P&L at each position snapshot the Positions stage keeps: at every fill and every minute),
read once, as soon as the records answer; the cache's equity is appended from then on.

Each panel shows its own reason when its tier is down and the app goes on; the lab is attached
again on the next refresh, so the panel recovers by itself when the tier returns.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, cast

import ipywidgets as widgets
import plotly.graph_objects as go
import redis

from tradeos_lab.apps import views
from tradeos_lab.apps.kill_switch import switch_row
from tradeos_lab.apps.live import LabLink, PageHeartbeat, Poller, Reading
from tradeos_lab.contracts import Fill, ModifiedSignal, Order, OrderV1, RiskEvent
from tradeos_lab.errors import ContractError, TradeosError
from tradeos_lab.keys import Stream
from tradeos_lab.settings import Settings, load_settings

if TYPE_CHECKING:
    import pandas as pd

    from tradeos_lab.contracts import Message
    from tradeos_lab.lab import Lab
    from tradeos_lab.tiers.flags import BreakerStatus, KillState, RateBudget

#: The streams followed entry by entry, newest first in their tables.
FEEDS: Final = (Stream.FILLS_RAW, Stream.ORDERS, Stream.SIGNALS_MODIFIED, Stream.RISK_EVENTS)
#: Bars drawn per symbol, and points kept on the equity curve.
CHART_BARS: Final = 60
EQUITY_POINTS: Final = 1_000
#: How long one refresh waits on the bus for new entries.
BLOCK_MS: Final = 500
#: Pause after the bus failed, so a tier that is down is not hammered.
DOWN_PAUSE_S: Final = 1.0


# ---- what is read ----------------------------------------------------------------------------


class Feeds:
    """The newest `keep` entries of each followed stream, read from where the last read ended."""

    def __init__(self, keep: int = 30) -> None:
        self.keep = keep
        self.entries: dict[Stream, deque[Message]] = {s: deque(maxlen=keep) for s in FEEDS}
        self._after: dict[Stream, str] = {}

    def poll(self, lab: Lab, block_ms: int = 0) -> int:
        """Read what arrived since the last poll (the newest `keep` on the first), waiting up to
        `block_ms` for the first entry; returns how many entries were added."""
        bus = lab.bus
        if not self._after:
            added = 0
            for stream in FEEDS:
                rows = cast(
                    "list[tuple[bytes, dict[bytes, bytes]]]",
                    bus.redis.xrevrange(bus.stream_key(stream), count=self.keep),
                )
                self._after[stream] = _text(rows[0][0]) if rows else "0-0"
                for _entry_id, fields in reversed(rows):
                    added += self._add(lab, stream, fields)
            return added
        keys = {bus.stream_key(s): s for s in FEEDS}
        replies = cast(
            "list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]",
            bus.redis.xread(
                {key: self._after[s] for key, s in keys.items()},
                block=block_ms or None,  # None: do not block (0 would block forever)
                count=200,
            ),
        )
        added = 0
        for key, rows in replies or []:
            stream = keys[_text(key)]
            for entry_id, fields in rows:
                self._after[stream] = _text(entry_id)
                added += self._add(lab, stream, fields)
        return added

    def _add(self, lab: Lab, stream: Stream, fields: dict[bytes, bytes]) -> int:
        try:
            message = lab.bus.decode(stream, fields)
        except ContractError:
            return 0  # a malformed entry is the services' dead letter, not the monitor's row
        self.entries[stream].append(message)
        return 1


@dataclass
class Market:
    prices: dict[str, Any]
    bars: dict[str, pd.DataFrame]


@dataclass
class Book:
    """The account and its positions, marked at the cached prices."""

    equity: float | None
    cash: float | None
    starting_cash: float
    positions: list[dict[str, object]]


@dataclass
class Limits:
    """The kill switches' state and, while the flags tier answers, the breaker and budgets."""

    kill: KillState
    breaker: BreakerStatus | None = None
    breaker_cooldown_s: float = 0.0
    breaker_ttl_s: float | None = None
    budgets: dict[str, RateBudget] = field(default_factory=dict)
    now: float = 0.0


@dataclass
class Health:
    services: list[dict[str, object]]
    streams: list[dict[str, object]]


@dataclass
class MonitorData:
    """The latest reading of every panel; each is a value or why there is none."""

    market: Reading[Market] = field(default_factory=Reading)
    book: Reading[Book] = field(default_factory=Reading)
    limits: Reading[Limits] = field(default_factory=Reading)
    health: Reading[Health] = field(default_factory=Reading)
    feeds: Reading[int] = field(default_factory=Reading)


def read_market(lab: Lab) -> Market:
    settings = lab.settings
    cache = lab.cache
    symbols = settings.pipeline_symbols
    bars = {s: cache.get_bars(s, settings.pipeline_timeframe, limit=CHART_BARS) for s in symbols}
    return Market(prices=dict(cache.get_prices(symbols)), bars=bars)


def read_book(lab: Lab, starting_cash: float) -> Book:
    cache = lab.cache
    account = cache.get_account()
    positions = cache.get_positions()
    prices = cache.get_prices(positions) if positions else {}
    rows: list[dict[str, object]] = []
    for symbol, p in sorted(positions.items()):
        mark = prices[symbol].price if symbol in prices else None
        rows.append(
            {
                "symbol": symbol,
                "side": p.side,
                "quantity": p.quantity,
                "avg price": p.avg_price,
                "mark": mark,
                "market value": None if mark is None else p.quantity * mark,
                "unrealized P&L": None if mark is None else (mark - p.avg_price) * p.quantity,
            }
        )
    return Book(
        equity=account.portfolio_value if account else None,
        cash=account.balance if account else None,
        starting_cash=starting_cash,
        positions=rows,
    )


def read_starting_cash(lab: Lab) -> float:
    from tradeos_lab.pipeline.services.feasibility import (
        DEFAULT_STARTING_CASH,
        STARTING_CASH_KEY,
    )

    return float(lab.records.get_config(STARTING_CASH_KEY, DEFAULT_STARTING_CASH))


def read_equity_history(lab: Lab, starting_cash: float) -> list[tuple[float, float]]:
    """The paper account's equity (epoch seconds, value) at its latest position snapshots."""
    return [
        (at.timestamp(), starting_cash + pnl)
        for at, pnl in lab.records.pnl_history("paper", limit=EQUITY_POINTS)
    ]


def read_limits(lab: Lab, broker_rate_limit: int) -> Limits:
    """Kill switches, the broker's breaker and the rate-limit budgets the pipeline spends."""
    from tradeos_lab.marketdata.limits import PROVIDER_LIMITS
    from tradeos_lab.pipeline.services.feasibility import BROKER_DEPENDENCY
    from tradeos_lab.tiers.flags.plumbing import server_time

    try:
        flags = lab.flags
        kill = lab.kill_switches.state()
    except (TradeosError, redis.RedisError) as e:  # the tier did not even open
        kill = unreachable(e)
    if not kill.reachable:
        return Limits(kill)  # orders fail closed: that, not an error, is what to show
    breaker = flags.circuit_breaker(BROKER_DEPENDENCY)
    status = breaker.status()
    ttl_ms = int(flags.redis.pttl(breaker.key))
    budgets = {
        BROKER_DEPENDENCY: flags.rate_limiter(
            BROKER_DEPENDENCY, limit=broker_rate_limit, window_seconds=60
        ).budget()
    }
    feed = lab.settings.pipeline_feed
    if feed in PROVIDER_LIMITS:
        limit, window = PROVIDER_LIMITS[feed]
        budgets[f"provider.{feed}"] = flags.rate_limiter(
            f"provider.{feed}", limit=limit, window_seconds=window
        ).budget()
    return Limits(
        kill=kill,
        breaker=status,
        breaker_cooldown_s=breaker.cooldown_ms / 1000,
        breaker_ttl_s=ttl_ms / 1000 if ttl_ms > 0 else None,
        budgets=budgets,
        now=server_time(flags.redis),
    )


def unreachable(error: Exception) -> KillState:
    """The kill switches' state when the flags tier cannot be opened: HALTED, as every order
    check reads it."""
    from tradeos_lab.tiers.flags import KillMode, KillState

    why = f"flags tier unreachable ({type(error).__name__}): failing closed"
    return KillState(reachable=False, armed=False, mode=KillMode.HALTED, reason=why)


def read_broker_rate_limit(lab: Lab) -> int:
    from tradeos_lab.pipeline.services.feasibility import (
        BROKER_RATE_LIMIT_KEY,
        DEFAULT_BROKER_RATE_LIMIT,
    )

    return int(lab.records.get_config(BROKER_RATE_LIMIT_KEY, DEFAULT_BROKER_RATE_LIMIT))


def read_health(lab: Lab) -> Health:
    from tradeos_lab.status import collect_status

    report = collect_status(lab.settings)
    services: list[dict[str, object]] = [
        {
            "part": p.part,
            "kind": p.kind,
            "state": p.state.upper(),
            "restarts": p.restarts,
            "heartbeat": None if p.heartbeat_age_s is None else f"{p.heartbeat_age_s:.1f} s ago",
            "detail": p.detail,
        }
        for p in report.parts
    ]
    inspect = lab.bus.inspect
    dead = {str(r["stream"]): int(r["dead_letters"]) for r in inspect.streams().to_dict("records")}
    streams: list[dict[str, object]] = [
        {
            "stream": r["stream"],
            "group": r["group"],
            "consumers": int(r["consumers"]),
            "lag": int(r["lag"]),
            "pending": int(r["pending"]),
            "dead letters": dead.get(str(r["stream"]), 0),
        }
        for r in inspect.groups().to_dict("records")
    ]
    grouped = {str(r["stream"]) for r in streams}
    streams += [
        {"stream": s, "group": "(no group)", "dead letters": n}
        for s, n in dead.items()
        if s not in grouped and n
    ]
    return Health(services=services, streams=streams)


# ---- rows ------------------------------------------------------------------------------------


def fill_row(message: Message) -> dict[str, object]:
    fill = cast("Fill", message.payload)
    return {
        "time": fill.ts,
        "side": str(fill.side).upper(),
        "quantity": f"{fill.quantity:g}",
        "symbol": fill.symbol,
        "price": fill.price,
        "fee": fill.fee,
        "order": fill.client_order_id,
        "execution": fill.execution_id,
    }


def order_row(message: Message) -> dict[str, object]:
    order = cast("Order | OrderV1", message.payload)
    avg = order.avg_price if isinstance(order, Order) else order.avg_fill_price
    return {
        "time": order.ts,
        "order": order.client_order_id,
        "strategy": order.strategy,
        "symbol": order.symbol,
        "side": str(order.side).upper(),
        "quantity": f"{order.quantity:g}",
        "status": str(order.status),
        "filled": f"{order.filled_quantity:g}",
        "avg price": avg,
        "reason": order.reason,
    }


def signal_row(message: Message) -> dict[str, object]:
    signal = cast("ModifiedSignal", message.payload)
    return {
        "time": signal.ts,
        "strategy": signal.strategy,
        "symbol": signal.symbol,
        "direction": str(signal.direction),
        "strength": f"{signal.raw_strength:+.2f} -> {signal.adjusted_strength:+.2f}",
        "confidence": f"{signal.confidence:.2f}",
        "regime": signal.regime,
        "modifiers": ", ".join(m.name for m in signal.modifiers),
    }


def risk_row(message: Message) -> dict[str, object]:
    event = cast("RiskEvent", message.payload)
    return {
        "time": event.ts,
        "severity": str(event.severity),
        "kind": str(event.kind),
        "scope": event.scope,
        "detail": event.detail,
    }


#: Per followed stream: its row, and what its table says while it has none.
_ROWS: Final[dict[Stream, tuple[Callable[[Message], dict[str, object]], str]]] = {
    Stream.FILLS_RAW: (fill_row, "no fill yet: the pipeline has not traded"),
    Stream.ORDERS: (order_row, "no order yet"),
    Stream.SIGNALS_MODIFIED: (signal_row, "no signal yet: waiting for bars"),
    Stream.RISK_EVENTS: (risk_row, "no risk event: every check has passed"),
}


# ---- the app ---------------------------------------------------------------------------------


class Monitor:
    """The monitor's widgets and the refresh that fills them. `show()` starts the polling thread
    of this kernel (stopped by `close()`, by the page going away, or with the kernel) and
    returns the widget to display; `refresh()` is one round of it, for tests and benchmarks."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        link: LabLink | None = None,
        every_s: float = 1.0,
        slow_every_s: float = 5.0,
        keep: int = 30,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings or load_settings()
        self.link = link or LabLink(self.settings)
        self.every_s, self.slow_every_s = every_s, slow_every_s
        self.clock = clock
        self.feeds = Feeds(keep)
        self.data = MonitorData()
        self.refreshes = 0
        self.equity: deque[tuple[float, float]] = deque(maxlen=EQUITY_POINTS)
        self._due_fast = self._due_slow = 0.0
        self._starting_cash: float | None = None
        self._history_read = False
        self._broker_rate_limit: int | None = None
        self._drawn_bars: dict[str, object] = {}

        self.header = widgets.HTML()
        self.tiers = widgets.HTML()
        self.prices = widgets.HTML()
        # One figure for every chart: each FigureWidget carries plotly's whole script (~5 MB).
        self.chart = _charts(self.settings.pipeline_symbols)
        self._rows = {s: i for i, s in enumerate(self.settings.pipeline_symbols)}
        self.book = widgets.HTML()
        self.positions = widgets.HTML()
        self.tables = {s: widgets.HTML() for s in FEEDS}
        self.limits = widgets.HTML()
        self.streams = widgets.HTML()
        self.health = widgets.HTML()
        self.heartbeat = PageHeartbeat()
        self.poller = Poller(
            self._tick, every_s=0.05, heartbeat=self.heartbeat, name="monitor-poller"
        )
        section = views.title
        self.widget = widgets.VBox(
            [
                widgets.HTML(views.STYLE),
                self.header,
                self.tiers,
                widgets.HTML(section("Prices and recent bars")),
                self.prices,
                self.chart,
                widgets.HTML(section("Account, positions and P&L")),
                self.book,
                self.positions,
                widgets.HTML(section("Fills")),
                self.tables[Stream.FILLS_RAW],
                widgets.HTML(section("Orders")),
                self.tables[Stream.ORDERS],
                widgets.HTML(section("Signals")),
                self.tables[Stream.SIGNALS_MODIFIED],
                widgets.HTML(section("Risk events")),
                self.tables[Stream.RISK_EVENTS],
                widgets.HTML(section("Kill switches, circuit breakers and rate limits")),
                self.limits,
                widgets.HTML(section("Streams: lag, pending and dead letters per group")),
                self.streams,
                widgets.HTML(section("Services and tiers")),
                self.health,
                self.heartbeat,
            ]
        )
        self.widget.add_class("tl-monitor")
        self._render_waiting()

    # ---- lifecycle -------------------------------------------------------------------------

    def show(self) -> widgets.VBox:
        """Start refreshing and return the widget to display."""
        self.poller.start()
        return self.widget

    def close(self) -> None:
        self.poller.stop()
        self.link.close()

    def _tick(self) -> None:
        self.refresh(block_ms=BLOCK_MS)
        if not self.data.feeds.ok:
            self.poller.pause(DOWN_PAUSE_S)

    # ---- one refresh -----------------------------------------------------------------------

    def refresh(self, block_ms: int = 0) -> int:
        """Read and draw what changed: new feed entries at once, the other panels when due.
        Returns how many feed entries arrived."""
        feeds = self.link.read("the bus", lambda lab: self.feeds.poll(lab, block_ms))
        self.data.feeds = feeds
        if feeds.value:
            self._draw_feeds()
        now = self.clock()
        if now >= self._due_slow:
            self._due_slow = now + self.slow_every_s
            self._read_slow()
        if now >= self._due_fast:
            self._due_fast = now + self.every_s
            self._read_fast()
        self.refreshes += 1
        self._draw_header()
        return feeds.value or 0

    def _read_fast(self) -> None:
        link, data = self.link, self.data
        data.market = link.read("the cache", read_market)
        starting = self._starting_cash if self._starting_cash is not None else 0.0
        # The same tier: once it failed, say so rather than wait for it to fail again.
        data.book = (
            link.read("the cache", lambda lab: read_book(lab, starting))
            if data.market.ok
            else Reading(error=data.market.error)
        )
        rate_limit = self._broker_rate_limit
        if rate_limit is not None:
            data.limits = link.read("the flags tier", lambda lab: read_limits(lab, rate_limit))
        book = data.book.value
        if book is not None and book.equity is not None:
            self.equity.append((time.time(), book.equity))
        self._draw_market()
        self._draw_book()
        self._draw_limits()

    def _read_slow(self) -> None:
        data = self.data
        cash = self.link.read("the records", read_starting_cash)
        if cash.value is not None:
            self._starting_cash = cash.value
            if not self._history_read:
                self._read_equity_history(cash.value)
        limit = self.link.read("the records", read_broker_rate_limit)
        if limit.value is not None:
            self._broker_rate_limit = limit.value
        elif self._broker_rate_limit is None:
            data.limits = Reading(error=limit.error)
        data.health = (
            self.link.read("the bus", read_health)
            if data.feeds.ok
            else Reading(error=data.feeds.error)
        )
        self._draw_health()

    def _read_equity_history(self, starting_cash: float) -> None:
        """Put the records' equity history before the points drawn since the page opened."""
        history = self.link.read("the records", lambda lab: read_equity_history(lab, starting_cash))
        if history.value is None:
            return  # tried again at the next slow refresh
        self._history_read = True
        live = list(self.equity)
        since = live[0][0] if live else float("inf")
        self.equity.clear()
        self.equity.extend([p for p in history.value if p[0] < since] + live)

    # ---- drawing ---------------------------------------------------------------------------

    def _render_waiting(self) -> None:
        self.header.value = views.banner("connecting to the stack...", "info")
        waiting = views.table([], empty="waiting for the first refresh")
        for w in (self.prices, self.book, self.positions, self.limits, self.streams, self.health):
            w.value = waiting
        for stream, table in self.tables.items():
            table.value = views.table([], empty=_ROWS[stream][1])

    def _draw_header(self) -> None:
        down = [
            r.error
            for r in (self.data.feeds, self.data.market, self.data.limits, self.data.health)
            if r.error
        ]
        stamp = time.strftime("%H:%M:%S", time.gmtime())
        state = "live" if not down else "degraded"
        self.header.value = (
            f'<div class="tl-status" data-refreshes="{self.refreshes}" '
            f'data-page-beats="{self.heartbeat.beats}">'
            f"<b>tradeos-lab monitor</b> &middot; {state} &middot; updated {stamp} UTC "
            f"&middot; refresh {self.refreshes}</div>"
        )
        self.tiers.value = "".join(views.banner(e, "down") for e in dict.fromkeys(down))

    def _draw_feeds(self) -> None:
        for stream, table in self.tables.items():
            make_row, empty = _ROWS[stream]
            rows = [make_row(m) for m in reversed(self.feeds.entries[stream])]
            table.value = views.table(rows, empty=empty, css_class=f"tl-{stream.value}")

    def _draw_market(self) -> None:
        reading = self.data.market
        if reading.value is None:
            self.prices.value = views.banner(reading.error or "no market data", "down")
            return
        market = reading.value
        rows: list[dict[str, object]] = []
        for symbol in self.settings.pipeline_symbols:
            price = market.prices.get(symbol)
            bars = market.bars.get(symbol)
            last = bars.iloc[-1] if bars is not None and len(bars) else None
            rows.append(
                {
                    "symbol": symbol,
                    "price": None if price is None else price.price,
                    "as of": None if price is None else views.clock(price.ts),
                    "last bar": None if last is None else last["ts"],
                    "open": None if last is None else float(last["open"]),
                    "high": None if last is None else float(last["high"]),
                    "low": None if last is None else float(last["low"]),
                    "close": None if last is None else float(last["close"]),
                    "volume": None if last is None else float(last["volume"]),
                }
            )
            if bars is not None and len(bars):
                self._draw_bars(symbol, bars)
        no_price = not any(r["price"] is not None for r in rows)
        self.prices.value = (
            views.banner("no price in the cache yet: is ingestion running?", "warn")
            if no_price
            else ""
        ) + views.table(rows, empty="no symbol configured")

    def _draw_bars(self, symbol: str, bars: pd.DataFrame) -> None:
        last = bars["ts"].iloc[-1]
        if self._drawn_bars.get(symbol) == last:
            return
        self._drawn_bars[symbol] = last
        row = self._rows[symbol]
        with self.chart.batch_update():
            candles = self.chart.data[row]
            candles.x = bars["ts"].dt.tz_convert(None).tolist()
            candles.open = bars["open"].tolist()
            candles.high = bars["high"].tolist()
            candles.low = bars["low"].tolist()
            candles.close = bars["close"].tolist()
            self.chart.layout.annotations[row].text = f"{symbol}: last {len(bars)} bars"

    def _draw_book(self) -> None:
        reading = self.data.book
        if reading.value is None:
            self.book.value = views.banner(reading.error or "no account", "down")
            self.positions.value = ""
            return
        book = reading.value
        if book.equity is None:
            self.book.value = views.banner("no account yet: no fill has been booked", "info")
        else:
            pnl = book.equity - book.starting_cash if book.starting_cash else None
            self.book.value = views.table(
                [
                    {
                        "equity": book.equity,
                        "cash": book.cash,
                        "starting cash": book.starting_cash or None,
                        "P&L": pnl,
                        "P&L %": None if pnl is None else f"{pnl / book.starting_cash:+.2%}",
                    }
                ],
                ["equity", "cash", "starting cash", "P&L", "P&L %"],
                empty="",
            )
        self.positions.value = views.table(
            book.positions,
            empty="no open position",
            css_class="tl-positions",
        )
        if self.equity:
            times, values = zip(*self.equity, strict=True)
            with self.chart.batch_update():
                self.chart.data[-1].x = [_utc(t) for t in times]
                self.chart.data[-1].y = list(values)

    def _draw_limits(self) -> None:
        reading = self.data.limits
        if reading.value is None:
            self.limits.value = views.banner(reading.error or "reading the flags tier...", "down")
            return
        self.limits.value = limits_html(reading.value)

    def _draw_health(self) -> None:
        reading = self.data.health
        if reading.value is None:
            self.streams.value = views.banner(reading.error or "no stream", "down")
            self.health.value = ""
            return
        health = reading.value
        self.streams.value = views.table(
            health.streams,
            ["stream", "group", "consumers", "lag", "pending", "dead letters"],
            empty="no stream yet: nothing has been published",
        )
        self.health.value = views.table(
            health.services,
            ["part", "kind", "state", "restarts", "heartbeat", "detail"],
            empty="nothing reports",
        )


def limits_html(limits: Limits) -> str:
    """The kill switches' effect, the broker's breaker and each rate-limit budget, with TTLs."""
    kill = limits.kill
    if not kill.reachable:
        kill_banner = views.banner(f"HALTED: {kill.reason}", "down")
    elif kill.mode is not None:
        kill_banner = views.banner(f"Pipeline {kill.reason}", "down")
    else:
        kill_banner = views.banner("trading: no global kill switch is engaged", "ok")
    switches = [switch_row(s, limits.now) for s in kill.switches]
    b = limits.breaker
    breaker: list[dict[str, object]] = []
    if b is not None:
        opened = b.opened_at_ms / 1000 if b.opened_at_ms else None
        left = None if opened is None else opened + limits.breaker_cooldown_s - limits.now
        breaker.append(
            {
                "dependency": "broker",
                "state": b.state.value.upper(),
                "failures": b.failures,
                "reopens in": views.duration(left)
                if b.state.value == "open" and left is not None
                else "-",
                "key TTL": views.duration(limits.breaker_ttl_s) if limits.breaker_ttl_s else "-",
            }
        )
    budgets = [
        {
            "limit": name,
            "used": f"{budget.used} of {budget.limit}",
            "remaining": budget.remaining,
            "window frees a slot in": views.duration(budget.resets_in_seconds)
            if budget.used
            else "-",
        }
        for name, budget in limits.budgets.items()
    ]
    return (
        kill_banner
        + views.table(switches, empty="no switch engaged")
        + views.table(breaker, empty="")
        + views.table(budgets, empty="")
    )


def _charts(symbols: tuple[str, ...]) -> go.FigureWidget:
    """Recent bars of each symbol, one row each, and the equity curve in the last row."""
    from plotly.subplots import make_subplots

    equity = "Equity (the records' snapshots, then live)"
    titles = [*(f"{s}: waiting for bars" for s in symbols), equity]
    figure = make_subplots(rows=len(symbols) + 1, cols=1, subplot_titles=titles)
    for row, symbol in enumerate(symbols, start=1):
        empty = go.Candlestick(x=[], open=[], high=[], low=[], close=[], name=symbol)
        figure.add_trace(empty, row=row, col=1)
    figure.add_trace(
        go.Scatter(x=[], y=[], mode="lines", name="equity"), row=len(symbols) + 1, col=1
    )
    figure.update_xaxes(rangeslider_visible=False)
    figure.update_layout(
        height=230 * (len(symbols) + 1),
        width=1000,
        showlegend=False,
        margin={"l": 60, "r": 10, "t": 40, "b": 30},
    )
    return go.FigureWidget(figure)


def _utc(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch_s))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
