"""Ingestion: market data in. Polls a feed per (symbol, timeframe) and publishes `market_data`.

What it consumes: nothing from the bus; one timer per subscribed symbol polls the feed
(setting `pipeline_feed`):

- `synthetic` (default): the seeded synthetic series on an accelerated clock, one new bar every
  `pipeline_bar_interval_s` wall seconds, each one timeframe after the last, so a demo trades
  within seconds;
- `replay:PATH`: the bars of a CSV or Parquet file in time order, one every
  `pipeline_bar_interval_s` seconds (the replay speed);
- `coinbase`, `alpaca`: completed bars from the exchange on the market's schedule: every minute
  around the clock for crypto; for equities every minute in the NYSE's sessions and every
  fifteen minutes outside them (a closed market has no new bars to find).

What it emits, per new bar: first the cache (price, the last 500 bars and the incremental
indicators of `CACHE_INDICATORS`, via `update_cache`), then one `market_data` message; every
`LAKE_EVERY_S` seconds (and when it stops) the bars of the meantime go to the lake in one write.
The message id is derived from (feed, symbol, timeframe, ts), and the XADD commits in one MULTI
with the open time of the last published bar of the series, so a re-poll, a restart or a second
ingestion process never publishes a bar twice, and a crash before the commit only means the bar
is published on the next poll. Before a series' first live bar its
warm-up history is read through the three-tier reader (cache -> lake -> the feed's provider), so
indicators and strategies have history from the first bar; an `audit` entry says where each
series starts (or resumes) and on how much history.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, Final, cast

import pandas as pd
import redis

from tradeos_lab.bars import empty_bars
from tradeos_lab.contracts import Bar, BarMessage, new_message
from tradeos_lab.contracts.ids import keyed_message_id
from tradeos_lab.errors import TransientError, ValidationError
from tradeos_lab.indicators import (
    ATR,
    EMA,
    MACD,
    RSI,
    SMA,
    ATRRegime,
    BBands,
    IndicatorSet,
    IndicatorSetState,
    VolumePercentile,
)
from tradeos_lab.indicators.live import resume_from_cache, update_cache
from tradeos_lab.indicators.sessions import sessions
from tradeos_lab.keys import Stream
from tradeos_lab.marketdata.ranges import floor_to_grid
from tradeos_lab.pipeline.service import Service, ServiceContext, Timer
from tradeos_lab.settings import REPLAY_FEED_PREFIX, Settings
from tradeos_lab.symbols import Timeframe, validate_symbol
from tradeos_lab.tiers.bus.wire import translate_redis_error

if TYPE_CHECKING:
    from tradeos_lab.contracts import Message
    from tradeos_lab.lab import Lab
    from tradeos_lab.providers import BarProvider, FileReplayProvider

log = logging.getLogger(__name__)

#: The indicators kept in the cache for every ingested series: the usual trend, momentum,
#: volatility and volume measures at the latest bar (the Signal Modifier reads its regime here).
CACHE_INDICATORS: Final = IndicatorSet(
    [
        SMA(20),
        SMA(50),
        EMA(20),
        RSI(14),
        MACD(),
        BBands(),
        ATR(14),
        ATRRegime(),
        VolumePercentile(),
    ]
)

#: How often the bars ingested meanwhile go to the lake, in one write.
LAKE_EVERY_S: Final = 5.0
#: Bars the synthetic feed generates at a time (its generator works in blocks of 256).
SYNTHETIC_AHEAD_BARS: Final = 256
#: Polling a real market: every minute, and every fifteen outside an equity market's sessions.
MARKET_POLL_S: Final = 60.0
CLOSED_MARKET_POLL_S: Final = 900.0
#: The calendar of equity sessions (crypto trades around the clock).
EQUITY_CALENDAR: Final = "XNYS"
#: How far back a real-market poll looks when a series has no published bar yet.
FIRST_POLL_BARS: Final = 5


def bar_message_id(feed: str, symbol: str, timeframe: Timeframe | str, ts: pd.Timestamp) -> str:
    """The message id of one bar of one feed: the same on every poll, so a duplicate is visible.
    It sorts at the bar's open time and hashes (feed, symbol, timeframe, ts)."""
    ms = ts.value // 1_000_000
    key = f"{feed}/{validate_symbol(symbol)}/{Timeframe.parse(timeframe).value}/{ms}"
    return keyed_message_id(ms, key)


# ---- feeds: where bars come from and when to ask ----------------------------------------------


class Feed:
    """A source of live bars: its provider, how often to poll it, and which bars are new."""

    #: Whether a series' warm-up history is read from this feed's provider before its first bar.
    backfills: ClassVar[bool] = True

    def __init__(self, name: str, provider: BarProvider, every_s: float) -> None:
        self.name = name  # the bars' `source` and part of their message ids
        self.provider = provider
        self.every_s = every_s

    def due(self, symbol: str, now: pd.Timestamp, last_poll: float | None) -> bool:
        """Whether to poll `symbol` at `now` (`last_poll`: epoch seconds of the previous poll)."""
        return True

    def next_bars(
        self, symbol: str, timeframe: Timeframe, after: pd.Timestamp | None, now: pd.Timestamp
    ) -> pd.DataFrame:
        """The bars of the series after `after` (None: nothing published yet) to publish now."""
        raise NotImplementedError


class SyntheticFeed(Feed):
    """The seeded synthetic series on an accelerated clock: one bar per poll, each one timeframe
    after the last, starting at the bar in progress; no missing bars, so a demo never stalls.
    Bars are generated `SYNTHETIC_AHEAD_BARS` at a time and served from memory (the series is
    deterministic: the same bars as asked one by one)."""

    def __init__(self, name: str, provider: BarProvider, every_s: float) -> None:
        super().__init__(name, provider, every_s)
        self._ahead: dict[tuple[str, Timeframe], pd.DataFrame] = {}

    def next_bars(
        self, symbol: str, timeframe: Timeframe, after: pd.Timestamp | None, now: pd.Timestamp
    ) -> pd.DataFrame:
        step = pd.Timedelta(seconds=timeframe.seconds)
        ts = floor_to_grid(now, timeframe) if after is None else after + step
        ahead = self._ahead.get((symbol, timeframe))
        if ahead is None or ahead.empty or not ahead["ts"].iloc[0] <= ts <= ahead["ts"].iloc[-1]:
            end = ts + SYNTHETIC_AHEAD_BARS * step
            ahead = self.provider.fetch_bars(symbol, timeframe, ts, end)
            self._ahead[(symbol, timeframe)] = ahead
        return ahead[ahead["ts"] == ts].reset_index(drop=True)


class ReplayFeed(Feed):
    """The bars of a file in time order, one per poll; the file is its own history."""

    backfills = False

    def __init__(self, provider: FileReplayProvider, every_s: float) -> None:
        super().__init__("replay", provider, every_s)
        self.file = provider

    def next_bars(
        self, symbol: str, timeframe: Timeframe, after: pd.Timestamp | None, now: pd.Timestamp
    ) -> pd.DataFrame:
        bars = self.file.bars()
        series = bars[(bars["symbol"] == symbol) & (bars["timeframe"] == timeframe.value)]
        if series.empty:
            raise ValidationError(
                f"replay file {self.file.path.name} holds no {symbol} {timeframe.value} bars"
            )
        if after is not None:
            series = series[series["ts"] > after]
        return series.sort_values("ts").head(1).reset_index(drop=True)


class MarketFeed(Feed):
    """A real market's completed bars: crypto every minute around the clock; equities every
    minute in their sessions and every fifteen minutes outside them."""

    def __init__(self, name: str, provider: BarProvider) -> None:
        super().__init__(name, provider, MARKET_POLL_S)

    def due(self, symbol: str, now: pd.Timestamp, last_poll: float | None) -> bool:
        from tradeos_lab.providers.alpaca import is_crypto

        if last_poll is None or is_crypto(symbol):
            return True
        if sessions(EQUITY_CALENDAR).locate(now.value) is not None:
            return True
        return now.timestamp() - last_poll >= CLOSED_MARKET_POLL_S - 1.0

    def next_bars(
        self, symbol: str, timeframe: Timeframe, after: pd.Timestamp | None, now: pd.Timestamp
    ) -> pd.DataFrame:
        step = pd.Timedelta(seconds=timeframe.seconds)
        end = floor_to_grid(now, timeframe)  # completed bars only
        start = end - FIRST_POLL_BARS * step if after is None else after + step
        if start >= end:
            return empty_bars()
        return self.provider.fetch_bars(symbol, timeframe, start, end)


def open_feed(settings: Settings, lab: Lab) -> Feed:
    """The feed `settings.pipeline_feed` names; `ValidationError` for one that does not exist."""
    feed = settings.pipeline_feed
    interval = settings.pipeline_bar_interval_s
    if feed == "synthetic":
        from tradeos_lab.providers import SyntheticProvider

        synthetic = SyntheticProvider(gap_rate=0.0, outage_rate=0.0)
        return SyntheticFeed("synthetic", synthetic, interval)
    if feed.startswith(REPLAY_FEED_PREFIX):
        from tradeos_lab.providers import FileReplayProvider

        return ReplayFeed(FileReplayProvider(feed.removeprefix(REPLAY_FEED_PREFIX)), interval)
    if feed in ("coinbase", "alpaca"):
        from tradeos_lab.marketdata import SharedLimiter

        limiter = SharedLimiter.for_provider(lab.flags, feed)
        provider: BarProvider
        if feed == "coinbase":
            from tradeos_lab.providers import CoinbaseProvider

            provider = CoinbaseProvider.from_settings(settings, limiter=limiter)
        else:
            from tradeos_lab.providers.alpaca import AlpacaProvider

            provider = AlpacaProvider.from_settings(settings, limiter=limiter)
        return MarketFeed(feed, provider)
    raise ValidationError(f"unknown feed {feed!r}; choose synthetic, replay:PATH, coinbase, alpaca")


# ---- the service --------------------------------------------------------------------------------


@dataclass
class _Series:
    """What ingestion holds per series between polls."""

    indicators: IndicatorSetState
    after: pd.Timestamp | None  # open time of the last bar published
    resumed: bool  # a bar of the series was published before this process started
    last_poll: float | None = None


class Ingestion(Service):
    """Polls the feed for every subscribed symbol and publishes each new bar once."""

    name = "ingestion"
    inputs = ()
    outputs = (Stream.MARKET_DATA, Stream.AUDIT)

    def __init__(self, ctx: ServiceContext) -> None:
        super().__init__(ctx)
        settings = ctx.settings
        self.timeframe = Timeframe.parse(settings.pipeline_timeframe)
        self.symbols = tuple(validate_symbol(s) for s in settings.pipeline_symbols)
        self.feed = open_feed(settings, ctx.lab)
        self._series: dict[str, _Series] = {}
        self._for_lake: list[pd.DataFrame] = []

    def timers(self) -> Sequence[Timer]:
        """One poll per subscribed symbol, on the feed's schedule; then the lake's batch."""
        polls = tuple(
            Timer(
                name=f"poll:{symbol}:{self.timeframe.value}",
                every_s=self.feed.every_s,
                fire=partial(self.poll, symbol),
            )
            for symbol in self.symbols
        )
        return (*polls, Timer(name="lake", every_s=LAKE_EVERY_S, fire=self.flush_lake))

    def poll(self, symbol: str) -> Sequence[Message]:
        """Fetch the series' new bars, store them, publish them. Each bar is published here, in
        one MULTI with the series' marker; the runner publishes only the `audit` entry of a
        series' start (where its bars resume, how much history it warmed up on)."""
        started: list[Message] = []
        series = self._series.get(symbol)
        if series is None:
            series = self._start(symbol)
            started.append(self._start_audit(symbol, series))
        now = pd.Timestamp(self.ctx.clock(), unit="s", tz="UTC")
        if not self.feed.due(symbol, now, series.last_poll):
            return started
        series.last_poll = now.timestamp()
        bars = self.feed.next_bars(symbol, self.timeframe, series.after, now)
        if series.after is not None and not bars.empty:
            bars = bars[bars["ts"] > series.after]
        if bars.empty:
            return started
        self._store(symbol, series, bars)
        self.publish(symbol, bars)
        series.after = bars["ts"].iloc[-1]
        return started

    # ---- a series' first poll: resume or warm up ----------------------------------------------

    def _start(self, symbol: str) -> _Series:
        lab = self.ctx.lab
        after = self._last_published(symbol)
        resumed = after is not None
        if after is None and self.feed.backfills:
            # Warm-up history through cache -> lake -> provider, written back down on a miss.
            try:
                lab.bars(self.feed.provider).get_bars(symbol, self.timeframe)
            except TransientError as e:  # the lake or the provider is down: start cold
                log.warning("no warm-up history for %s: %s", symbol, e)
            cached = lab.cache.get_bars(symbol, self.timeframe, limit=1)
            if not cached.empty:
                after = cached["ts"].iloc[-1]
        state = resume_from_cache(lab.cache, symbol, self.timeframe, CACHE_INDICATORS)
        series = _Series(indicators=state, after=after, resumed=resumed)
        self._series[symbol] = series
        return series

    def _start_audit(self, symbol: str, series: _Series) -> Message:
        history = len(self.ctx.lab.cache.get_bars(symbol, self.timeframe))
        where = "its first bar" if series.after is None else f"after {series.after.isoformat()}"
        how = "resumed after a restart" if series.resumed else "started"
        return self.ctx.audit(
            None,
            action="ingestion.start",
            target=f"symbol:{symbol}",
            reason=(
                f"{self.feed.name} feed {how} for {symbol} {self.timeframe.value}: publishing "
                f"from {where}, {history} bars of history cached"
            ),
            new_value={"feed": self.feed.name, "history_bars": history},
        )

    def _last_published(self, symbol: str) -> pd.Timestamp | None:
        key = self.ctx.lab.keys.last_ingested(self.feed.name, symbol, self.timeframe)
        try:
            raw = self.ctx.lab.bus.redis.get(key)
        except redis.RedisError as e:
            raise translate_redis_error(e, "reading ingestion's last published bar") from e
        return None if raw is None else pd.Timestamp(int(raw), unit="s", tz="UTC")

    # ---- what it emits --------------------------------------------------------------------------

    def _store(self, symbol: str, series: _Series, bars: pd.DataFrame) -> None:
        """Cache bars, indicators and price (idempotent, so a bar stored before a crash and
        stored again after it changes nothing); the bars join the lake's next batch."""
        lab = self.ctx.lab
        self._for_lake.append(bars)
        state = series.indicators
        for row in bars.to_dict("records"):
            ts: pd.Timestamp = row["ts"]
            if state.last_ts is None or ts.value > state.last_ts:
                update_cache(lab.cache, symbol, self.timeframe, state, row)
        last = bars.iloc[-1]
        lab.cache.set_price(symbol, float(last["close"]), ts=last["ts"].to_pydatetime())

    def publish(self, symbol: str, bars: pd.DataFrame) -> list[BarMessage]:
        """Publish the bars newer than the series' marker and move the marker, in one MULTI;
        returns the messages published (none when every bar was already published)."""
        bus = self.ctx.lab.bus
        key = self.ctx.lab.keys.last_ingested(self.feed.name, symbol, self.timeframe)
        messages = [self.bar_message(row) for row in bars.to_dict("records")]
        try:
            with bus.redis.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        cast(Any, pipe).watch(key)  # redis-py leaves watch() untyped
                        raw: Any = pipe.get(key)
                        last = -math.inf if raw is None else int(raw)
                        fresh = [m for m in messages if _epoch_s(m) > last]
                        if not fresh:
                            pipe.unwatch()
                            return []
                        pipe.multi()
                        for message in fresh:
                            bus.queue_publish(pipe, Stream.MARKET_DATA, message)
                        pipe.set(key, _epoch_s(fresh[-1]))
                        pipe.execute()
                        return fresh
                    except redis.WatchError:
                        continue  # another ingestion moved the marker: look again
        except redis.RedisError as e:
            raise translate_redis_error(e, f"publishing {symbol} bars") from e

    def bar_message(self, row: Mapping[Any, Any]) -> BarMessage:
        """The `market_data` message of one bar row, its id derived from the bar."""
        ts: pd.Timestamp = row["ts"]
        payload = Bar(
            symbol=row["symbol"],
            timeframe=self.timeframe,
            ts=ts.to_pydatetime(),
            open=float(row["open"]),
            high=float(row["high"]),
            low=float(row["low"]),
            close=float(row["close"]),
            volume=float(row["volume"]),
            vwap=_optional_float(row.get("vwap")),
            trade_count=_optional_int(row.get("trade_count")),
            source=self.feed.name,
        )
        message_id = bar_message_id(self.feed.name, payload.symbol, self.timeframe, ts)
        return cast(
            "BarMessage",
            new_message(
                payload, producer=self.name, produced_at=self.ctx.now(), message_id=message_id
            ),
        )

    def flush_lake(self) -> Sequence[Message]:
        """Append the bars stored since the last batch to the lake (one write, not one per bar:
        a lake insert costs tens of milliseconds). The lake is history, not the live path: when
        it is down the batch is dropped with a warning and trading goes on; the three-tier
        reader fills the hole from the provider when the bars are next read."""
        if not self._for_lake:
            return ()
        batch = pd.concat(self._for_lake, ignore_index=True)
        self._for_lake.clear()
        try:
            self.ctx.lab.lake.write_bars(batch)
        except TransientError as e:
            log.warning("lake unavailable, %d bars not stored there: %s", len(batch), e)
        return ()

    def close(self) -> None:
        self.flush_lake()
        closer: Callable[[], None] | None = getattr(self.feed.provider, "close", None)
        if closer is not None:
            closer()


def _epoch_s(message: BarMessage) -> int:
    return int(message.payload.ts.timestamp())


def _optional_float(value: Any) -> float | None:
    if value is None or pd.isna(value):
        return None
    return float(value)


def _optional_int(value: Any) -> int | None:
    if value is None or pd.isna(value):
        return None
    return int(value)
