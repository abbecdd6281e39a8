"""Tickers named by an article, the pluggable sentiment scorer, and the decaying window."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tradeos_lab.errors import ConfigError, ValidationError
from tradeos_lab.news import (
    SentimentScorer,
    TickerFinder,
    VaderScorer,
    decayed_sentiment,
    open_scorer,
    sentiment_at_bars,
)
from tradeos_lab.news.tickers import MAX_TICKERS

HOUR_NS = 3600 * 10**9


# ---- tickers ------------------------------------------------------------------------------------


def test_cashtags_and_listed_symbols_come_out_canonical_in_order_of_mention() -> None:
    finder = TickerFinder(["BTC-USD", "AAPL", "BRK.B"])
    text = "$tsla rallies; AAPL too. BTC/USD flat, then BTC up. $BRK.B holds. $TSLA again."
    assert finder.find(text) == ["TSLA", "AAPL", "BTC-USD", "BRK.B"]


@pytest.mark.parametrize(
    "text",
    [
        "paid $100 for lunch",  # a dollar amount
        "aapl in lower case is a word, not a ticker",
        "AAPLE and SPYX are other words",
        "xAAPL and AAPL-ish and foo$AAPL",
        "Ｓ and \u017fPY look-alikes",
    ],
)
def test_what_is_not_a_ticker_is_not_found(text: str) -> None:
    assert TickerFinder(["AAPL", "SPY"]).find(text) == []


def test_a_cashtag_flood_is_cut() -> None:
    text = " ".join(f"$A{chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(40))
    assert len(TickerFinder([]).find(text)) == MAX_TICKERS


@given(st.text(max_size=300))
def test_any_text_gives_canonical_tickers_or_none(text: str) -> None:
    for symbol in TickerFinder(["BTC-USD", "AAPL"]).find(text):
        assert symbol == symbol.upper() and symbol.isascii()


# ---- scorers ------------------------------------------------------------------------------------


def test_vader_is_the_default_and_reads_good_and_bad_news() -> None:
    scorer = open_scorer("vader")
    assert isinstance(scorer, VaderScorer) and isinstance(scorer, SentimentScorer)
    good = scorer.score("Apple beats estimates, record profit, shares surge")
    bad = scorer.score("Bank collapses amid fraud charges, shares crash")
    assert 0 < good <= 1 and -1 <= bad < 0
    assert scorer.score("") == 0.0


def test_finbert_without_weights_is_a_clear_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no model weights at"):
        open_scorer(f"finbert:{tmp_path / 'missing'}")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="transformers"):  # not installed here
        open_scorer(f"finbert:{tmp_path}")


def test_an_unknown_scorer_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown news scorer"):
        open_scorer("gpt")


# ---- the decaying window ----------------------------------------------------------------------


def test_one_fresh_article_counts_fully_and_halves_every_half_life() -> None:
    at = [0, HOUR_NS, 2 * HOUR_NS]
    values = decayed_sentiment([0], [0.8], at, half_life_s=3600)
    assert values == pytest.approx([0.8, 0.4, 0.2])


def test_no_news_or_only_future_news_is_neutral() -> None:
    assert decayed_sentiment([], [], [0], half_life_s=60).tolist() == [0.0]
    assert decayed_sentiment([HOUR_NS], [1.0], [0], half_life_s=60).tolist() == [0.0]


def test_a_burst_is_the_weighted_mean_and_old_news_leaves_the_window() -> None:
    burst = decayed_sentiment([0, 0, 0], [1.0, 0.5, -0.3], [0], half_life_s=60)
    assert burst[0] == pytest.approx(0.4)
    faded = decayed_sentiment([0], [1.0], [11 * 60 * 10**9], half_life_s=60)
    assert faded.tolist() == [0.0]  # beyond ten half-lives


@given(
    st.lists(st.tuples(st.integers(0, 10**13), st.floats(-1, 1)), min_size=0, max_size=30),
    st.integers(0, 2 * 10**13),
)
def test_the_sentiment_stays_in_bounds_whatever_the_items(
    items: list[tuple[int, float]], at: int
) -> None:
    times = [t for t, _ in items]
    scores = [s for _, s in items]
    (value,) = decayed_sentiment(times, scores, [at], half_life_s=900)
    assert -1 <= value <= 1 and math.isfinite(value)


def test_bad_scores_or_half_life_are_validation_errors() -> None:
    with pytest.raises(ValidationError, match=r"\[-1, 1\]"):
        decayed_sentiment([0], [1.5], [0], half_life_s=60)
    with pytest.raises(ValidationError, match="half_life_s"):
        decayed_sentiment([0], [0.5], [0], half_life_s=0)


def test_sentiment_at_bars_reads_each_symbols_news_at_the_bars_close() -> None:
    ts = pd.date_range("2024-03-15 14:00", periods=3, freq="1h", tz="UTC")
    bars = pd.DataFrame({"symbol": ["AAPL"] * 3 + ["MSFT"] * 3, "ts": list(ts) * 2})
    scores = pd.DataFrame(
        {
            "symbol": ["AAPL"],
            "ts": [pd.Timestamp("2024-03-15 14:30", tz="UTC")],
            "score": [0.6],
        }
    )
    aligned = sentiment_at_bars(bars, scores, half_life_s=3600, timeframe="1h")
    # the 14:00 bar closes at 15:00, half an hour after the article
    expected = [0.6 * 2**-0.5, 0.6 * 2**-1.5, 0.6 * 2**-2.5, 0.0, 0.0, 0.0]
    assert np.allclose(aligned.to_numpy(), expected)
    assert list(aligned.index) == list(bars.index)
