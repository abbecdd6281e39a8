"""Signal Engine: strategies on each bar. Consumes `market_data`, emits `signals.raw` and `audit`.

What it consumes: `Bar` messages. What it decides: for every configured strategy (setting
`pipeline_strategies`: registered names, `module:Class` or `path.py:Class`), the strategy's live
form (`LiveStrategy`: incremental indicators and the strategy's one rule, the same code as its
batch form) takes the bar and gives a signal or none. What it emits: per signal a `RawSignal`
derived from the bar message, and an `audit` entry saying which strategy decided what and why. A
strategy whose rule fails on a bar (a strength outside [-1, 1], ...) gives that bar an `audit`
entry `signal.error` with the reason instead, and the other strategies go on. Quotes and trade
prints on `market_data` are not for the bar strategies: they are acked with no output.

State: each strategy's live state per series (with its answer to the last bar) is saved in the
cache at most every `SAVE_EVERY_S` seconds and when the engine stops, in one pipelined write, so
the hot path has no round trip of its own. A restarted engine resumes from the saved state and
catches up on the bars it took since, from the bars ingestion cached (ingestion caches every bar
before publishing it); so the signals after a restart, and the outputs of a bar handled again after
a crash, are the ones an engine that never stopped would give. When there is no saved state, the
state is warmed afresh on the latest `cache_bars` bars before the bar, so a strategy signals from
its first live bar; so is a state saved ahead of the first bar a restarted engine takes (saved
inside a batch a crash left unacked, which comes again from its oldest bar). An engine so far
behind ingestion (a burst, a long outage) that the cache has dropped the bars it needs reads them
through the three-tier reader: from the lake, or from the feed's provider for those a crashed
ingestion had not stored yet; when that fails too, a saved state catches up on the cached bars over
the hole, which costs it less than a cold start. A running engine that gets bars again (their batch
was never committed: a handler failed, or the bus refused the commit) drops the states that had
taken them and resumes them the same way (`on_redelivery`). The saved states are a fast copy: while
the cache is down the engine goes on from memory and tries to save again later. A bar delivered for
the first time that is older than the last one a strategy took is a duplicate of one already
answered: it emits nothing.

Live-tunable strategies: the pipeline's engine (not a notebook's deployment, which runs what it was
given) follows two system config entries through a `ConfigWatcher`, at its first bar and on the
first bar after they change, without a restart:
- `strategy_params.NAME` (the re-optimisation's proposals, once applied): the configured strategy
  NAME runs with those parameters;
- `pipeline.promoted_strategies` (`lab.research.promote`, `tradeos-lab promote`): each promoted
  strategy runs with its backtest run's parameters, in place of a configured one of the same name
  (whose `strategy_params` it outranks: the run is the evidence), and its signals carry the run's
  id. A promotion whose strategy code no longer hashes as the run tested it is refused, with an
  `audit` entry and a `risk_events` entry, never run silently.
Each change taken into use is said on `audit` (`config.applied`); a strategy that changed starts
its live state afresh, warmed on the cached bars.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Final
from uuid import UUID

import pandas as pd
import redis

from tradeos_lab.agent.config import ConfigWatcher, applied
from tradeos_lab.bars import empty_bars
from tradeos_lab.contracts import Bar, RawSignal, RiskKind, Severity
from tradeos_lab.errors import (
    DependencyUnavailable,
    ProviderError,
    RateLimited,
    TradeosError,
    ValidationError,
)
from tradeos_lab.keys import Stream
from tradeos_lab.pipeline.service import Service, ServiceContext
from tradeos_lab.strategies import BAR_FIELDS, LiveStrategy, Strategy, get_strategy
from tradeos_lab.strategies.base import strategy_hash
from tradeos_lab.strategies.live import warm_up
from tradeos_lab.symbols import Timeframe

if TYPE_CHECKING:
    from tradeos_lab.contracts import Message
    from tradeos_lab.providers import BarProvider

log = logging.getLogger(__name__)

#: How often live states are saved to the cache (and always when the engine stops).
SAVE_EVERY_S: Final = 1.0
#: After a failed save (the cache is down), how long to wait before the next try.
SAVE_PAUSE_AFTER_FAILURE_S: Final = 30.0
#: The records' system config naming, per strategy, the backtest run it trades under: strategy name
#: -> run_id, class ("module:Qualname"), parameters, strategy_hash (see `research.promote`).
PROMOTED_KEY: Final = "pipeline.promoted_strategies"
#: The records' system config prefix of a strategy's live parameters: `strategy_params.NAME`.
STRATEGY_PARAMS_KEY: Final = "strategy_params"
#: What a bar provider raises when it fails (the lake raises others).
_FEED_ERRORS: Final = (ProviderError, RateLimited)
#: Series key: (strategy name, symbol, timeframe).
_SeriesKey = tuple[str, str, Timeframe]
#: What a strategy made of one bar: a signal, none, or the error its rule raised.
Outcome = RawSignal | str | None


def _decide(live: LiveStrategy, bar: Bar | Mapping[str, Any], message: Message) -> Outcome:
    """The strategy's answer to the bar; a rule that fails (a strength outside [-1, 1], ...) is
    that strategy's error, reported on `audit`, and never stops the other strategies."""
    try:
        return live.update(bar, source_message_id=message.message_id)
    except ValidationError as e:
        return str(e) or type(e).__name__


def load_strategies(refs: Sequence[str]) -> tuple[Strategy[Any], ...]:
    """The strategies `refs` name, with their default parameters; `ValidationError` naming an
    unknown one (and the choices)."""
    strategies = tuple(get_strategy(ref)() for ref in refs)
    names = [s.name for s in strategies]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValidationError(f"strategies {repeated} are configured twice")
    return strategies


def params_key(strategy_name: str) -> str:
    """The system config key of a strategy's live parameters."""
    return f"{STRATEGY_PARAMS_KEY}.{strategy_name}"


def promoted_strategy(name: str, entry: Any) -> tuple[Strategy[Any], UUID]:
    """The strategy a `PROMOTED_KEY` entry names, with its run's parameters, and the run id;
    `ValidationError` when it cannot be trusted (unreadable, renamed, or code changed since)."""
    if not isinstance(entry, Mapping):
        raise ValidationError(f"the promotion of {name!r} is not an entry: {entry!r}")
    try:
        run_id = UUID(str(entry["run_id"]))
        cls = get_strategy(str(entry["class"]))
        parameters = entry.get("parameters") or {}
    except (KeyError, ValueError) as e:
        raise ValidationError(f"the promotion of {name!r} is unreadable: {e}") from None
    if cls.name != name:
        raise ValidationError(f"the promotion of {name!r} names strategy {cls.name!r}")
    tested = entry.get("strategy_hash")
    if tested is not None and strategy_hash(cls) != tested:
        raise ValidationError(
            f"the code of strategy {name!r} changed since backtest run {run_id} tested it; "
            "backtest it again and promote the new run"
        )
    return cls(parameters), run_id


def tuned_strategies(
    configured: Sequence[Strategy[Any]], values: Mapping[str, Any]
) -> tuple[tuple[Strategy[Any], ...], dict[str, UUID], dict[str, str]]:
    """The strategies to run under the system config `values`: the configured ones with their
    `strategy_params`, the promoted ones in place of (or beside) them. Returns them, the run id
    per promoted strategy, and the refused entries (config key: why)."""
    chosen = {s.name: s for s in configured}
    refused: dict[str, str] = {}
    for name, strategy in chosen.items():
        params = values.get(params_key(name))
        if params is not None:
            try:
                chosen[name] = type(strategy)(params if isinstance(params, Mapping) else {})
            except ValidationError as e:
                refused[params_key(name)] = str(e)
    run_ids: dict[str, UUID] = {}
    promoted = values.get(PROMOTED_KEY) or {}
    for name, entry in promoted.items() if isinstance(promoted, Mapping) else ():
        try:
            chosen[name], run_ids[name] = promoted_strategy(name, entry)
        except ValidationError as e:
            refused[f"{PROMOTED_KEY}.{name}"] = str(e)
    return tuple(chosen.values()), run_ids, refused


class SignalEngine(Service):
    """Runs the configured strategies on every bar and publishes what they signal."""

    name = "signal_engine"
    inputs = (Stream.MARKET_DATA,)
    outputs = (Stream.SIGNALS_RAW, Stream.AUDIT, Stream.RISK_EVENTS)
    #: Strategies given in code (a notebook's deployment) instead of the settings.
    given_strategies: ClassVar[tuple[Strategy[Any], ...]] = ()
    #: The backtest run a promoted strategy came from: stamped on its signals, so the records
    #: link each intent and trade (through its raw signal) to the research behind it.
    run_id: ClassVar[UUID | None] = None

    def __init__(self, ctx: ServiceContext) -> None:
        super().__init__(ctx)
        #: The strategies of the settings (or the deployment), before the system config.
        self.configured = self.given_strategies or load_strategies(ctx.settings.pipeline_strategies)
        self.strategies = self.configured
        warm_up(self.configured, ctx.settings.pipeline_timeframe)
        #: The pipeline's engine follows the system config; a deployment runs what it was given.
        self.config = None if self.given_strategies else ConfigWatcher(ctx.lab.records)
        #: The system config keys it follows (asked on every bar).
        self._followed = (PROMOTED_KEY, *(params_key(s.name) for s in self.configured))
        self._run_ids: dict[str, UUID] = {}
        self._tuned = False
        self._live: dict[_SeriesKey, LiveStrategy] = {}
        self._last_outcome: dict[_SeriesKey, Outcome] = {}
        self._unsaved: set[_SeriesKey] = set()
        #: Series rewound for bars delivered again: the last bar each had taken before.
        self._rewound: dict[_SeriesKey, datetime] = {}
        self._provider: BarProvider | None = None
        self._saved_at = time.monotonic()

    def handle(self, message: Message) -> Sequence[Message]:
        bar = message.payload
        if not isinstance(bar, Bar):
            return ()  # quotes and trade prints: no strategy here reads them
        changes, outputs = self._follow_config(message)
        for strategy in self.strategies:
            key = (strategy.name, bar.symbol, bar.timeframe)
            live = self._live.get(key) or self._resume(strategy, bar, message)
            if key in self._rewound and bar.ts > self._rewound[key]:
                live = self._caught_up(strategy, bar, message, live)
            last = live.last_ts
            if last is not None and bar.ts < last:
                log.info(
                    "%s: %s bar %s %s is older than the last one %s took (%s): a duplicate, "
                    "answered already",
                    self.name,
                    bar.symbol,
                    bar.ts.isoformat(),
                    message.message_id,
                    strategy.name,
                    last.isoformat(),
                )
                continue
            if last is not None and bar.ts == last:
                outcome = self._last_outcome.get(key)  # handled before: the same answer
            else:
                outcome = _decide(live, strategy.live_inputs(bar, self.ctx.lab), message)
                self._last_outcome[key] = outcome
                self._unsaved.add(key)
            if isinstance(outcome, RawSignal):
                run_id = self._run_ids.get(strategy.name, self.run_id)
                if run_id is not None:
                    outcome = outcome.model_copy(update={"run_id": run_id})
                outputs.append(self.ctx.message(message, outcome))
                outputs.append(self._audit(message, outcome))
            elif isinstance(outcome, str):
                outputs.append(self._failure(message, strategy, outcome))
        if time.monotonic() - self._saved_at >= SAVE_EVERY_S:
            self._save_or_warn()
        if self.config is not None:
            self.config.acknowledge(changes)
        return outputs

    def on_redelivery(self, messages: Sequence[Message]) -> None:
        """Bars delivered again were never committed: a state that has taken them (or later
        ones) is dropped, and resumed before the oldest of them as a restarted engine resumes,
        so each of them gets its signal again, under the same ids."""
        for message in messages:
            bar = message.payload
            if not isinstance(bar, Bar):
                continue
            for key, live in list(self._live.items()):
                last = live.last_ts
                if key[1:] == (bar.symbol, bar.timeframe) and last is not None and last > bar.ts:
                    log.info(
                        "%s: %s bar %s came again, never committed: %s, which took it and "
                        "bars up to %s, resumes before it",
                        self.name,
                        bar.symbol,
                        bar.ts.isoformat(),
                        key[0],
                        last.isoformat(),
                    )
                    self._rewound.setdefault(key, last)
                    self._drop(key)

    def _caught_up(
        self, strategy: Strategy[Any], bar: Bar, message: Message, live: LiveStrategy
    ) -> LiveStrategy:
        """A rewound state at a bar past where it had been: as it was if the bars it had taken
        came again, else resumed afresh (those bars were committed and will not come again)."""
        key = (strategy.name, bar.symbol, bar.timeframe)
        if live.last_ts == self._rewound.pop(key):
            return live
        self._drop(key)
        return self._resume(strategy, bar, message)

    def _drop(self, key: _SeriesKey) -> None:
        self._live.pop(key, None)
        self._last_outcome.pop(key, None)
        self._unsaved.discard(key)

    # ---- live-tunable strategies -----------------------------------------------------------

    def _follow_config(self, message: Message) -> tuple[dict[str, Any], list[Message]]:
        """At the first bar and after a change of the followed config: the strategies rebuilt
        (those that changed start afresh), with an `audit` entry per change taken into use and
        an `audit` and a `risk_events` entry per refused one."""
        if self.config is None:
            return {}, []
        changes = self.config.pending(self._followed)
        if self._tuned and not changes:
            return changes, []
        self._tuned = True
        strategies, run_ids, refused = tuned_strategies(self.configured, self.config.values)
        before = {s.name: (s, self._run_ids.get(s.name)) for s in self.strategies}
        after = {s.name: (s, run_ids.get(s.name)) for s in strategies}
        moved = {n for n in before.keys() | after.keys() if before.get(n) != after.get(n)}
        self._forget(moved)
        self.strategies, self._run_ids = strategies, run_ids
        out: list[Message] = []
        for key in changes:
            running = ", ".join(
                f"{s!r}" + (f" from run {run_ids[s.name]}" if s.name in run_ids else "")
                for s in strategies
            )
            out.append(applied(self.ctx, message, self.config, key, f"running {running}"))
        for key, why in refused.items():  # said again with each new version, never run
            out.extend(self._refusal(message, key, why))
        return changes, out

    def _forget(self, names: set[str]) -> None:
        """Drop the live states of strategies that changed: they start again on the cached bars
        (a saved state of the old version is not resumed: `_resume` checks the strategy)."""
        for key in [k for k in self._live if k[0] in names]:
            self._drop(key)
            self._rewound.pop(key, None)

    def _refusal(self, message: Message, key: str, why: str) -> list[Message]:
        log.warning("%s refuses config %s: %s", self.name, key, why)
        return [
            self.ctx.audit(
                message,
                action="config.refused",
                target=f"config:{key}",
                reason=f"{self.name} does not run {key}: {why}"[:4000],
            ),
            self.ctx.risk_event(
                message,
                kind=RiskKind.LIMIT_BREACH,
                severity=Severity.WARNING,
                scope=f"config:{key}",
                detail=f"{self.name} refused {key}: {why}"[:4000],
            ),
        ]

    def close(self) -> None:
        """Save every state before stopping, so the next engine resumes without catching up."""
        self._save_or_warn()

    def _save_or_warn(self) -> None:
        """Save, or say why not: the states are a fast copy (a restart without them warms up
        on the cached bars), so a cache outage never holds back a signal computed in memory."""
        try:
            self.save()
        except DependencyUnavailable as e:
            # Each try waits for the client's retries: try again only after a pause.
            self._saved_at = time.monotonic() + SAVE_PAUSE_AFTER_FAILURE_S
            log.warning("%s could not save its live states (kept in memory): %s", self.name, e)

    # ---- state: saved now and then, resumed from the cache ---------------------------------

    def _state_key(self, strategy_name: str, symbol: str, timeframe: Timeframe) -> str:
        return self.ctx.lab.keys.live_strategy(self.name, strategy_name, symbol, timeframe)

    def save(self) -> None:
        """Write the states changed since the last save, in one round trip."""
        self._saved_at = time.monotonic()
        if not self._unsaved:
            return
        cache = self.ctx.lab.cache
        try:
            with cache.redis.pipeline(transaction=False) as pipe:
                for key in self._unsaved:
                    name, symbol, timeframe = key
                    state = _state_json(self._live[key], self._last_outcome.get(key))
                    pipe.set(
                        self._state_key(name, symbol, timeframe),
                        state,
                        ex=cache.bar_ttl(timeframe),
                    )
                pipe.execute()
        except redis.RedisError as e:
            raise DependencyUnavailable(f"cache Redis: {type(e).__name__}") from e
        self._unsaved.clear()

    def _resume(self, strategy: Strategy[Any], bar: Bar, message: Message) -> LiveStrategy:
        """The saved live state of this series caught up on the bars between it and this bar,
        else a fresh one warmed on the bars before this bar (their signals are history, not
        news: none is emitted)."""
        key = (strategy.name, bar.symbol, bar.timeframe)
        try:
            raw = self.ctx.lab.cache.redis.get(
                self._state_key(strategy.name, bar.symbol, bar.timeframe)
            )
        except redis.RedisError as e:
            raise DependencyUnavailable(f"cache Redis: {type(e).__name__}") from e
        live: LiveStrategy | None = None
        how = "no saved state"
        saved = None
        if raw is not None:
            live, outcome = _from_json(raw)
            saved = None if live is None or live.last_ts is None else live.last_ts.isoformat()
            if live is None or live.strategy != strategy:
                live, how = None, "the saved state is of another version or unreadable"
            elif live.last_ts is not None and live.last_ts > bar.ts:
                # Saved inside a batch whose outputs were never committed (a crash before the
                # ack): its bars come again from the oldest, before the state. Start afresh.
                live, how = None, f"its state was saved ahead, at {saved}"
            else:
                how = f"from its state saved at {saved}"
                self._last_outcome[key] = outcome
        earlier = empty_bars()
        if live is not None and live.last_ts is not None and live.last_ts < bar.ts:
            earlier = self._bars_since(bar, live.last_ts)
        if live is None:
            how = f"afresh ({how})"
            live = strategy.live(bar.symbol, bar.timeframe)
            earlier = self._warm_up_bars(bar)
        log.info(
            "%s resumes %s on %s %s at bar %s %s, %s, on %d bars before it",
            self.name,
            strategy.name,
            bar.symbol,
            bar.timeframe.value,
            bar.ts.isoformat(),
            message.message_id,
            how,
            len(earlier),
        )
        for row in earlier.loc[:, ["ts", *BAR_FIELDS]].to_dict("records"):
            with contextlib.suppress(ValidationError):  # a failing rule shows on live bars
                live.update(
                    {str(k): v for k, v in row.items()}, source_message_id=message.message_id
                )
        self._live[key] = live
        return live

    def _warm_up_bars(self, bar: Bar) -> pd.DataFrame:
        """The latest `cache_bars` bars before `bar`, which a fresh state warms up on: the
        cached ones, unless the cache has dropped most of them (a few bars behind is as good a
        warm-up, and asks the lake nothing)."""
        window = self.ctx.lab.settings.limits.cache_bars
        cached = self.ctx.lab.cache.get_bars(bar.symbol, bar.timeframe)
        earlier = cached[cached["ts"] < bar.ts]
        if len(cached) < window or len(earlier) >= window // 2:
            return earlier  # the cache holds the series since its start, or enough of it
        read = self._read_before(bar, start=None, limit=window)
        return earlier if read is None else read

    def _bars_since(self, bar: Bar, since: pd.Timestamp) -> pd.DataFrame:
        """The bars after `since` (a saved state's last bar) and before `bar`. When the cache
        no longer reaches back to `since` and the lake cannot be read either, the cached ones
        (the state catches up over the hole, which costs it less than starting cold)."""
        cached = self.ctx.lab.cache.get_bars(bar.symbol, bar.timeframe)
        between = cached[(cached["ts"] > since) & (cached["ts"] < bar.ts)]
        reaches = not cached.empty and cached["ts"].iloc[0] <= since
        if reaches or (bar.ts - since).total_seconds() <= bar.timeframe.seconds:
            return between  # all cached, or none can lie between
        read = self._read_before(bar, start=since, limit=None)
        return between if read is None else read[read["ts"] > since]

    def _read_before(
        self, bar: Bar, *, start: pd.Timestamp | None, limit: int | None
    ) -> pd.DataFrame | None:
        """Bars before `bar` that the cache has dropped (an engine far behind ingestion, after
        a long outage or a burst), through the three-tier reader: the lake keeps every bar
        ingestion stored, the feed's provider has those it had not stored yet (it crashed).
        While the lake cannot be read, the provider alone; None when neither answers."""
        provider = self._feed_provider()
        try:
            return self.ctx.lab.bars(provider).get_bars(
                bar.symbol, bar.timeframe, start=start, end=bar.ts, limit=limit
            )
        except _FEED_ERRORS as e:  # the feed failed inside the reader: asking it again would too
            log.warning("%s: bars before %s unread from the feed: %s", self.name, bar.ts, e)
            return None
        except TradeosError as e:
            log.warning("%s: bars before %s unread from the lake: %s", self.name, bar.ts, e)
        if provider is None:
            return None
        step = pd.Timedelta(seconds=bar.timeframe.seconds)
        since = start if start is not None else bar.ts - (limit or 1) * step
        try:
            bars = provider.fetch_bars(bar.symbol, bar.timeframe, since, bar.ts)
        except TradeosError as e:
            log.warning("%s: bars before %s unread from the feed: %s", self.name, bar.ts, e)
            return None
        return bars if limit is None else bars.tail(limit)

    def _feed_provider(self) -> BarProvider | None:
        """The provider of the feed ingestion polls (`pipeline_feed`), opened on first use."""
        if self._provider is None:
            from tradeos_lab.pipeline.services.ingestion import open_feed

            try:
                self._provider = open_feed(self.ctx.settings, self.ctx.lab).provider
            except TradeosError as e:
                log.warning("%s reads history without the feed's provider: %s", self.name, e)
                return None
        return self._provider

    # ---- what it emits --------------------------------------------------------------------------

    def _failure(self, message: Message, strategy: Strategy[Any], error: str) -> Message:
        return self.ctx.audit(
            message,
            action="signal.error",
            target=f"strategy:{strategy.name}",
            reason=f"{strategy.name} failed on this bar and gave no signal: {error}"[:4000],
        )

    def _audit(self, message: Message, signal: RawSignal) -> Message:
        return self.ctx.audit(
            message,
            action="signal.emit",
            target=f"strategy:{signal.strategy}",
            reason=(
                f"{signal.strategy} on {signal.symbol} {signal.timeframe.value} bar "
                f"{signal.ts.isoformat()}: {signal.direction.value} with strength "
                f"{signal.strength:.4g}, confidence {signal.confidence:.4g}"
            ),
            new_value={
                "direction": signal.direction.value,
                "strength": signal.strength,
                "confidence": signal.confidence,
            },
        )


def _state_json(live: LiveStrategy, outcome: Outcome) -> str:
    state = {
        "live": live.to_dict(),
        "signal": outcome.model_dump(mode="json") if isinstance(outcome, RawSignal) else None,
        "error": outcome if isinstance(outcome, str) else None,
    }
    return json.dumps(state, allow_nan=False, separators=(",", ":"))


def _from_json(raw: bytes | str) -> tuple[LiveStrategy | None, Outcome]:
    """A saved state, or (None, None) when it cannot be read: a corrupt copy is rebuilt from
    the cached bars, never trusted."""
    try:
        data = json.loads(raw)
        live = LiveStrategy.from_dict(data["live"])
        saved, error = data["signal"], data.get("error")
        if saved is not None:  # JSON's text types (a time as ISO text), so validated as JSON
            return live, RawSignal.model_validate_json(json.dumps(saved))
        return live, None if error is None else str(error)
    except (ValueError, KeyError, TypeError) as e:
        log.warning("a saved live strategy state is unreadable, rebuilt instead: %s", e)
        return None, None
