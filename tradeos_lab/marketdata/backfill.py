"""The historical backfill: fill each symbol's gaps up to the configured history.

A *job* (default name `{provider}-{timeframe}`) has a *plan*: the symbols, in order, and one fixed
window `[start, end)` (`settings.backfill_history_days`, 730 by default, ending at the last
completed bar when the plan was made). Each run takes the next `max_symbols` unfinished symbols
(all of them by default; a nightly run of a few dozen keeps one night's provider calls bounded).
Per symbol it asks the store for its gaps, drops the holes the provider already answered empty
for (the lake's gap ledger), merges gaps that lie close together, and fetches them oldest first
in chunks of `chunk_bars` bars, writing each chunk to the store before asking for the next.
Holes the provider could not fill go into the gap ledger.

Resuming. After every chunk the symbol's cursor (everything before it is done) is written to the
checkpoint hash in the cache Redis; a finished symbol is marked done. A run killed at any point
restarts with `resume=True` on the same plan: finished symbols are skipped and the current one
continues from its cursor. The store stays the source of truth: if the checkpoint is lost (LRU
eviction, a flushed server) a new pass re-detects gaps and fetches only what is still missing.

One run per job at a time: a lease (`Keys.backfill_lock`) is held and renewed by a background
thread; a lease left by a killed process on this host is taken over at once, any other one expires
after `lease_seconds`. Different jobs run concurrently and share the provider's rate limit through
a `SharedLimiter` on the flags tier.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

import pandas as pd
import psutil
import redis
from prometheus_client import Counter
from tqdm.auto import tqdm

from tradeos_lab.bars import BarStore
from tradeos_lab.errors import (
    DependencyUnavailable,
    ProviderError,
    TradeosError,
    TransientError,
    ValidationError,
)
from tradeos_lab.keys import Keys
from tradeos_lab.marketdata.ranges import (
    GapLedger,
    Span,
    bars_in,
    ceil_to_grid,
    floor_to_grid,
    known_holes,
    plan_requests,
    spans_of,
    subtract,
    utc,
)
from tradeos_lab.providers.base import BarProvider, RateLimiter
from tradeos_lab.symbols import Timeframe, validate_symbols

if TYPE_CHECKING:
    from tradeos_lab.lab import Lab
    from tradeos_lab.marketdata.subscriptions import SubscriptionManager

log = logging.getLogger(__name__)

CHECKPOINT_TTL_SECONDS: Final = 30 * 86_400
_PLAN: Final = "plan"

BACKFILL_BARS = Counter(
    "tradeos_backfill_bars", "Bars written by the backfill", ["provider", "timeframe"]
)
BACKFILL_REQUESTS = Counter(
    "tradeos_backfill_requests", "Provider requests made by the backfill", ["provider", "timeframe"]
)
BACKFILL_SYMBOLS = Counter(
    "tradeos_backfill_symbols", "Symbols finished or failed by the backfill", ["result"]
)

# Renew the lease only while this process still holds it. KEYS: lease. ARGV: token, ttl ms.
_RENEW: Final = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local ok, held = pcall(cjson.decode, raw)
if ok and held['token'] == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2]); return 1
end
return 0
"""
_RELEASE: Final = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local ok, held = pcall(cjson.decode, raw)
if ok and held['token'] == ARGV[1] then redis.call('DEL', KEYS[1]); return 1 end
return 0
"""
# Take over a lease only if it is still the one we inspected. ARGV: old raw value, new, ttl ms.
_TAKE_OVER: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]); return 1
end
return 0
"""


class BackfillBusy(TradeosError):
    """Another process is running the same backfill job."""

    action = "Wait for it to finish, or pick another job name (--job)."


Clock = Callable[[], pd.Timestamp]


def _now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


# ---- plan, checkpoint, report ------------------------------------------------------------------


@dataclass(frozen=True)
class BackfillPlan:
    """What one pass of a job covers; fixed when the pass starts so a resume sees the same."""

    job: str
    provider: str
    timeframe: str
    symbols: tuple[str, ...]
    start: pd.Timestamp
    end: pd.Timestamp
    days: int
    created_at: pd.Timestamp

    def to_json(self) -> str:
        data = asdict(self)
        data["symbols"] = list(self.symbols)
        for name in ("start", "end", "created_at"):
            data[name] = getattr(self, name).isoformat()
        return json.dumps(data)

    @classmethod
    def from_json(cls, raw: bytes | str) -> BackfillPlan:
        data = json.loads(raw)
        return cls(
            job=str(data["job"]),
            provider=str(data["provider"]),
            timeframe=str(data["timeframe"]),
            symbols=tuple(data["symbols"]),
            start=utc(data["start"]),
            end=utc(data["end"]),
            days=int(data["days"]),
            created_at=utc(data["created_at"]),
        )


@dataclass
class SymbolResult:
    """What a run did for one symbol."""

    symbol: str
    requests: int = 0
    bars_written: int = 0
    unfilled_gaps: int = 0
    unfilled_bars: int = 0
    resumed_from: pd.Timestamp | None = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class BackfillReport:
    """The outcome of one run: per-symbol results and how many symbols the plan still has."""

    plan: BackfillPlan
    results: list[SymbolResult] = field(default_factory=list)
    remaining: int = 0

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def bars_written(self) -> int:
        return sum(r.bars_written for r in self.results)

    def frame(self) -> pd.DataFrame:
        columns = [
            "symbol",
            "requests",
            "bars_written",
            "unfilled_gaps",
            "unfilled_bars",
            "resumed_from",
            "seconds",
            "error",
        ]
        rows = [{c: getattr(r, c) for c in columns} for r in self.results]
        return pd.DataFrame(rows, columns=columns)

    def summary(self) -> str:
        failed = [r.symbol for r in self.results if not r.ok]
        text = (
            f"backfill {self.plan.job}: {len(self.results)} symbols, {self.bars_written} bars "
            f"written, window {self.plan.start:%Y-%m-%d %H:%M} .. {self.plan.end:%Y-%m-%d %H:%M} "
            f"UTC, {self.remaining} symbols left in the plan"
        )
        return text + (f"; failed: {', '.join(failed)}" if failed else "")


class BackfillCheckpoint:
    """The progress of one job in the cache Redis: plan, cursor and result per symbol.

    One hash: `plan` (JSON), `cursor:SYMBOL` (ISO time: everything before it is done),
    `done:SYMBOL` (JSON result), `error:SYMBOL` (last failure). Refreshed TTL of 30 days.
    """

    def __init__(self, redis: redis.Redis, keys: Keys, job: str) -> None:
        self.redis = redis
        self.key = keys.backfill(job)
        self.job = job

    def plan(self) -> BackfillPlan | None:
        raw = self._do(lambda: self.redis.hget(self.key, _PLAN))
        return None if raw is None else BackfillPlan.from_json(raw)

    def start(self, plan: BackfillPlan) -> None:
        """Replace any previous pass with `plan`."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.key)
        pipe.hset(self.key, _PLAN, plan.to_json())
        pipe.expire(self.key, CHECKPOINT_TTL_SECONDS)
        self._do(pipe.execute)

    def extend(self, plan: BackfillPlan) -> None:
        self._set({_PLAN: plan.to_json()})

    def cursor(self, symbol: str) -> pd.Timestamp | None:
        raw = self._do(lambda: self.redis.hget(self.key, f"cursor:{symbol}"))
        return None if raw is None else utc(raw.decode() if isinstance(raw, bytes) else raw)

    def advance(self, symbol: str, cursor: pd.Timestamp) -> None:
        self._set({f"cursor:{symbol}": cursor.isoformat()})

    def finish(self, symbol: str, result: SymbolResult) -> None:
        payload = {
            "bars_written": result.bars_written,
            "unfilled_gaps": result.unfilled_gaps,
            "unfilled_bars": result.unfilled_bars,
            "finished_at": _now().isoformat(),
        }
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.key, f"done:{symbol}", json.dumps(payload))
        pipe.hdel(self.key, f"error:{symbol}")
        pipe.expire(self.key, CHECKPOINT_TTL_SECONDS)
        self._do(pipe.execute)

    def fail(self, symbol: str, message: str) -> None:
        self._set({f"error:{symbol}": message})

    def done(self) -> set[str]:
        return {f.split(":", 1)[1] for f in self._fields() if f.startswith("done:")}

    def status(self) -> pd.DataFrame:
        """One row per planned symbol: state (done, running/partial, failed, pending), cursor,
        bars written, unfilled gaps and bars, finished_at, error."""
        raw = self._do(lambda: self.redis.hgetall(self.key))
        fields = {_text(k): _text(v) for k, v in raw.items()}
        columns = [
            "symbol",
            "state",
            "cursor",
            "bars_written",
            "unfilled_gaps",
            "unfilled_bars",
            "finished_at",
            "error",
        ]
        if _PLAN not in fields:
            return pd.DataFrame(columns=columns)
        plan = BackfillPlan.from_json(fields[_PLAN])
        rows = []
        for symbol in plan.symbols:
            done = json.loads(fields[f"done:{symbol}"]) if f"done:{symbol}" in fields else None
            cursor = fields.get(f"cursor:{symbol}")
            error = fields.get(f"error:{symbol}")
            state = "done" if done else "failed" if error else "partial" if cursor else "pending"
            rows.append(
                {
                    "symbol": symbol,
                    "state": state,
                    "cursor": utc(cursor) if cursor else pd.NaT,
                    "bars_written": (done or {}).get("bars_written"),
                    "unfilled_gaps": (done or {}).get("unfilled_gaps"),
                    "unfilled_bars": (done or {}).get("unfilled_bars"),
                    "finished_at": utc(done["finished_at"]) if done else pd.NaT,
                    "error": error,
                }
            )
        return pd.DataFrame(rows, columns=columns)

    def _fields(self) -> list[str]:
        return [_text(f) for f in self._do(lambda: self.redis.hkeys(self.key))]

    def _set(self, mapping: dict[str, str]) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.key, mapping=dict(mapping))  # type: ignore[arg-type]
        pipe.expire(self.key, CHECKPOINT_TTL_SECONDS)
        self._do(pipe.execute)

    @staticmethod
    def _do(call: Callable[[], Any]) -> Any:
        try:
            return call()
        except redis.RedisError as e:
            raise DependencyUnavailable(f"cache Redis: {type(e).__name__}: {e}") from e


class _Lease:
    """The job's single-runner lease, renewed by a daemon thread while the run lasts."""

    def __init__(self, redis: redis.Redis, key: str, seconds: float, wait_seconds: float) -> None:
        self.redis = redis
        self.key = key
        self.ttl_ms = max(1000, round(seconds * 1000))
        self.wait_seconds = wait_seconds
        self.token = uuid.uuid4().hex
        self.value = json.dumps(
            {"token": self.token, "host": socket.gethostname(), "pid": os.getpid()}
        )
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        self._take_over = redis.register_script(_TAKE_OVER)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = threading.Event()

    def __enter__(self) -> _Lease:
        deadline = time.monotonic() + self.wait_seconds
        while not self._acquire():
            if time.monotonic() >= deadline:
                holder = self.redis.get(self.key)
                raise BackfillBusy(f"backfill job lease {self.key} is held by {_text(holder)}")
            time.sleep(0.2)
        self._thread = threading.Thread(target=self._keep, name="backfill-lease", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self._release(keys=[self.key], args=[self.token])
        except redis.RedisError:
            log.warning("could not release the backfill lease %s; it expires by itself", self.key)

    def _acquire(self) -> bool:
        if self.redis.set(self.key, self.value, nx=True, px=self.ttl_ms):
            return True
        raw = self.redis.get(self.key)
        if raw is None:
            return False  # expired in between: the next attempt takes it
        try:
            held = json.loads(raw)
            dead = held["host"] == socket.gethostname() and not psutil.pid_exists(int(held["pid"]))
        except (ValueError, KeyError, TypeError):
            dead = False
        if dead:
            log.warning("taking over the backfill lease of dead process %s", held["pid"])
            return bool(self._take_over(keys=[self.key], args=[raw, self.value, self.ttl_ms]))
        return False

    def _keep(self) -> None:
        while not self._stop.wait(self.ttl_ms / 3000):
            try:
                if not self._renew(keys=[self.key], args=[self.token, self.ttl_ms]):
                    log.error("backfill lease %s was lost; stopping after this chunk", self.key)
                    self.lost.set()
                    return
            except redis.RedisError:
                log.warning("backfill lease %s not renewed (Redis error); retrying", self.key)


# ---- the job ------------------------------------------------------------------------------------


class Backfill:
    """Fills a bar store from a provider, symbol by symbol, resumably (see the module doc)."""

    def __init__(
        self,
        store: BarStore,
        provider: BarProvider,
        timeframe: Timeframe | str,
        *,
        redis: redis.Redis,
        keys: Keys,
        history_days: int = 730,
        retention_days: int = 0,
        limiter: RateLimiter | None = None,
        job: str | None = None,
        chunk_bars: int = 5_000,
        merge_within_bars: int = 500,
        recheck_after: timedelta = timedelta(hours=6),
        lease_seconds: float = 15.0,
        lease_wait_seconds: float | None = None,
        progress: bool = True,
        clock: Clock = _now,
    ) -> None:
        """`limiter` is called before each provider request the job makes; leave it None when
        the provider applies a (shared) limiter to its own HTTP requests. `retention_days` > 0
        keeps the window inside the store's retention (the lake drops older bars)."""
        if chunk_bars < 1 or merge_within_bars < 0 or history_days < 1:
            raise ValidationError("chunk_bars and history_days must be >= 1, merge_within >= 0")
        self.store = store
        self.provider = provider
        self.timeframe = Timeframe.parse(timeframe)
        self.redis = redis
        self.keys = keys
        self.history_days = history_days
        self.retention_days = retention_days
        self.limiter = limiter
        self.job = Keys.group(job or f"{provider.name}-{self.timeframe.value}")
        self.chunk_bars = chunk_bars
        self.merge_within_bars = merge_within_bars
        self.recheck_after = recheck_after
        self.lease_seconds = lease_seconds
        self.lease_wait_seconds = (
            lease_seconds + 1 if lease_wait_seconds is None else lease_wait_seconds
        )
        self.progress = progress
        self._clock = clock
        self.checkpoint = BackfillCheckpoint(redis, keys, self.job)
        self._lease: _Lease | None = None

    @classmethod
    def from_lab(
        cls,
        lab: Lab,
        provider: BarProvider,
        timeframe: Timeframe | str,
        **kwargs: Any,
    ) -> Backfill:
        """A backfill into the lab's lake, checkpointed in its cache, with the settings' history
        and the lake's retention for the timeframe."""
        kwargs.setdefault("history_days", lab.settings.backfill_history_days)
        kwargs.setdefault("retention_days", lab.settings.lake_ttl_days(timeframe))
        return cls(lab.lake, provider, timeframe, redis=lab.cache.redis, keys=lab.keys, **kwargs)

    def status(self) -> pd.DataFrame:
        """The job's checkpoint, one row per planned symbol."""
        return self.checkpoint.status()

    def run(
        self,
        symbols: Iterable[str] | None = None,
        *,
        days: int | None = None,
        max_symbols: int | None = None,
        resume: bool = False,
        subscriptions: SubscriptionManager | None = None,
    ) -> BackfillReport:
        """Backfill the next `max_symbols` unfinished symbols of the plan; returns the report.

        Without `resume` a new pass starts (new window, every symbol pending). With `resume` the
        stored plan continues; symbols given that it lacks are appended. Symbols default to the
        subscriptions of this timeframe. Provider failures of one symbol are reported and the run
        goes on; that symbol stays pending for the next `resume`.
        """
        chosen = self._symbols(symbols, subscriptions)
        if max_symbols is not None and max_symbols < 1:
            raise ValidationError("max_symbols must be >= 1")
        with _Lease(
            self.redis,
            self.keys.backfill_lock(self.job),
            self.lease_seconds,
            self.lease_wait_seconds,
        ) as lease:
            self._lease = lease
            plan = self._plan(chosen, days, resume)
            finished = self.checkpoint.done()
            pending = [s for s in plan.symbols if s not in finished]
            batch = pending[:max_symbols] if max_symbols is not None else pending
            report = BackfillReport(plan, remaining=len(pending) - len(batch))
            bar = tqdm(
                total=len(batch),
                desc=f"backfill {self.timeframe.value}",
                unit="symbol",
                disable=not self.progress,
            )
            try:
                for symbol in batch:
                    bar.set_postfix_str(symbol)
                    result = self._fill(symbol, plan)
                    report.results.append(result)
                    if not result.ok:
                        report.remaining += 1
                    bar.update(1)
            finally:
                bar.close()
                self._lease = None
        log.info(report.summary())
        return report

    # ---- one symbol ---------------------------------------------------------------------------

    def _fill(self, symbol: str, plan: BackfillPlan) -> SymbolResult:
        began = time.monotonic()
        result = SymbolResult(symbol)
        cursor = self.checkpoint.cursor(symbol)
        if cursor is not None and cursor > plan.start:
            result.resumed_from = cursor
        try:
            requests = self._requests(symbol, plan, cursor or plan.start)
            self._fetch(symbol, requests, result)
            unfilled = self._unfilled(symbol, plan)
            result.unfilled_gaps = len(unfilled)
            result.unfilled_bars = int(unfilled["missing_bars"].sum()) if len(unfilled) else 0
        except (ProviderError, TransientError) as e:
            result.error = f"{type(e).__name__}: {e}"
            self.checkpoint.fail(symbol, result.error)
            BACKFILL_SYMBOLS.labels(result="failed").inc()
            log.warning("backfill of %s failed: %s", symbol, result.error)
        else:
            self.checkpoint.finish(symbol, result)
            BACKFILL_SYMBOLS.labels(result="done").inc()
        result.seconds = time.monotonic() - began
        return result

    def _requests(self, symbol: str, plan: BackfillPlan, cursor: pd.Timestamp) -> list[Span]:
        if cursor >= plan.end:
            return []
        missing = spans_of(self.store.gaps(symbol, self.timeframe, cursor, plan.end))
        if missing:
            holes = known_holes(
                self.store, symbol, self.timeframe, older_than=self._clock() - self.recheck_after
            )
            missing = subtract(missing, holes)
        return plan_requests(
            missing,
            self.timeframe,
            max_bars=self.chunk_bars,
            merge_within_bars=self.merge_within_bars,
        )

    def _fetch(self, symbol: str, requests: Sequence[Span], result: SymbolResult) -> None:
        labels = {"provider": self.provider.name, "timeframe": self.timeframe.value}
        bar = tqdm(
            total=bars_in(requests, self.timeframe),
            desc=symbol,
            unit="bar",
            unit_scale=True,
            leave=False,
            disable=not self.progress,
        )
        try:
            for start, end in requests:
                if self._lease is not None and self._lease.lost.is_set():
                    raise BackfillBusy(f"the lease of job {self.job} was lost; run it again")
                if self.limiter is not None:
                    self.limiter()
                bars = self.provider.fetch_bars(symbol, self.timeframe, start, end)
                result.requests += 1
                BACKFILL_REQUESTS.labels(**labels).inc()
                if not bars.empty:
                    self.store.write_bars(bars)
                    result.bars_written += len(bars)
                    BACKFILL_BARS.labels(**labels).inc(len(bars))
                self.checkpoint.advance(symbol, end)
                bar.update(bars_in([(start, end)], self.timeframe))
        finally:
            bar.close()

    def _unfilled(self, symbol: str, plan: BackfillPlan) -> pd.DataFrame:
        """The gaps left in the window; recorded in the store's gap ledger when it has one."""
        if isinstance(self.store, GapLedger):
            return self.store.record_gaps(symbol, self.timeframe, plan.start, plan.end)
        return self.store.gaps(symbol, self.timeframe, plan.start, plan.end)

    # ---- planning -----------------------------------------------------------------------------

    def _symbols(
        self, symbols: Iterable[str] | None, subscriptions: SubscriptionManager | None
    ) -> list[str]:
        if symbols is None:
            if subscriptions is None:
                return []
            return subscriptions.symbols(self.timeframe)
        return validate_symbols(symbols)

    def _plan(self, symbols: list[str], days: int | None, resume: bool) -> BackfillPlan:
        if resume:
            plan = self.checkpoint.plan()
            if plan is not None:
                extra = tuple(s for s in symbols if s not in plan.symbols)
                if extra:
                    plan = BackfillPlan(**{**asdict(plan), "symbols": plan.symbols + extra})
                    self.checkpoint.extend(plan)
                return plan
            log.info("backfill %s: no plan to resume; starting a new pass", self.job)
        if not symbols:
            raise ValidationError(
                "no symbols to backfill: pass symbols or subscribe to this timeframe first"
            )
        days = self.history_days if days is None else days
        if isinstance(days, bool) or not isinstance(days, int) or days < 1:
            raise ValidationError(f"days must be an int >= 1, got {days!r}")
        if self.retention_days > 0 and days >= self.retention_days:
            # Bars older than the store's retention would be dropped on write and show as gaps
            # forever; one day of margin covers a long run.
            log.warning(
                "backfill %s: %d days exceed the %s retention of %d days; using %d",
                self.job,
                days,
                self.timeframe.value,
                self.retention_days,
                self.retention_days - 1,
            )
            days = max(1, self.retention_days - 1)
        now = self._clock()
        end = floor_to_grid(now, self.timeframe)
        start = ceil_to_grid(end - timedelta(days=days), self.timeframe)
        plan = BackfillPlan(
            job=self.job,
            provider=self.provider.name,
            timeframe=self.timeframe.value,
            symbols=tuple(symbols),
            start=start,
            end=end,
            days=days,
            created_at=now,
        )
        self.checkpoint.start(plan)
        return plan


def backfill_jobs(client: redis.Redis, keys: Keys) -> list[str]:
    """Names of the jobs that have a checkpoint."""
    prefix = keys.backfill("x")[:-1]
    try:
        found = client.scan_iter(match=keys.backfill_pattern(), count=500)
        return sorted(_text(k)[len(prefix) :] for k in found)
    except redis.RedisError as e:
        raise DependencyUnavailable(f"cache Redis: {type(e).__name__}: {e}") from e


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
