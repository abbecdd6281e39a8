"""The news-sentiment strategy: a backtest on recorded news, and the same signals live from the
sentiment the scorer caches."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from tradeos_lab.contracts import Bar, NewsArticle, NewsArticleMessage, new_message
from tradeos_lab.errors import ValidationError
from tradeos_lab.lab import Lab
from tradeos_lab.news import SentimentCache
from tradeos_lab.news.articles import build_article
from tradeos_lab.news.sentiment import recorded_scores
from tradeos_lab.strategies import get_strategy
from tradeos_lab.strategies.builtins import NewsSentiment

START = pd.Timestamp("2024-03-01", tz="UTC")
N = 120


def _bars() -> pd.DataFrame:
    """Hourly AAPL bars: up for 60 bars, then down."""
    steps = np.r_[np.full(60, 0.5), np.full(60, -0.5)]
    close = 100 + np.cumsum(steps)
    return pd.DataFrame(
        {
            "symbol": "AAPL",
            "timeframe": "1h",
            "ts": pd.date_range(START, periods=N, freq="1h"),
            "open": close - 0.1,
            "high": close + 0.3,
            "low": close - 0.3,
            "close": close,
            "volume": 1000.0,
        }
    )


#: (bar index the article came out in, title, score)
NEWS = [
    (30, "AAPL good news one", 0.8),
    (40, "AAPL good news two", 0.6),
    (85, "AAPL bad news one", -0.9),
    (95, "AAPL bad news two", -0.7),
]


def _record_news(lab: Lab) -> None:
    for i, title, score in NEWS:
        published = (START + timedelta(hours=i, minutes=20)).to_pydatetime()
        article = build_article(
            source="rss:news.example.com",
            title=title,
            body="",
            fetched_at=published,
            published_at=published,
        )
        message = new_message(article, producer="news_fetcher")
        assert isinstance(message, NewsArticleMessage) and isinstance(article, NewsArticle)
        assert lab.records.record_news(
            message, scorer="vader", score=score, tickers={"AAPL": score}
        )


def test_a_backtest_on_recorded_news_goes_long_on_good_news_in_an_uptrend_and_short_on_bad(
    news_lab: Lab,
) -> None:
    _record_news(news_lab)
    strategy = NewsSentiment(half_life_minutes=240)
    scores = recorded_scores(news_lab.records, ["AAPL"])
    assert len(scores) == len(NEWS)
    frame = strategy.signals(strategy.with_sentiment(_bars(), scores, timeframe="1h"))
    longs = np.flatnonzero(frame["strength"].to_numpy() > 0)
    shorts = np.flatnonzero(frame["strength"].to_numpy() < 0)
    assert longs.size and shorts.size
    assert longs.min() == 30 and longs.max() < 60  # after the news, while the price rises
    assert shorts.min() == 85  # after the bad news, the price already falling
    assert set(frame.columns) >= {"close", "sma_20", "strength", "entries"}
    # without news there is no trade: the sentiment fades to flat in between
    assert (frame["strength"].iloc[70:80] == 0).all()


def test_live_signals_from_the_cached_sentiment_equal_the_backtest_bar_for_bar(
    news_lab: Lab,
) -> None:
    _record_news(news_lab)
    strategy = get_strategy("news_sentiment")(half_life_minutes=240)
    assert isinstance(strategy, NewsSentiment)
    bars = _bars()
    batch = strategy.signals(
        strategy.with_sentiment(bars, recorded_scores(news_lab.records), timeframe="1h")
    )
    cache = SentimentCache(news_lab.cache.redis, keys=news_lab.keys, retention_s=30 * 86_400)
    for row in recorded_scores(news_lab.records).itertuples():
        cache.add(row.symbol, row.article_id, row.ts, row.score)
    live = strategy.live("AAPL", "1h")
    strengths = []
    for row in bars.to_dict("records"):
        bar = Bar(
            source="test",
            **{
                k: row[k]
                for k in ("symbol", "timeframe", "ts", "open", "high", "low", "close", "volume")
            },
        )
        signal = live.update(
            strategy.live_bar(bar, cache), source_message_id="0" * 8 + "-0000-7000-8000-" + "0" * 12
        )
        strengths.append(np.nan if signal is None else signal.strength)
        if signal is not None:
            assert "sentiment" in signal.features
    np.testing.assert_allclose(strengths, batch["strength"].to_numpy(), rtol=1e-12, atol=1e-12)


def test_without_a_sentiment_input_the_strategy_gives_no_signal() -> None:
    strategy = NewsSentiment()
    with pytest.raises(ValidationError, match="sentiment"):
        strategy.signals(_bars())  # the batch form needs the column
    live = strategy.live("AAPL", "1h")
    for row in _bars().to_dict("records"):
        bar = Bar(
            source="test",
            **{
                k: row[k]
                for k in ("symbol", "timeframe", "ts", "open", "high", "low", "close", "volume")
            },
        )
        assert live.update(bar, source_message_id="0" * 8 + "-0000-7000-8000-" + "0" * 12) is None


def test_parameters_are_checked() -> None:
    with pytest.raises(ValidationError, match="exit"):
        NewsSentiment(entry=0.1, exit=0.2)


def test_the_signal_engine_gives_the_news_strategy_its_cached_sentiment(news_lab: Lab) -> None:
    """In the pipeline, the same signals as the backtest on recorded news, bar for bar."""
    from tradeos_lab.pipeline import ServiceContext
    from tradeos_lab.pipeline.deploy import deployed_engine

    _record_news(news_lab)
    strategy = NewsSentiment(half_life_minutes=240)
    bars = _bars()
    batch = strategy.signals(
        strategy.with_sentiment(bars, recorded_scores(news_lab.records), timeframe="1h")
    )
    cache = SentimentCache(news_lab.cache.redis, keys=news_lab.keys, retention_s=30 * 86_400)
    for row in recorded_scores(news_lab.records).itertuples():
        cache.add(row.symbol, row.article_id, row.ts, row.score)
    engine = deployed_engine(strategy)(
        ServiceContext(news_lab, news_lab.settings, instance="news-test")
    )
    strengths = []
    for row in bars.to_dict("records"):
        fields = ("symbol", "timeframe", "ts", "open", "high", "low", "close", "volume")
        bar = new_message(Bar(source="test", **{k: row[k] for k in fields}), producer="ingestion")
        signals = [m.payload for m in engine.handle(bar) if m.payload.SCHEMA == "signal.raw"]
        strengths.append(signals[0].strength if signals else np.nan)  # type: ignore[attr-defined]
    np.testing.assert_allclose(strengths, batch["strength"].to_numpy(), rtol=1e-12, atol=1e-12)
    assert np.nanmax(np.abs(strengths)) > 0, "no signal: the test proves nothing"
