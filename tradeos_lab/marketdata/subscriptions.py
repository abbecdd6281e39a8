"""Which symbols and timeframes are needed, and by whom, so only those are fetched.

Every subscriber (an algorithm, a dashboard, a notebook) holds references to (symbol, timeframe)
pairs; a pair is needed while any subscriber holds at least one. Ingestion and the backfill read
the needed pairs instead of fetching everything, which is what keeps provider calls down.

Stored in the cache tier as ONE hash (`Keys.subscriptions()`), field `SYMBOL|TIMEFRAME|SUBSCRIBER`,
value = that subscriber's reference count. One key means one read lists everything, increments
are atomic HINCRBYs, and a decrement that reaches zero deletes its field in the same Lua call, so
a count is never negative and a released pair leaves nothing behind. The hash has no TTL: it is
read on every ingestion cycle, so LRU eviction reaches it last; a subscriber that dies without
unsubscribing is released with `unsubscribe_all`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import pandas as pd
import redis

from tradeos_lab.errors import DependencyUnavailable
from tradeos_lab.keys import Keys
from tradeos_lab.symbols import Timeframe, canonical_name, validate_symbol, validate_symbols

_SEP: Final = "|"

# Decrement fields by the given amounts; a field reaching <= 0 is deleted. ARGV: field, n, ...
_RELEASE: Final = """
local out = {}
for i = 1, #ARGV, 2 do
  local have = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0')
  local n = tonumber(ARGV[i + 1])
  if n < 0 or have <= n then
    if have > 0 then redis.call('HDEL', KEYS[1], ARGV[i]) end
    out[#out + 1] = 0
  else
    out[#out + 1] = redis.call('HINCRBY', KEYS[1], ARGV[i], -n)
  end
end
return out
"""

# Delete every field of one subscriber. ARGV: the field suffix '|SUBSCRIBER'.
_RELEASE_ALL: Final = """
local fields = redis.call('HKEYS', KEYS[1])
local gone = 0
local suffix = ARGV[1]
for _, f in ipairs(fields) do
  if string.sub(f, -#suffix) == suffix then
    redis.call('HDEL', KEYS[1], f); gone = gone + 1
  end
end
return gone
"""


class SubscriptionManager:
    """Reference-counted (symbol, timeframe) subscriptions kept in the cache Redis."""

    def __init__(self, redis: redis.Redis, *, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self.key = keys.subscriptions()
        self._release = redis.register_script(_RELEASE)
        self._release_all = redis.register_script(_RELEASE_ALL)

    # ---- writes -----------------------------------------------------------------------------

    def subscribe(
        self, subscriber: str, symbols: str | Iterable[str], timeframe: Timeframe | str = "1m"
    ) -> dict[str, int]:
        """Add one reference per symbol for `subscriber`; returns its count per symbol.

        Everything is validated first, then applied in one MULTI, so bad input changes nothing.
        """
        fields = self._fields(subscriber, symbols, timeframe)
        pipe = self.redis.pipeline(transaction=True)
        for field in fields.values():
            pipe.hincrby(self.key, field, 1)
        counts = self._run(pipe)
        return {s: int(c) for s, c in zip(fields, counts, strict=True)}

    def unsubscribe(
        self,
        subscriber: str,
        symbols: str | Iterable[str],
        timeframe: Timeframe | str = "1m",
        *,
        all_refs: bool = False,
    ) -> dict[str, int]:
        """Drop one reference per symbol (every reference with `all_refs`); returns what is left.

        Releasing a pair the subscriber does not hold is a no-op (count 0), never negative.
        """
        fields = self._fields(subscriber, symbols, timeframe)
        if not fields:
            return {}
        args: list[Any] = []
        for field in fields.values():
            args += [field, -1 if all_refs else 1]
        left = self._call(self._release, args)
        return {s: int(c) for s, c in zip(fields, left, strict=True)}

    def unsubscribe_all(self, subscriber: str) -> int:
        """Release everything `subscriber` holds (it stopped or crashed); returns pairs released."""
        return int(self._call(self._release_all, [_SEP + _subscriber(subscriber)]))

    # ---- reads ------------------------------------------------------------------------------

    def subscriptions(self, subscriber: str | None = None) -> pd.DataFrame:
        """One row per (symbol, timeframe, subscriber) with its reference count `refs`."""
        wanted = None if subscriber is None else _subscriber(subscriber)
        rows = [r for r in self._rows() if wanted is None or r[2] == wanted]
        frame = pd.DataFrame(rows, columns=["symbol", "timeframe", "subscriber", "refs"])
        return _typed(frame.sort_values(["symbol", "timeframe", "subscriber"]))

    def needed(self, timeframe: Timeframe | str | None = None) -> pd.DataFrame:
        """The pairs someone needs: symbol, timeframe, subscribers (count), refs (total)."""
        frame = self.subscriptions()
        if timeframe is not None:
            frame = frame[frame["timeframe"] == Timeframe.parse(timeframe).value]
        grouped = frame.groupby(["symbol", "timeframe"], as_index=False, sort=True).agg(
            subscribers=("subscriber", "nunique"), refs=("refs", "sum")
        )
        grouped["subscribers"] = grouped["subscribers"].astype("int64")
        grouped["refs"] = grouped["refs"].astype("int64")
        return grouped.reset_index(drop=True)

    def symbols(self, timeframe: Timeframe | str) -> list[str]:
        """Needed symbols of one timeframe, sorted (what ingestion and the backfill fetch)."""
        tf = Timeframe.parse(timeframe).value
        return sorted({s for s, t, _, _ in self._rows() if t == tf})

    def is_needed(self, symbol: str, timeframe: Timeframe | str) -> bool:
        symbol, tf = validate_symbol(symbol), Timeframe.parse(timeframe).value
        return any(s == symbol and t == tf for s, t, _, _ in self._rows())

    def refs(self, subscriber: str, symbol: str, timeframe: Timeframe | str = "1m") -> int:
        """How many references `subscriber` holds on one pair."""
        field = self._fields(subscriber, symbol, timeframe)[validate_symbol(symbol)]
        try:
            raw = self.redis.hget(self.key, field)
        except redis.RedisError as e:
            raise DependencyUnavailable(f"cache Redis: {type(e).__name__}: {e}") from e
        return int(raw or 0)

    # ---- helpers ----------------------------------------------------------------------------

    def _fields(
        self, subscriber: str, symbols: str | Iterable[str], timeframe: Timeframe | str
    ) -> dict[str, str]:
        who = _subscriber(subscriber)
        tf = Timeframe.parse(timeframe).value
        return {s: _SEP.join((s, tf, who)) for s in validate_symbols(symbols)}

    def _rows(self) -> list[tuple[str, str, str, int]]:
        try:
            raw = self.redis.hgetall(self.key)
        except redis.RedisError as e:
            raise DependencyUnavailable(f"cache Redis: {type(e).__name__}: {e}") from e
        rows = []
        for field, count in raw.items():
            text = field.decode() if isinstance(field, bytes) else str(field)
            parts = text.split(_SEP)
            if len(parts) == 3 and int(count) > 0:
                rows.append((parts[0], parts[1], parts[2], int(count)))
        return rows

    @staticmethod
    def _run(pipe: redis.client.Pipeline) -> list[Any]:
        try:
            return pipe.execute()
        except redis.RedisError as e:
            raise DependencyUnavailable(f"cache Redis: {type(e).__name__}: {e}") from e

    def _call(self, script: Any, args: list[Any]) -> Any:
        try:
            return script(keys=[self.key], args=args)
        except redis.RedisError as e:
            raise DependencyUnavailable(f"cache Redis: {type(e).__name__}: {e}") from e


def _subscriber(value: object) -> str:
    return canonical_name(value, "subscriber name")


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.reset_index(drop=True)
    for col in ("symbol", "timeframe", "subscriber"):
        out[col] = out[col].astype("string")
    out["refs"] = out["refs"].astype("int64")
    return out
