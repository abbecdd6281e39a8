"""The news fetcher and the sentiment scorer on the machine's Redis with PostgreSQL and SQLite
records, sources served locally: each article published once, scored once, one scored item per
ticker, a bad source never stops the others."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import pytest
from news_support import NewsServer, atom, rss

from tradeos_lab.contracts import (
    Message,
    NewsArticle,
    NewsArticleMessage,
    ScoredNews,
    ScoredNewsMessage,
    new_message,
)
from tradeos_lab.errors import ProviderError, TransientError
from tradeos_lab.keys import Stream
from tradeos_lab.lab import Lab
from tradeos_lab.news import SentimentCache
from tradeos_lab.pipeline import ServiceContext
from tradeos_lab.pipeline.registry import service_class
from tradeos_lab.pipeline.runner import ServiceRunner
from tradeos_lab.pipeline.services.news_fetcher import NewsFetcher
from tradeos_lab.pipeline.services.sentiment_scorer import SentimentScoring

GOOD = {
    "title": "Apple beats estimates, record profit; $AAPL surges",
    "description": "Strong iPhone sales lift the outlook. MSFT also gains.",
    "guid": "g-1",
    "pubDate": "Fri, 15 Mar 2024 14:30:00 GMT",
}
BAD = {
    "title": "Bitcoin crashes as exchange fraud charges shock traders",
    "description": "BTC plunges; losses mount.",
    "guid": "g-2",
    "pubDate": "Fri, 15 Mar 2024 15:00:00 GMT",
}
NO_TICKER = {"title": "Weather is nice today", "description": "Sunny.", "guid": "g-3"}


def _runner(lab: Lab, cls: Any, **settings: Any) -> ServiceRunner:
    chosen = {"pipeline_symbols": ("AAPL", "BTC-USD"), "news_symbols": ("MSFT",), **settings}
    ctx = ServiceContext(lab, lab.settings.model_copy(update=chosen), instance="news-test")
    return ServiceRunner(cls, ctx, block_ms=0)


def _stream(lab: Lab, stream: Stream) -> list[Message]:
    return [lab.bus.decode(stream, f) for _, f in lab.bus.redis.xrange(lab.bus.stream_key(stream))]


def _fire_all(runner: ServiceRunner) -> list[BaseException]:
    """Fire every timer once; the errors of those that failed (as the runner's loop logs)."""
    errors = []
    for timer in runner.timers:
        try:
            runner.fire(timer)
        except (ProviderError, TransientError) as e:
            errors.append(e)
    return errors


def _scored(messages: Sequence[Message]) -> list[ScoredNews]:
    return [m.payload for m in messages if isinstance(m, ScoredNewsMessage)]


def test_the_registry_knows_both_services_and_they_idle_without_sources(news_lab: Lab) -> None:
    assert service_class("news_fetcher") is NewsFetcher
    assert service_class("sentiment_scorer") is SentimentScoring
    fetcher = _runner(news_lab, NewsFetcher)
    assert fetcher.timers == ()
    fetcher.close()


def test_each_article_is_published_once_across_feeds_polls_and_processes(
    news_lab: Lab, news_server: NewsServer
) -> None:
    feeds = [
        news_server.add("/rss", rss(GOOD, BAD, GOOD)),  # a duplicate inside one feed
        news_server.add(
            "/atom",
            atom({"id": "x", "title": GOOD["title"], "summary": GOOD["description"]}),
            content_type="application/atom+xml",
        ),
        news_server.add("/more", rss(NO_TICKER, BAD)),  # the same story in another feed
    ]
    fetcher = _runner(news_lab, NewsFetcher, news_feeds=tuple(feeds))
    assert len(fetcher.timers) == 3
    assert _fire_all(fetcher) == []
    raw = _stream(news_lab, Stream.NEWS_RAW)
    titles = sorted(m.payload.title for m in raw if isinstance(m, NewsArticleMessage))
    assert titles == sorted([GOOD["title"], BAD["title"], NO_TICKER["title"]])

    # the next poll, and a second fetcher process, find nothing new
    again = _runner(news_lab, NewsFetcher, news_feeds=tuple(feeds))
    assert _fire_all(fetcher) == [] and _fire_all(again) == []
    assert len(_stream(news_lab, Stream.NEWS_RAW)) == 3
    fetcher.close()
    again.close()


def test_a_bad_source_fails_alone_and_the_fetcher_goes_on(
    news_lab: Lab, news_server: NewsServer
) -> None:
    feeds = (
        news_server.add("/garbage", b"\x00 not a feed"),
        news_server.add("/slow", rss(NO_TICKER), delay_s=5.0),
        news_server.add("/down", "x", status=503),
        news_server.add("/good", rss(GOOD)),
    )
    fetcher = _runner(news_lab, NewsFetcher, news_feeds=feeds, news_timeout_seconds=0.3)
    errors = _fire_all(fetcher)
    assert [type(e) for e in errors] == [ProviderError, TransientError, TransientError]
    (message,) = _stream(news_lab, Stream.NEWS_RAW)
    assert message.payload.title == GOOD["title"]
    fetcher.close()


def test_articles_are_scored_once_recorded_cached_and_published_per_ticker(
    news_lab: Lab, news_server: NewsServer
) -> None:
    fetcher = _runner(
        news_lab, NewsFetcher, news_feeds=(news_server.add("/rss", rss(GOOD, BAD, NO_TICKER)),)
    )
    _fire_all(fetcher)
    scorer = _runner(news_lab, SentimentScoring)
    scorer.drain()
    scored = _scored(_stream(news_lab, Stream.NEWS_SCORED))
    by_symbol = {s.symbol: s for s in scored}
    assert sorted(by_symbol) == ["AAPL", "BTC-USD", "MSFT"]
    assert len(scored) == 3
    assert by_symbol["AAPL"].score > 0 and by_symbol["BTC-USD"].score < 0
    assert by_symbol["AAPL"].score == by_symbol["MSFT"].score  # one article, two tickers
    assert by_symbol["AAPL"].scorer == "vader"
    assert by_symbol["AAPL"].ts == pd.Timestamp("2024-03-15 14:30", tz="UTC").to_pydatetime()

    records = news_lab.records
    rows = records.news_scores()
    assert sorted((r.symbol, r.article_id) for r in rows) == sorted(
        (s.symbol, s.article_id) for s in scored
    )
    assert len(records.news_scores(symbols=["AAPL"])) == 1
    kept = records.news_article(by_symbol["AAPL"].article_id)
    assert kept is not None and kept.title == GOOD["title"]
    no_ticker = [
        m for m in _stream(news_lab, Stream.NEWS_RAW) if m.payload.title == NO_TICKER["title"]
    ]
    assert records.news_article(no_ticker[0].payload.article_id) is not None  # kept, no ticker

    cache = SentimentCache(news_lab.cache.redis, keys=news_lab.keys, retention_s=86_400)
    at = pd.Timestamp("2024-03-15 14:30", tz="UTC")
    assert cache.at("AAPL", at, half_life_s=3600) == pytest.approx(by_symbol["AAPL"].score)
    assert cache.at("BTC-USD", at, half_life_s=3600) == 0.0  # its news came later
    fetcher.close()
    scorer.close()


def test_nothing_is_scored_twice_whatever_reaches_the_scorer_again(
    news_lab: Lab, news_server: NewsServer
) -> None:
    fetcher = _runner(news_lab, NewsFetcher, news_feeds=(news_server.add("/rss", rss(GOOD)),))
    _fire_all(fetcher)
    scorer = _runner(news_lab, SentimentScoring)
    scorer.drain()
    (original,) = _stream(news_lab, Stream.NEWS_RAW)
    assert isinstance(original, NewsArticleMessage)
    first = _scored(_stream(news_lab, Stream.NEWS_SCORED))
    assert len(first) == 2  # AAPL, MSFT

    # the dedup key expired (or was lost) and the story is published again: not scored again
    news_lab.flags.dedup.release_claim("news:" + original.payload.article_id)
    _fire_all(fetcher)
    assert len(_stream(news_lab, Stream.NEWS_RAW)) == 2
    scorer.drain()
    assert len(_stream(news_lab, Stream.NEWS_SCORED)) == 2

    # the same story under another source's message: nothing either
    copy = new_message(
        NewsArticle.model_validate(original.payload.model_dump() | {"source": "reddit:stocks"}),
        producer="news_fetcher",
    )
    assert list(scorer.service.handle(copy)) == []

    # the very message handled again (its ack lost in a crash): the same outputs, once recorded
    again = scorer.service.handle(original)
    assert [m.payload for m in again] == first
    assert len(news_lab.records.news_scores()) == 2
    cache = SentimentCache(news_lab.cache.redis, keys=news_lab.keys, retention_s=86_400)
    times, _ = cache.items("AAPL")
    assert len(times) == 1
    fetcher.close()
    scorer.close()
