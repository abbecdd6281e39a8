"""The cache tier: live state that services and notebooks read, and the fast tier of bar reads.

Hashes hold objects (price, account, positions, policy profile, trackers), sorted sets hold
rankings (watchlist by time added, candidates by score). Prices and bars are volatile and carry the
TTLs of the settings profile, so stale state does not outlive a restart.

The last N bars of one symbol and timeframe live in ONE string key as packed fixed-size records
(`BAR_RECORD`, 64 bytes, oldest first). Reading 500 bars is one GET of 32 kB plus a zero-copy
numpy view, which is what makes the <= 0.5 ms p50 possible (`benchmarks/bench_cache_bars.py`); a
list or a hash per bar would cost one decode per bar. Writes go through a Lua script that merges
new records by timestamp (a new bar replaces one with the same `ts`), keeps exactly the last N and
refreshes the TTL, all atomically on the server, so appending one bar sends 64 bytes, not 32 kB.

Bar reads can skip even that round trip: given a RESP3 client (`near_client`), `get_bars` reads
through a near cache (`tradeos_lab.tiers.near_cache`) that keeps blocks in this process until
Redis reports a change (CLIENT TRACKING), bounded by `settings.cache_near_entries` (0 = off).
It is there for the tail: on a loaded machine the round trip alone breaks the p99 targets of
`get_bars` (<= 2 ms; >= 10x PostgreSQL's), a memory hit does not (figures in its docstring).
Every other command goes through the main client.
"""

from __future__ import annotations

import functools
import importlib
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from numbers import Real
from typing import Any, Final, ParamSpec, TypeVar

import numpy as np
import pandas as pd
import redis
from redis.typing import EncodableT

from tradeos_lab.bars import BAR_COLUMNS, bar_strings, empty_bars, validate_bar, validate_bars
from tradeos_lab.errors import ConfigError, DependencyUnavailable, StoreError, ValidationError
from tradeos_lab.keys import Keys
from tradeos_lab.settings import Settings
from tradeos_lab.symbols import Timeframe, canonical_name, validate_symbol
from tradeos_lab.tiers.near_cache import NearCache

# One bar: `ts` (epoch seconds) is big-endian so the Lua merge can read it with struct.unpack;
# the rest is little-endian so numpy views it without a byte swap on x86/ARM.
BAR_RECORD: Final = np.dtype(
    [
        ("ts", ">i8"),
        ("open", "<f8"),
        ("high", "<f8"),
        ("low", "<f8"),
        ("close", "<f8"),
        ("volume", "<f8"),
        ("vwap", "<f8"),
        ("trade_count", "<i8"),  # -1 = missing
    ]
)
_FLOAT_COLUMNS: Final = ("open", "high", "low", "close", "volume", "vwap")
_NS_PER_S: Final = 1_000_000_000

# Merge new records into the stored block by ts (new wins on a tie), keep the last N, refresh the
# TTL; optionally replace the latest indicators unless the stored ones are for a later bar.
# KEYS: bars, indicators. ARGV: record size, N, ttl s, records, indicators ts ('' = none), pairs...
_WRITE_BARS: Final = """
local rec, cap, ttl, new = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local kept = -1
if #new > 0 then
  local old = redis.call('GET', KEYS[1])
  if (not old) or (#old % rec ~= 0) then old = '' end
  local function ts(s, i) return (struct.unpack('>i8', s, (i - 1) * rec + 1)) end
  local function rec_at(s, i) return string.sub(s, (i - 1) * rec + 1, i * rec) end
  local nold, nnew = #old / rec, #new / rec
  local out
  if nold == 0 then
    out = new
  elseif ts(new, 1) > ts(old, nold) then
    out = old .. new
  else
    local parts, i, j = {}, 1, 1
    while i <= nold and j <= nnew do
      local a, b = ts(old, i), ts(new, j)
      if a < b then
        parts[#parts + 1] = rec_at(old, i); i = i + 1
      elseif a > b then
        parts[#parts + 1] = rec_at(new, j); j = j + 1
      else
        parts[#parts + 1] = rec_at(new, j); i = i + 1; j = j + 1
      end
    end
    if i <= nold then parts[#parts + 1] = string.sub(old, (i - 1) * rec + 1) end
    if j <= nnew then parts[#parts + 1] = string.sub(new, (j - 1) * rec + 1) end
    out = table.concat(parts)
  end
  if #out > cap * rec then out = string.sub(out, #out - cap * rec + 1) end
  redis.call('SET', KEYS[1], out, 'EX', ttl)
  kept = #out / rec
end
local wrote = 0
if ARGV[5] ~= '' then
  local cur = redis.call('HGET', KEYS[2], '_ts')
  if (not cur) or tonumber(cur) <= tonumber(ARGV[5]) then
    redis.call('DEL', KEYS[2])
    redis.call('HSET', KEYS[2], '_ts', ARGV[5], unpack(ARGV, 6))
    redis.call('EXPIRE', KEYS[2], ttl)
    wrote = 1
  end
end
return {kept, wrote}
"""

_INDICATOR = re.compile(r"[A-Za-z][A-Za-z0-9_.]{0,63}")
_PARAM = re.compile(r"[a-z][a-z0-9_]{0,63}")
_PROFILE_NAME_FIELD: Final = "_profile"


_P = ParamSpec("_P")
_T = TypeVar("_T")


def _redis_errors_translated(method: Callable[_P, _T]) -> Callable[_P, _T]:
    """Callers of the cache see the workbench's errors, never redis-py's: an unreachable or
    timed-out server (after the client's own retries) is `DependencyUnavailable`, so it is
    retried like any transient failure; a refusal (a key of another type, out of memory, a read
    only replica) is `StoreError`."""

    @functools.wraps(method)
    def call(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return method(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as e:
            raise DependencyUnavailable(
                f"cache Redis unreachable in {method.__name__}: {type(e).__name__}: {e}"
            ) from e
        except redis.RedisError as e:
            raise StoreError(f"cache Redis refused {method.__name__}: {e}") from e

    return call


# ---- values ---------------------------------------------------------------------------------


def _account_fields(balance: float, portfolio_value: float) -> dict[EncodableT, EncodableT]:
    return {
        "balance": repr(_number("balance", balance)),
        "portfolio_value": repr(_number("portfolio_value", portfolio_value)),
        "updated_at": repr(time.time()),
    }


def _position_entry(
    symbol: str, *, quantity: float, avg_price: float, strategy: str | None = None
) -> Position:
    """A position as the cache keeps it, checked (quantity != 0, average price > 0)."""
    quantity = _number("quantity", quantity)
    if quantity == 0:
        raise ValidationError("quantity is 0; close a position with remove_position")
    return Position(
        symbol=validate_symbol(symbol),
        quantity=quantity,
        avg_price=_number("avg_price", avg_price, positive=True),
        strategy=None if strategy is None else _name("strategy", strategy),
        updated_at=time.time(),
    )


def _position_json(position: Position) -> str:
    return json.dumps(
        {
            "quantity": position.quantity,
            "avg_price": position.avg_price,
            "strategy": position.strategy,
            "updated_at": position.updated_at,
        }
    )


@dataclass(frozen=True)
class Price:
    """The latest price of one symbol and when it was observed (epoch seconds)."""

    symbol: str
    price: float
    ts: float


@dataclass(frozen=True)
class Account:
    """Cash balance and total portfolio value of the (paper) account."""

    balance: float
    portfolio_value: float
    updated_at: float


@dataclass(frozen=True)
class AccountBook:
    """The account, its open positions and the latest prices a pre-trade check reads at once."""

    account: Account | None
    positions: dict[str, Position]
    #: Latest prices of the symbols asked for and of every symbol held (unknown ones left out).
    prices: dict[str, Price]


@dataclass(frozen=True)
class Position:
    """One open position: signed quantity (negative = short) and average entry price."""

    symbol: str
    quantity: float
    avg_price: float
    strategy: str | None = None
    updated_at: float = 0.0

    @property
    def side(self) -> str:
        return "long" if self.quantity > 0 else "short"


@dataclass(frozen=True)
class PolicyProfile:
    """The active risk policy (Conservative, Balanced, Aggressive...) and its parameters."""

    name: str
    params: dict[str, float | int | bool | str]


@dataclass(frozen=True)
class WinRate:
    """Wins out of resolved outcomes for one signal type."""

    wins: int
    total: int

    @property
    def rate(self) -> float:
        return self.wins / self.total if self.total else math.nan


@dataclass(frozen=True)
class IcState:
    """Information coefficient of one signal type over `samples` outcomes."""

    ic: float
    samples: int
    updated_at: float


@dataclass(frozen=True)
class Indicators:
    """The latest indicator values of one symbol and timeframe, computed at bar `ts`."""

    ts: pd.Timestamp
    values: dict[str, float]


@dataclass(frozen=True)
class BarSnapshot:
    """The cached bars and their latest indicators, read in one round trip."""

    bars: pd.DataFrame
    indicators: Indicators | None = field(default=None)


# ---- the tier -------------------------------------------------------------------------------


class Cache:
    """Typed accessors over the cache Redis. Writes validate first; bad input writes nothing.

    Errors are the workbench's: `ValidationError` for bad input, `DependencyUnavailable` when the
    server cannot be reached, `StoreError` when it refuses a command.

    `near_client` (`make_redis(url, role="cache", tracking=True)`, same server as `redis`) turns
    on the near cache for bar reads when `settings.cache_near_entries` > 0; without it every read
    is a round trip, as before.
    """

    def __init__(
        self,
        redis: redis.Redis,
        *,
        keys: Keys,
        settings: Settings,
        near_client: redis.Redis | None = None,
    ) -> None:
        if redis.get_connection_kwargs().get("decode_responses"):
            raise ConfigError(
                "the cache needs a client with decode_responses=False (bars are binary)"
            )
        self.redis = redis
        self.keys = keys
        self.settings = settings
        self._limits = settings.limits
        self._write_bars = redis.register_script(_WRITE_BARS)
        entries = settings.cache_near_entries
        self.near: NearCache | None = (
            NearCache(near_client, entries) if near_client is not None and entries > 0 else None
        )
        # Near caches may be on in other processes too (same settings): fence bar writes for them.
        self._fence = entries > 0

    # ---- prices -------------------------------------------------------------------------

    @_redis_errors_translated
    def set_price(self, symbol: str, price: float, *, ts: datetime | float | None = None) -> None:
        """Store the latest price of `symbol`; it expires after the profile's price TTL."""
        key = self.keys.price(symbol)
        value = _number("price", price, positive=True)
        when = _epoch(ts)
        pipe = self.redis.pipeline(transaction=True)
        fields: dict[EncodableT, EncodableT] = {"price": repr(value), "ts": repr(when)}
        pipe.hset(key, mapping=fields)
        pipe.expire(key, self._limits.price_ttl_seconds)
        pipe.execute()

    @_redis_errors_translated
    def get_price(self, symbol: str) -> Price | None:
        """The latest price of `symbol`, or None when unknown or expired."""
        symbol = validate_symbol(symbol)
        raw = self.redis.hmget(self.keys.price(symbol), ["price", "ts"])
        return _price(symbol, raw)

    @_redis_errors_translated
    def get_prices(self, symbols: Iterable[str]) -> dict[str, Price]:
        """Latest prices of several symbols in one round trip; unknown ones are left out."""
        wanted = [validate_symbol(s) for s in symbols]
        pipe = self.redis.pipeline(transaction=False)
        for symbol in wanted:
            pipe.hmget(self.keys.price(symbol), ["price", "ts"])
        return _prices(wanted, pipe.execute())

    # ---- account and positions ----------------------------------------------------------

    @_redis_errors_translated
    def set_account(self, *, balance: float, portfolio_value: float) -> None:
        """Replace the account's balance and portfolio value."""
        self.redis.hset(self.keys.account(), mapping=_account_fields(balance, portfolio_value))

    @_redis_errors_translated
    def set_book(
        self,
        positions: Mapping[str, tuple[float, float] | None],
        *,
        balance: float,
        portfolio_value: float,
    ) -> None:
        """`set_position` (symbol -> (quantity, average price)) or `remove_position` (symbol ->
        None, or a quantity of 0) for each of `positions`, and `set_account`, in one MULTI/EXEC:
        a reader sees the book before or after, never a mix (Positions writes it after every
        batch of fills)."""
        held: dict[EncodableT, EncodableT] = {}
        gone: list[str] = []
        for symbol, position in positions.items():
            if position is None or position[0] == 0:
                gone.append(validate_symbol(symbol))
            else:
                quantity, avg_price = position
                entry = _position_entry(symbol, quantity=quantity, avg_price=avg_price)
                held[entry.symbol] = _position_json(entry)
        pipe = self.redis.pipeline(transaction=True)
        if held:
            pipe.hset(self.keys.positions(), mapping=held)
        if gone:
            pipe.hdel(self.keys.positions(), *gone)
        pipe.hset(self.keys.account(), mapping=_account_fields(balance, portfolio_value))
        pipe.execute()

    @_redis_errors_translated
    def get_account(self) -> Account | None:
        return _account(self.redis.hgetall(self.keys.account()))

    @_redis_errors_translated
    def get_book(self, symbols: Iterable[str]) -> AccountBook:
        """The account, the positions and the prices of `symbols` and of every held symbol in
        one round trip (a second only for held symbols outside `symbols`)."""
        wanted = [validate_symbol(s) for s in symbols]
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.keys.account())
        pipe.hgetall(self.keys.positions())
        for symbol in wanted:
            pipe.hmget(self.keys.price(symbol), ["price", "ts"])
        raw_account, raw_positions, *raw_prices = pipe.execute()
        positions = _positions(raw_positions)
        prices = _prices(wanted, raw_prices)
        asked = set(wanted)
        others = [s for s in positions if s not in asked]
        if others:
            prices.update(self.get_prices(others))
        return AccountBook(account=_account(raw_account), positions=positions, prices=prices)

    @_redis_errors_translated
    def set_position(
        self, symbol: str, *, quantity: float, avg_price: float, strategy: str | None = None
    ) -> Position:
        """Open or update the position in `symbol` (quantity != 0; close with `remove_position`)."""
        position = _position_entry(
            symbol, quantity=quantity, avg_price=avg_price, strategy=strategy
        )
        self.redis.hset(self.keys.positions(), position.symbol, _position_json(position))
        return position

    @_redis_errors_translated
    def remove_position(self, symbol: str) -> bool:
        """Forget the position in `symbol`; True when there was one."""
        return bool(self.redis.hdel(self.keys.positions(), validate_symbol(symbol)))

    @_redis_errors_translated
    def get_position(self, symbol: str) -> Position | None:
        symbol = validate_symbol(symbol)
        raw = self.redis.hget(self.keys.positions(), symbol)
        return None if raw is None else _position(symbol, raw)

    @_redis_errors_translated
    def get_positions(self) -> dict[str, Position]:
        return _positions(self.redis.hgetall(self.keys.positions()))

    # ---- signals, policy, trackers ------------------------------------------------------

    @_redis_errors_translated
    def set_hero_signals(self, names: Iterable[str]) -> list[str]:
        """Replace the hero signals list (the signal types the pipeline trades on), in order."""
        checked = [_name("hero signal", n) for n in names]
        if len(set(checked)) != len(checked):
            raise ValidationError("hero signals contain duplicates")
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.keys.hero_signals())
        if checked:
            pipe.rpush(self.keys.hero_signals(), *checked)
        pipe.execute()
        return checked

    @_redis_errors_translated
    def get_hero_signals(self) -> list[str]:
        return [_text(v) for v in self.redis.lrange(self.keys.hero_signals(), 0, -1)]

    @_redis_errors_translated
    def set_signal_weights(self, weights: Mapping[str, float]) -> dict[str, float]:
        """Replace the ensemble weights per signal type (strategy); each must be > 0."""
        checked = {
            _name("signal", k): _number(f"weight of {k}", v, positive=True)
            for k, v in weights.items()
        }
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.keys.tracker("weight"))
        if checked:
            pipe.hset(self.keys.tracker("weight"), mapping={k: repr(v) for k, v in checked.items()})
        pipe.execute()
        return checked

    @_redis_errors_translated
    def get_signal_weights(self) -> dict[str, float]:
        """The ensemble weights per signal type; empty means every signal weighs the same."""
        raw = _text_dict(self.redis.hgetall(self.keys.tracker("weight")))
        return {signal: float(value) for signal, value in sorted(raw.items())}

    @_redis_errors_translated
    def note_signal(
        self, symbol: str, timeframe: Timeframe | str, signal: str, *, ts: float, strength: float
    ) -> dict[str, tuple[float, float]]:
        """Keep `signal`'s latest strength on bar `ts` (epoch s) of `symbol` and return every
        signal's latest (ts, strength) there, in one round trip: the ensemble's inputs, shared
        by every process. They expire with the cached bars."""
        return self.note_signals([(symbol, timeframe, signal, ts, strength)])[0]

    @_redis_errors_translated
    def note_signals(
        self, notes: Sequence[tuple[str, Timeframe | str, str, float, float]]
    ) -> list[dict[str, tuple[float, float]]]:
        """`note_signal` for each (symbol, timeframe, signal, ts, strength) in order, all in one
        round trip: each answer holds the notes before it and its own, as one by one.

        Every raw signal of the Signal Modifier passes here, a batch of them mostly on one
        series: so each series' hash is read once, in the same MULTI/EXEC before the batch's
        notes are written to it (one HSET of the latest note per signal), and each answer is
        that reading with the notes up to it applied, instead of a read of the hash per note."""
        return self._noted(notes, indicators=False)[0]

    @_redis_errors_translated
    def note_signals_reading_indicators(
        self, notes: Sequence[tuple[str, Timeframe | str, str, float, float]]
    ) -> tuple[list[dict[str, tuple[float, float]]], dict[tuple[str, str], Indicators | None]]:
        """`note_signals`, and each noted series' latest indicators (`get_indicators`, by
        symbol and timeframe) read in the same round trip: the Signal Modifier's regime reads
        them for the same batch."""
        return self._noted(notes, indicators=True)

    def _noted(
        self, notes: Sequence[tuple[str, Timeframe | str, str, float, float]], *, indicators: bool
    ) -> tuple[list[dict[str, tuple[float, float]]], dict[tuple[str, str], Indicators | None]]:
        if not notes:
            return [], {}
        series: dict[str, tuple[str, Timeframe, dict[str, tuple[float, float]]]] = {}
        parsed: list[tuple[str, str, tuple[float, float]]] = []
        for given, timeframe, signal, ts, strength in notes:
            tf, symbol = Timeframe.parse(timeframe), validate_symbol(given)
            key = self.keys.tracker(f"latest:{symbol}:{tf.value}")
            value = (_number("ts", ts), _number("strength", strength))
            name = _name("signal", signal)
            series.setdefault(key, (symbol, tf, {}))[2][name] = value
            parsed.append((key, name, value))
        pipe = self.redis.pipeline(transaction=True)
        for key, (symbol, tf, latest) in series.items():
            pipe.hgetall(key)
            pipe.hset(key, mapping={n: json.dumps(list(v)) for n, v in latest.items()})
            pipe.expire(key, self.bar_ttl(tf))
            if indicators:
                pipe.hgetall(self.keys.indicators(symbol, tf))
        replies = pipe.execute()
        step = 4 if indicators else 3
        seen = {
            key: {
                s: (float(v[0]), float(v[1]))
                for s, v in ((s, json.loads(v)) for s, v in _text_dict(raw).items())
            }
            for key, raw in zip(series, replies[0::step], strict=True)
        }
        answers: list[dict[str, tuple[float, float]]] = []
        for key, name, value in parsed:
            now = seen[key]
            now[name] = value
            answers.append(dict(now))
        latest_indicators = (
            {
                (symbol, tf.value): _indicators(raw)
                for (symbol, tf, _), raw in zip(series.values(), replies[3::4], strict=True)
            }
            if indicators
            else {}
        )
        return answers, latest_indicators

    @_redis_errors_translated
    def set_policy_profile(
        self, name: str, params: Mapping[str, float | int | bool | str]
    ) -> PolicyProfile:
        """Replace the active policy profile atomically (readers never see a mix of two)."""
        _name("policy profile", name)  # a label shown as given; only its characters are checked
        fields: dict[EncodableT, EncodableT] = {_PROFILE_NAME_FIELD: name}
        clean: dict[str, float | int | bool | str] = {}
        for param, value in params.items():
            if not isinstance(param, str) or not _PARAM.fullmatch(param):
                raise ValidationError(f"bad policy parameter name {param!r}: use [a-z][a-z0-9_]*")
            if isinstance(value, bool | str | int):
                clean[param] = value
            else:
                clean[param] = _number(param, value)
            fields[param] = json.dumps(clean[param])
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.keys.policy_profile())
        pipe.hset(self.keys.policy_profile(), mapping=fields)
        pipe.execute()
        return PolicyProfile(name=name, params=clean)

    @_redis_errors_translated
    def get_policy_profile(self) -> PolicyProfile | None:
        raw = _text_dict(self.redis.hgetall(self.keys.policy_profile()))
        if not raw:
            return None
        name = raw.pop(_PROFILE_NAME_FIELD, "")
        return PolicyProfile(name=name, params={k: json.loads(v) for k, v in raw.items()})

    @_redis_errors_translated
    def record_outcome(self, signal: str, *, won: bool) -> WinRate:
        """Count one resolved outcome of `signal` in the win-rate tracker (atomic increments)."""
        signal = _name("signal", signal)
        if not isinstance(won, bool):
            raise ValidationError(f"won must be a bool, got {type(won).__name__}")
        key = self.keys.tracker("win_rate")
        pipe = self.redis.pipeline(transaction=True)
        pipe.hincrby(key, f"{signal}:wins", int(won))
        pipe.hincrby(key, f"{signal}:total", 1)
        wins, total = pipe.execute()
        return WinRate(wins=int(wins), total=int(total))

    @_redis_errors_translated
    def set_win_rate(self, signal: str, *, wins: int, total: int) -> WinRate:
        """Replace the win-rate tracker of `signal` by `wins` of `total` (a rolling window the
        caller computed from the records, so writing it again changes nothing)."""
        signal = _name("signal", signal)
        for name, value in (("wins", wins), ("total", total)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValidationError(f"{name} must be an int >= 0, got {value!r}")
        if wins > total:
            raise ValidationError(f"wins {wins} exceed the total {total}")
        key = self.keys.tracker("win_rate")
        self.redis.hset(key, mapping={f"{signal}:wins": wins, f"{signal}:total": total})
        return WinRate(wins=wins, total=total)

    @_redis_errors_translated
    def get_win_rates(self) -> dict[str, WinRate]:
        raw = _text_dict(self.redis.hgetall(self.keys.tracker("win_rate")))
        counts: dict[str, dict[str, int]] = {}
        for fieldname, value in raw.items():
            signal, _, kind = fieldname.rpartition(":")
            counts.setdefault(signal, {})[kind] = int(value)
        return {
            s: WinRate(wins=c.get("wins", 0), total=c.get("total", 0))
            for s, c in sorted(counts.items())
        }

    @_redis_errors_translated
    def set_ic(self, signal: str, *, ic: float, samples: int) -> IcState:
        """Store the information coefficient of `signal` (in [-1, 1]) over `samples` outcomes."""
        signal = _name("signal", signal)
        value = _number("ic", ic)
        if not -1.0 <= value <= 1.0:
            raise ValidationError(f"ic must be in [-1, 1], got {value}")
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
            raise ValidationError(f"samples must be an int >= 0, got {samples!r}")
        state = IcState(ic=value, samples=samples, updated_at=time.time())
        payload = {"ic": state.ic, "samples": state.samples, "updated_at": state.updated_at}
        self.redis.hset(self.keys.tracker("ic"), signal, json.dumps(payload))
        return state

    @_redis_errors_translated
    def get_ics(self) -> dict[str, IcState]:
        raw = _text_dict(self.redis.hgetall(self.keys.tracker("ic")))
        out: dict[str, IcState] = {}
        for signal, value in sorted(raw.items()):
            data = json.loads(value)
            out[signal] = IcState(
                ic=float(data["ic"]), samples=int(data["samples"]), updated_at=data["updated_at"]
            )
        return out

    # ---- watchlist and ranked candidates ------------------------------------------------

    @_redis_errors_translated
    def watch(self, *symbols: str) -> int:
        """Add symbols to the watchlist (ordered by first added); returns how many were new."""
        checked = [validate_symbol(s) for s in symbols]
        if not checked:
            return 0
        # Score: microseconds since the epoch, +1 per position so one call keeps its own order.
        now_us = time.time_ns() // 1000
        order = {symbol: now_us + i for i, symbol in enumerate(dict.fromkeys(checked))}
        added = self.redis.zadd(self.keys.watchlist(), order, nx=True)
        return int(added or 0)

    @_redis_errors_translated
    def unwatch(self, *symbols: str) -> int:
        checked = [validate_symbol(s) for s in symbols]
        return int(self.redis.zrem(self.keys.watchlist(), *checked)) if checked else 0

    @_redis_errors_translated
    def get_watchlist(self) -> list[str]:
        members: Any = self.redis.zrange(self.keys.watchlist(), 0, -1)
        return [_text(v) for v in members]

    @_redis_errors_translated
    def set_candidates(self, scores: Mapping[str, float]) -> int:
        """Replace the ranked candidates (symbol -> score, higher ranks first) atomically."""
        checked = {validate_symbol(s): _number(f"score of {s}", v) for s, v in scores.items()}
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.keys.candidates())
        if checked:
            pipe.zadd(self.keys.candidates(), checked)
        pipe.execute()
        return len(checked)

    @_redis_errors_translated
    def get_candidates(self, top: int | None = None) -> list[tuple[str, float]]:
        """Candidates best first, with their scores; `top` limits how many."""
        end = -1 if top is None else top - 1
        if top is not None and top <= 0:
            return []
        rows: Any = self.redis.zrange(self.keys.candidates(), 0, end, desc=True, withscores=True)
        return [(_text(member), float(score)) for member, score in rows]

    # ---- bars and indicators ------------------------------------------------------------

    def bar_ttl(self, timeframe: Timeframe | str) -> int:
        """Seconds a cached bar block (and its indicators) lives after its last write."""
        return self._limits.bar_ttl_seconds[Timeframe.parse(timeframe).value]

    @_redis_errors_translated
    def write_bars(self, frame: pd.DataFrame) -> int:
        """Merge a bar frame (any symbols and timeframes) into the cache; returns rows given.

        The frame goes through `validate_bars` first; per (symbol, timeframe) only the latest N
        (`settings.limits.cache_bars`) are kept. One pipelined Lua call per group.
        """
        bars = validate_bars(frame)
        if bars.empty:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        written: list[str] = []
        for (symbol, timeframe), group in bars.groupby(["symbol", "timeframe"], sort=False):
            self._call_write(
                pipe,
                symbol=str(symbol),
                timeframe=str(timeframe),
                records=_pack(group),
                indicators_ts=None,
                indicators=None,
            )
            written.append(self.keys.bars(str(symbol), str(timeframe)))
        pipe.execute()
        self._bars_written(written)
        return len(bars)

    @_redis_errors_translated
    def append_bar(
        self,
        symbol: str,
        timeframe: Timeframe | str,
        bar: Mapping[str, Any],
        *,
        indicators: Mapping[str, float] | None = None,
    ) -> int:
        """Add (or replace, same `ts`) one bar and, atomically with it, the latest indicators.

        `bar` has `ts`, open, high, low, close, volume and optionally vwap, trade_count. Returns
        the number of bars now cached for the symbol and timeframe.
        """
        checked = validate_bar(symbol, timeframe, bar)
        values = _indicator_values(indicators) if indicators is not None else None
        record = np.zeros(1, dtype=BAR_RECORD)
        ts = checked["ts"].value // _NS_PER_S
        record["ts"] = ts
        for col in _FLOAT_COLUMNS:
            record[col] = checked[col]
        record["trade_count"] = -1 if checked["trade_count"] is None else checked["trade_count"]
        kept, _ = self._call_write(
            self.redis,
            symbol=checked["symbol"],
            timeframe=checked["timeframe"],
            records=record.tobytes(),
            indicators_ts=ts,
            indicators=values,
        )
        self._bars_written([self.keys.bars(checked["symbol"], checked["timeframe"])])
        return int(kept)

    @_redis_errors_translated
    def set_indicators(
        self,
        symbol: str,
        timeframe: Timeframe | str,
        values: Mapping[str, float],
        *,
        ts: datetime | pd.Timestamp,
    ) -> bool:
        """Replace the latest indicators computed at bar `ts`; False if newer ones are stored."""
        tf = Timeframe.parse(timeframe)
        validate_symbol(symbol)
        checked = _indicator_values(values)
        stamp = _timestamp(ts)
        seconds = int(stamp.value // _NS_PER_S)
        _, wrote = self._call_write(
            self.redis,
            symbol=symbol,
            timeframe=tf.value,
            records=b"",
            indicators_ts=seconds,
            indicators=checked,
        )
        return bool(wrote)

    @_redis_errors_translated
    def get_bars(
        self, symbol: str, timeframe: Timeframe | str, limit: int | None = None
    ) -> pd.DataFrame:
        """The cached bars, oldest first, as a bar frame (`tradeos_lab.bars`); empty on a miss.

        With `limit`, only the latest `limit` bars. Through the near cache the whole block is
        held and the tail cut from it in memory; without it, only the tail is read (GETRANGE).
        """
        tf = Timeframe.parse(timeframe)
        key = self.keys.bars(symbol, tf)
        size = BAR_RECORD.itemsize
        raw: Any
        if limit is not None and limit <= 0:
            return empty_bars()
        if self.near is not None:
            raw = self.near.get(key)
            # A block of another layout stays whole, so `_frame` reads it as a miss.
            if raw and limit is not None and len(raw) % size == 0:
                raw = raw[-limit * size :]
        elif limit is None:
            raw = self.redis.get(key)
        else:
            raw = self.redis.getrange(key, -limit * size, -1)
        return _frame(raw, symbol, tf.value)

    @_redis_errors_translated
    def get_indicators(self, symbol: str, timeframe: Timeframe | str) -> Indicators | None:
        return _indicators(self.redis.hgetall(self.keys.indicators(symbol, timeframe)))

    @_redis_errors_translated
    def get_snapshot(self, symbol: str, timeframe: Timeframe | str) -> BarSnapshot:
        """Bars and latest indicators of one symbol and timeframe in one round trip.

        Never through the near cache: the indicators need the round trip anyway, and both are
        read in that one server pass, so they belong to the same write.
        """
        tf = Timeframe.parse(timeframe)
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(self.keys.bars(symbol, tf))
        pipe.hgetall(self.keys.indicators(symbol, tf))
        raw, indicators = pipe.execute()
        return BarSnapshot(bars=_frame(raw, symbol, tf.value), indicators=_indicators(indicators))

    def _bars_written(self, keys: list[str]) -> None:
        """After bar blocks changed: drop them from this process's near cache, and fence.

        Redis answers a writer in the same event-loop pass in which it pushes the invalidations
        to tracking readers, and often writes the writer's reply first: a reader told "written"
        at once could still find its socket empty and serve the old block (1 write in 50 to 1 in
        400 in loops on this machine). Any later command of the writer is handled in a later
        pass, after every push of the write went out, so its reply means each near cache already
        has its invalidation (on a unix socket or loopback, where a sent message is at once in
        the receiver's buffer). Costs one PING round trip per write call while near caches are
        on (`append_bar` p50 0.34 ms fenced, 0.28 ms unfenced, `benchmarks/bench_cache_bars.py`);
        `tests/tiers/test_near_cache.py` fails within a few hundred turns without it.
        """
        if self.near is not None:
            self.near.discard(*keys)
        if self._fence:
            self.redis.ping()

    def _call_write(
        self,
        client: redis.Redis | redis.client.Pipeline,
        *,
        symbol: str,
        timeframe: str,
        records: bytes,
        indicators_ts: int | None,
        indicators: dict[str, float] | None,
    ) -> Any:
        pairs: list[str] = []
        for name, value in (indicators or {}).items():
            pairs += [name, repr(value)]
        args: list[str | int | bytes] = [
            BAR_RECORD.itemsize,
            self._limits.cache_bars,
            self.bar_ttl(timeframe),
            records,
            "" if indicators_ts is None else indicators_ts,
            *pairs,
        ]
        keys = [self.keys.bars(symbol, timeframe), self.keys.indicators(symbol, timeframe)]
        return self._write_bars(keys=keys, args=args, client=client)


# ---- packing --------------------------------------------------------------------------------


def _pack(bars: pd.DataFrame) -> bytes:
    """Records of one validated (symbol, timeframe) group, sorted by ts."""
    bars = bars.sort_values("ts")
    out = np.empty(len(bars), dtype=BAR_RECORD)
    out["ts"] = bars["ts"].to_numpy(dtype="datetime64[ns]").astype("int64") // _NS_PER_S
    for col in _FLOAT_COLUMNS:
        out[col] = bars[col].to_numpy(dtype="float64", na_value=np.nan)
    out["trade_count"] = bars["trade_count"].to_numpy(dtype="int64", na_value=-1)
    return out.tobytes()


@lru_cache(maxsize=4096)
def _constant_strings(value: str, n: int) -> Any:
    """A bar-frame string array of `n` copies of `value`; callers take `.copy()` (cheap,
    immutable data)."""
    return bar_strings([value] * n)


def _optional(module: str, name: str) -> Any:
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


# Frame building is most of a near-cache hit. With pandas >= 3.0 the frame is made by
# `pandas.api.internals.create_dataframe_from_blocks`, pandas's public constructor for libraries
# that hold columns as ready-made blocks: the six float columns go in as ONE (6, n) block copied
# out of the records in one step, and pandas neither checks nor consolidates columns. Kept because
# the p99 target needs it (the tail of a read grows with its CPU time: a longer read is preempted
# more often on a busy machine). `benchmarks/bench_bar_tiers.py`, 2 cores at load average 5-6,
# near-cache reads timed side by side in one run, two runs, p99 against PostgreSQL's (target
# >= 10x): blocks 9.5x and 10.2x (p50 0.044 ms), `pd.DataFrame(dict)` 4.4x and 4.2x (p50 0.28 ms).
# Older pandas take `pd.DataFrame(dict)`; a test checks both roads build the same frame.
_FROM_BLOCKS: Callable[..., pd.DataFrame] | None = _optional(
    "pandas.api.internals", "create_dataframe_from_blocks"
)
_COLUMN_INDEX: Final = pd.Index(BAR_COLUMNS)


def _first_float_word() -> int:
    """Where the float columns start in a record, in 8-byte words; they must sit side by side,
    as little-endian float64 in `_FLOAT_COLUMNS` order, for the one-step copy in `_frame`."""
    fields: Mapping[str, Any] = BAR_RECORD.fields or {}
    first = int(fields[_FLOAT_COLUMNS[0]][1]) // 8
    for i, col in enumerate(_FLOAT_COLUMNS):
        if fields[col][0] != np.dtype("<f8") or fields[col][1] != 8 * (first + i):
            raise RuntimeError(f"BAR_RECORD: {col} is not the float64 after the one before it")
    return first


_WORDS: Final = BAR_RECORD.itemsize // 8
_FIRST_FLOAT: Final = _first_float_word()
_PLACEMENTS: Final = tuple(
    np.array([BAR_COLUMNS.index(c) for c in group], dtype=np.intp)
    for group in (("symbol",), ("timeframe",), ("ts",), _FLOAT_COLUMNS, ("trade_count",))
)


def _utc_times(nanoseconds: np.ndarray) -> Any:
    """A `datetime64[ns, UTC]` array over int64 nanoseconds since the epoch.

    Public pandas. The private `DatetimeArray._simple_new` saved ~30 us per read (p50 0.075 ->
    0.044 ms), but the p99 it bought was within run-to-run noise (bench_bar_tiers side by side:
    9.2x and 8.9x PostgreSQL's p99 public, 9.5x and 10.2x private)."""
    return pd.DatetimeIndex(nanoseconds.view("M8[ns]")).tz_localize("UTC").array


def _frame(raw: object, symbol: str, timeframe: str) -> pd.DataFrame:
    """Turn a packed block into a bar frame with the dtypes of `tradeos_lab.bars.empty_bars`."""
    if not raw:
        return empty_bars()
    if not isinstance(raw, bytes) or len(raw) % BAR_RECORD.itemsize:
        # A block in another layout (or a torn GETRANGE) is treated as a miss, never mis-read.
        return empty_bars()
    records = np.frombuffer(raw, dtype=BAR_RECORD)
    n = len(records)
    counts = records["trade_count"].astype("<i8")
    # (6, n), C order: one writable copy, each column contiguous.
    floats = (
        np.frombuffer(raw, dtype="<f8")
        .reshape(n, _WORDS)[:, _FIRST_FLOAT : _FIRST_FLOAT + len(_FLOAT_COLUMNS)]
        .T.copy()
    )
    arrays: list[Any] = [
        _constant_strings(symbol, n).copy(),
        _constant_strings(timeframe, n).copy(),
        _utc_times(records["ts"].astype("<i8") * _NS_PER_S),
        floats,
        pd.arrays.IntegerArray(counts, counts < 0),
    ]
    # A view of the shared column index: renaming one frame's columns leaves the others alone.
    columns = _COLUMN_INDEX.view()
    if _FROM_BLOCKS is not None:
        try:
            return _FROM_BLOCKS(
                list(zip(arrays, _PLACEMENTS, strict=True)), index=pd.RangeIndex(n), columns=columns
            )
        except (TypeError, AttributeError):  # a pandas that changed it: take the public road
            pass
    by_name = dict(zip(BAR_COLUMNS[:3], arrays[:3], strict=True))
    by_name.update(zip(_FLOAT_COLUMNS, floats, strict=True))
    by_name["trade_count"] = arrays[4]
    return pd.DataFrame(by_name, columns=columns, copy=False)


# ---- validation and decoding helpers --------------------------------------------------------


def _number(name: str, value: object, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValidationError(f"{name} must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise ValidationError(f"{name} must be finite, got {number}")
    if positive and number <= 0:
        raise ValidationError(f"{name} must be > 0, got {number}")
    return number


def _name(what: str, value: object) -> str:
    return canonical_name(value, f"{what} name")


def _indicator_values(values: Mapping[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, value in values.items():
        if not isinstance(name, str) or not _INDICATOR.fullmatch(name):
            raise ValidationError(f"bad indicator name {name!r}: [A-Za-z][A-Za-z0-9_.]*")
        out[name] = _number(f"indicator {name}", value)
    return out


def _epoch(ts: datetime | float | None) -> float:
    if ts is None:
        return time.time()
    if isinstance(ts, datetime):
        return _timestamp(ts).timestamp()
    return _number("ts", ts, positive=True)


def _timestamp(ts: datetime | pd.Timestamp) -> pd.Timestamp:
    if not isinstance(ts, datetime):
        raise ValidationError(f"ts must be a datetime, got {type(ts).__name__}")
    stamp = pd.Timestamp(ts)
    if stamp.tzinfo is None:
        raise ValidationError("ts must be timezone-aware (UTC)")
    return stamp.tz_convert("UTC")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _text_dict(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}


def _price(symbol: str, raw: list[Any]) -> Price | None:
    price, ts = raw
    if price is None:
        return None
    return Price(symbol=symbol, price=float(price), ts=float(ts) if ts is not None else math.nan)


def _prices(symbols: Sequence[str], raws: Sequence[list[Any]]) -> dict[str, Price]:
    """The prices of `symbols` from their HMGET replies; unknown ones are left out."""
    found = (_price(symbol, raw) for symbol, raw in zip(symbols, raws, strict=True))
    return {price.symbol: price for price in found if price is not None}


def _account(raw: Mapping[Any, Any]) -> Account | None:
    values = _text_dict(raw)
    if not values:
        return None
    return Account(
        balance=float(values["balance"]),
        portfolio_value=float(values["portfolio_value"]),
        updated_at=float(values.get("updated_at", "0")),
    )


def _positions(raw: Mapping[Any, Any]) -> dict[str, Position]:
    """The positions hash as read (HGETALL), by symbol in order."""
    return {symbol: _position(symbol, value) for symbol, value in sorted(_text_dict(raw).items())}


def _position(symbol: str, raw: bytes | str) -> Position:
    data = json.loads(raw)
    return Position(
        symbol=symbol,
        quantity=float(data["quantity"]),
        avg_price=float(data["avg_price"]),
        strategy=data.get("strategy"),
        updated_at=float(data.get("updated_at", 0.0)),
    )


def _indicators(raw: Mapping[Any, Any]) -> Indicators | None:
    values = _text_dict(raw)
    ts = values.pop("_ts", None)
    if ts is None:
        return None
    stamp = pd.Timestamp(int(ts) * _NS_PER_S, tz="UTC")
    return Indicators(ts=stamp, values={k: float(v) for k, v in sorted(values.items())})
