"""Sentiment scorer: consumes `news.raw`, emits `news.scored`, one item per ticker an article names.

What it consumes: `news.article` messages. What it decides: the article's tickers (cashtags, and
the pipeline's symbols plus `news_symbols` in plain words) and its sentiment in [-1, 1] from the
model `news_scorer` names (VADER by default). What it emits and keeps:

- the records: the article and its score per ticker, once per content hash (`record_news`); an
  article already recorded from another message (the same story twice) is not scored again and
  emits nothing;
- the cache: each ticker's scored items, from which the news strategy reads its decayed
  sentiment live (idempotent: an item is keyed by its article id);
- the bus: one `news.scored` message per ticker, derived from the article's message.

A message handled again after a crash (recorded by this very message, its ack lost) gives the
same outputs again, so nothing is lost and, with the runner's derived ids, nothing doubles.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from tradeos_lab.contracts import NewsArticleMessage, ScoredNews
from tradeos_lab.keys import Stream
from tradeos_lab.news.scorers import open_scorer
from tradeos_lab.news.sentiment import SentimentCache
from tradeos_lab.news.tickers import TickerFinder
from tradeos_lab.pipeline.service import Service, ServiceContext

if TYPE_CHECKING:
    from tradeos_lab.contracts import Message


class SentimentScoring(Service):
    """Scores each new article, records it, caches its sentiment per ticker, publishes it."""

    name = "sentiment_scorer"
    inputs = (Stream.NEWS_RAW,)
    outputs = (Stream.NEWS_SCORED,)

    def __init__(self, ctx: ServiceContext) -> None:
        super().__init__(ctx)
        settings = ctx.settings
        self.model = open_scorer(settings.news_scorer)
        self.tickers = TickerFinder((*settings.pipeline_symbols, *settings.news_symbols))
        self.sentiment = SentimentCache(
            ctx.lab.cache.redis, keys=ctx.lab.keys, retention_s=settings.news_sentiment_retention_s
        )

    def handle(self, message: Message) -> Sequence[Message]:
        if not isinstance(message, NewsArticleMessage):
            return ()
        article = message.payload
        text = f"{article.title}\n{article.body}"
        tickers = self.tickers.find(text)
        score = self.model.score(text)
        records = self.ctx.lab.records
        if not records.record_news(
            message,
            scorer=self.model.name,
            score=score,
            tickers=dict.fromkeys(tickers, score),
        ):
            kept = records.news_article(article.article_id)
            if kept is None or kept.message_id != message.message_id:
                return ()  # the same story from another message: scored once already
            score = kept.score  # this message again (its ack was lost): the same outputs
        ts = article.published_at or article.fetched_at
        for symbol in tickers:
            self.sentiment.add(symbol, article.article_id, ts, score)
        return [
            self.ctx.message(
                message,
                ScoredNews(
                    article_id=article.article_id,
                    symbol=symbol,
                    ts=ts,
                    score=score,
                    scorer=self.model.name,
                    source=article.source,
                    title=article.title,
                ),
            )
            for symbol in tickers
        ]
