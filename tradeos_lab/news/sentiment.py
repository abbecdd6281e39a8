"""Recent sentiment per ticker in a decaying window: the one formula the news strategy reads in a
backtest (over recorded scores) and live (over the scores the sentiment scorer caches).

At time t, the items of a ticker scored at t_i <= t within `WINDOW_HALF_LIVES` half-lives count
with weight w_i = 2^-((t - t_i) / half_life), and

    sentiment(t) = sum(w_i * score_i) / max(1, sum(w_i))

so a single fresh article counts fully, an old one fades towards 0 (no news is neutral), and a
burst of articles is their weighted mean; the value stays in [-1, 1].
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd
import redis

from tradeos_lab.bars import utc_timestamp
from tradeos_lab.errors import DependencyUnavailable, ValidationError
from tradeos_lab.symbols import Timeframe, validate_symbol

if TYPE_CHECKING:
    from tradeos_lab.keys import Keys
    from tradeos_lab.stores.records import RecordsStore

#: Items older than this many half-lives weigh less than 2^-10 (0.1%) and leave the window.
WINDOW_HALF_LIVES: Final = 10
_NS: Final = 1_000_000_000


def _check_half_life(half_life_s: float) -> float:
    if not (isinstance(half_life_s, int | float) and 0 < half_life_s < math.inf):
        raise ValidationError(f"half_life_s must be a positive number, got {half_life_s!r}")
    return float(half_life_s)


def decayed_sentiment(
    item_ns: Sequence[int] | npt.NDArray[np.int64],
    scores: Sequence[float] | npt.NDArray[np.float64],
    at_ns: Sequence[int] | npt.NDArray[np.int64],
    half_life_s: float,
) -> npt.NDArray[np.float64]:
    """The sentiment (see the module docstring) at each time of `at_ns` (epoch ns) from items
    scored at `item_ns` with `scores`; 0.0 where the window holds no item."""
    half_ns = _check_half_life(half_life_s) * _NS
    times = np.asarray(item_ns, dtype=np.int64)
    values = np.asarray(scores, dtype=np.float64)
    if times.shape != values.shape:
        raise ValidationError(f"{len(times)} item times for {len(values)} scores")
    if not np.isfinite(values).all() or (np.abs(values) > 1).any():
        raise ValidationError("sentiment scores must be finite numbers in [-1, 1]")
    order = np.lexsort((values, times))  # one summation order for the same items, always
    times, values = times[order], values[order]
    at = np.asarray(at_ns, dtype=np.int64)
    window = int(WINDOW_HALF_LIVES * half_ns)
    lows = np.searchsorted(times, at - window, side="left")
    highs = np.searchsorted(times, at, side="right")
    out = np.zeros(len(at), dtype=np.float64)
    for i, (lo, hi) in enumerate(zip(lows, highs, strict=True)):
        if hi > lo:
            weights = np.exp2(-(at[i] - times[lo:hi]) / half_ns)
            out[i] = float(weights @ values[lo:hi]) / max(1.0, float(weights.sum()))
    return out


def sentiment_at_bars(
    bars: pd.DataFrame,
    scores: pd.DataFrame,
    *,
    half_life_s: float,
    timeframe: Timeframe | str,
) -> pd.Series:
    """The sentiment at each bar's close (open time + timeframe), aligned with `bars` (its
    index): what the news strategy's batch form reads. `bars` has `ts` (and `symbol` when it
    holds several); `scores` has `symbol`, `ts`, `score` (e.g. `recorded_scores(...)`)."""
    step_ns = Timeframe.parse(timeframe).seconds * _NS
    missing = [c for c in ("symbol", "ts", "score") if c not in scores.columns]
    if missing:
        raise ValidationError(f"scores are missing columns {missing}")
    if "ts" not in bars.columns:
        raise ValidationError("bars are missing the ts column")
    score_ns = _epoch_ns(scores["ts"])
    out = pd.Series(0.0, index=bars.index, name="sentiment")
    groups: Iterable[tuple[Any, pd.DataFrame]] = (
        bars.groupby("symbol", sort=False, observed=True)
        if "symbol" in bars.columns
        else [(None, bars)]
    )
    for symbol, group in groups:
        if symbol is None:
            if scores["symbol"].nunique() > 1:
                raise ValidationError("bars without a symbol column need one symbol's scores")
            mine = np.ones(len(scores), dtype=bool)
        else:
            mine = (scores["symbol"] == validate_symbol(symbol)).to_numpy()
        at = _epoch_ns(group["ts"]) + step_ns
        out.loc[group.index] = decayed_sentiment(
            score_ns[mine], scores["score"].to_numpy(dtype=np.float64)[mine], at, half_life_s
        )
    return out


def _epoch_ns(ts: pd.Series) -> npt.NDArray[np.int64]:
    return np.asarray(pd.DatetimeIndex(pd.to_datetime(ts, utc=True)).as_unit("ns").asi8)


def recorded_scores(
    records: RecordsStore,
    symbols: Iterable[str] | None = None,
    start: datetime | pd.Timestamp | None = None,
    end: datetime | pd.Timestamp | None = None,
) -> pd.DataFrame:
    """The scored news the records hold (`symbol`, `ts`, `score`, `article_id`, `scorer`), in
    time order: the input of a backtest on recorded news."""
    rows = records.news_scores(symbols=symbols, start=start, end=end)
    frame = pd.DataFrame(
        [
            {
                "symbol": r.symbol,
                "ts": r.ts,
                "score": r.score,
                "article_id": r.article_id,
                "scorer": r.scorer,
            }
            for r in rows
        ],
        columns=["symbol", "ts", "score", "article_id", "scorer"],
    )
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame


class SentimentCache:
    """Each ticker's recent scores in the cache tier (one hash per ticker: article id -> time
    and score), written by the sentiment scorer and read by the news strategy live. Writing an
    article twice changes nothing, so a re-handled message never counts twice."""

    def __init__(self, client: redis.Redis, *, keys: Keys, retention_s: int) -> None:
        if retention_s < 1:
            raise ValidationError(f"retention_s must be >= 1, got {retention_s}")
        self.redis = client
        self.keys = keys
        self.retention_s = retention_s

    def add(self, symbol: str, article_id: str, ts: datetime, score: float) -> None:
        """Keep one scored item; items older than the retention before it are dropped."""
        if not (math.isfinite(score) and -1 <= score <= 1):
            raise ValidationError(f"a sentiment score is in [-1, 1], got {score!r}")
        key = self.keys.news_sentiment(symbol)
        stamp = utc_timestamp(ts, "ts").value
        try:
            items = self._items(key)
            items[article_id] = (stamp, score)
            newest = max(t for t, _ in items.values())
            stale = [a for a, (t, _) in items.items() if t < newest - self.retention_s * _NS]
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, article_id, f"{stamp}:{score!r}")
                if stale:
                    pipe.hdel(key, *stale)
                pipe.expire(key, self.retention_s)
                pipe.execute()
        except redis.RedisError as e:
            raise DependencyUnavailable(f"cache Redis: {type(e).__name__}") from e

    def items(self, symbol: str) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """(epoch ns, score) arrays of the ticker's cached items."""
        try:
            items = self._items(self.keys.news_sentiment(symbol))
        except redis.RedisError as e:
            raise DependencyUnavailable(f"cache Redis: {type(e).__name__}") from e
        pairs = list(items.values())
        return (
            np.array([t for t, _ in pairs], dtype=np.int64),
            np.array([s for _, s in pairs], dtype=np.float64),
        )

    def at(self, symbol: str, when: datetime | pd.Timestamp, *, half_life_s: float) -> float:
        """The ticker's sentiment at `when` from the cached items (0.0 with none)."""
        times, scores = self.items(symbol)
        return float(
            decayed_sentiment(times, scores, [utc_timestamp(when, "when").value], half_life_s)[0]
        )

    def _items(self, key: str) -> dict[str, tuple[int, float]]:
        out: dict[str, tuple[int, float]] = {}
        for field, value in self.redis.hgetall(key).items():
            article = field.decode() if isinstance(field, bytes) else str(field)
            text = value.decode() if isinstance(value, bytes) else str(value)
            stamp, _, score = text.partition(":")
            try:
                parsed = (int(stamp), float(score))
            except ValueError:
                continue  # a corrupt entry is skipped, never trusted
            if math.isfinite(parsed[1]) and -1 <= parsed[1] <= 1:
                out[article] = parsed
        return out
