"""News sentiment with price confirmation: trade a ticker's recent news when the price agrees."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, Self

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from tradeos_lab.indicators import SMA, Indicator
from tradeos_lab.strategies.base import Decision, FloatArray, Strategy, StrategyParams, Values
from tradeos_lab.strategies.registry import register
from tradeos_lab.strategies.rules import choose
from tradeos_lab.symbols import Timeframe

if TYPE_CHECKING:
    from tradeos_lab.contracts import Bar
    from tradeos_lab.lab import Lab
    from tradeos_lab.news.sentiment import SentimentCache

#: The extra input the rule reads: the ticker's decayed news sentiment at the bar's close.
SENTIMENT = "sentiment"


class NewsSentimentParams(StrategyParams):
    half_life_minutes: float = Field(
        default=60.0, gt=0, le=10_080, description="Half-life of an article's weight."
    )
    entry: float = Field(
        default=0.25, gt=0, le=1, description="Sentiment at or beyond which to enter."
    )
    exit: float = Field(
        default=0.05, ge=0, lt=1, description="Sentiment nearer 0 than this goes flat."
    )
    trend: int = Field(default=20, ge=2, description="SMA period of the price confirmation.")
    allow_short: bool = Field(default=True, description="Trade bad news too.")

    @model_validator(mode="after")
    def _exit_below_entry(self) -> Self:
        if self.exit >= self.entry:
            raise ValueError(f"exit ({self.exit}) must be below entry ({self.entry})")
        return self


@register
class NewsSentiment(Strategy[NewsSentimentParams]):
    """A ticker's news sentiment in a decaying window (`tradeos_lab.news.sentiment`: each
    article's weight halves every `half_life_minutes`) confirmed by price: long when the
    sentiment is at least `entry` and the close is above its `trend`-bar SMA, short when it is
    at most -`entry` and the close is below; flat once the news has faded within `exit` of 0.

    Strength is the sentiment's size, confidence 1; features: close, sentiment and the SMA.
    The batch form reads a `sentiment` column aligned with the bars (`with_sentiment`); live,
    each bar is given the sentiment the sentiment scorer keeps in the cache (`live_inputs`).
    """

    name = "news_sentiment"
    params_type = NewsSentimentParams
    lookback = 1
    extra_inputs = (SENTIMENT,)

    @cached_property
    def sma(self) -> SMA:
        return SMA(self.params.trend)

    @property
    def half_life_s(self) -> float:
        return self.params.half_life_minutes * 60.0

    @property
    def feature_names(self) -> tuple[str, ...]:
        return ("close", SENTIMENT, *self.indicator_set.outputs)

    def indicators(self) -> Sequence[Indicator]:
        return (self.sma,)

    def rule(self, values: Values) -> Decision | FloatArray:
        p = self.params
        sentiment, close, trend = values[SENTIMENT], values["close"], values[self.sma.name]
        size = np.abs(sentiment)
        long = (sentiment >= p.entry) & (close > trend)
        short = (sentiment <= -p.entry) & (close < trend)
        flat = size < p.exit
        if p.allow_short:
            return choose(long, short, flat=flat, long_strength=size, short_strength=size)
        return choose(long, flat=flat | short, long_strength=size)

    # ---- where the sentiment comes from ---------------------------------------------------------

    def with_sentiment(
        self, bars: pd.DataFrame, scores: pd.DataFrame, *, timeframe: Timeframe | str
    ) -> pd.DataFrame:
        """`bars` with the `sentiment` column the batch form reads: the decayed sentiment of
        `scores` (`symbol`, `ts`, `score`, e.g. `recorded_scores(lab.records)`) at each bar's
        close, with this strategy's half-life."""
        from tradeos_lab.news.sentiment import sentiment_at_bars

        aligned = sentiment_at_bars(bars, scores, half_life_s=self.half_life_s, timeframe=timeframe)
        return bars.assign(**{SENTIMENT: aligned})

    def live_inputs(self, bar: Bar, lab: Lab) -> dict[str, Any]:
        """The bar with the sentiment the sentiment scorer keeps in the lab's cache."""
        from tradeos_lab.news.sentiment import SentimentCache

        cache = SentimentCache(
            lab.cache.redis, keys=lab.keys, retention_s=lab.settings.news_sentiment_retention_s
        )
        return self.live_bar(bar, cache)

    def live_bar(self, bar: Bar, sentiment: SentimentCache) -> dict[str, Any]:
        """A live bar with its `sentiment` read from the cache as the batch form computes it:
        what `LiveStrategy.update` takes for this strategy."""
        from tradeos_lab.bars import utc_timestamp

        fields: dict[str, Any] = {f: getattr(bar, f) for f in ("open", "high", "low", "close")}
        fields["volume"] = bar.volume
        ts = utc_timestamp(bar.ts, "ts")
        fields["ts"] = ts
        close = ts + pd.Timedelta(seconds=Timeframe.parse(bar.timeframe).seconds)
        fields[SENTIMENT] = sentiment.at(bar.symbol, close, half_life_s=self.half_life_s)
        return fields
