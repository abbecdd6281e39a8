"""News and sentiment: fetch articles (RSS/Atom feeds, Reddit), score them, spot their tickers.

`fetchers` turns a source into `NewsArticle` payloads keyed by content hash; `tickers` finds the
tickers an article names; `scorers` gives a sentiment in [-1, 1] (VADER by default);
`sentiment` holds the decaying window the news strategy reads, in batch and live. The pipeline
services `news_fetcher` and `sentiment_scorer` wire them to the bus, flags, records and cache.
"""

from __future__ import annotations

from tradeos_lab.news.articles import article_id, plain_text
from tradeos_lab.news.scorers import SentimentScorer, VaderScorer, open_scorer
from tradeos_lab.news.sentiment import (
    SentimentCache,
    decayed_sentiment,
    sentiment_at_bars,
)
from tradeos_lab.news.tickers import TickerFinder

__all__ = [
    "SentimentCache",
    "SentimentScorer",
    "TickerFinder",
    "VaderScorer",
    "article_id",
    "decayed_sentiment",
    "open_scorer",
    "plain_text",
    "sentiment_at_bars",
]
