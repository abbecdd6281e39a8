"""News fetcher: articles in. Polls RSS/Atom feeds and subreddits and publishes `news.raw`.

What it consumes: nothing from the bus; one timer per configured source (settings `news_feeds`,
every `news_feed_poll_s`; `news_subreddits`, every `news_reddit_poll_s`), so a slow or failing
source never delays another's schedule. With no source configured it has no timer and idles.

What it decides: which fetched articles are new. An article is keyed by its content hash
(`NewsArticle.article_id`); the first claim of `news:<hash>` in the flags tier (a dedup key with
a TTL of `news_dedup_ttl_s`) wins, so an article seen again on the next poll, in another feed or
by a second fetcher process is published once. A claim whose publish fails is released, so the
article goes out on the next poll. A malformed feed, a timeout or an unreadable item is logged
(a typed error from the source; the runner retries at the next poll): it never stops the
fetcher.

What it emits: one `news.article` message per new article, its id derived from its content hash.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Final, cast

from tradeos_lab.contracts import NewsArticle, NewsArticleMessage, new_message
from tradeos_lab.contracts.ids import keyed_message_id
from tradeos_lab.keys import Stream
from tradeos_lab.news.fetchers import NewsSource, open_sources, sources_named
from tradeos_lab.pipeline.service import Service, ServiceContext, Timer

if TYPE_CHECKING:
    from tradeos_lab.contracts import Message

log = logging.getLogger(__name__)

#: Prefix of the articles' dedup keys in the flags tier.
DEDUP_PREFIX: Final = "news:"


def article_message_id(article: NewsArticle) -> str:
    """The id of an article's message: sorts at its fetch time, hashes its content."""
    ms = int(article.fetched_at.timestamp() * 1000)
    return keyed_message_id(ms, f"{NewsArticle.SCHEMA}/{article.article_id}")


class NewsFetcher(Service):
    """Polls each news source on its own timer and publishes every new article once."""

    name = "news_fetcher"
    inputs = ()
    outputs = (Stream.NEWS_RAW,)

    def __init__(self, ctx: ServiceContext) -> None:
        super().__init__(ctx)
        self.sources: dict[str, NewsSource] = sources_named(
            open_sources(ctx.settings, clock=ctx.clock)
        )

    def timers(self) -> Sequence[Timer]:
        return tuple(
            Timer(name=name, every_s=source.every_s, fire=partial(self.poll, name))
            for name, source in self.sources.items()
        )

    def poll(self, name: str) -> Sequence[Message]:
        """Fetch one source and publish its new articles (here, so a failed publish releases
        their claims); the runner has nothing more to publish."""
        articles = self.sources[name].fetch()
        published = self.publish(articles)
        log.info("%s: %d items, %d new", name, len(articles), len(published))
        return ()

    def publish(self, articles: Sequence[NewsArticle]) -> list[NewsArticleMessage]:
        """Claim each article's content hash and publish the ones claimed here; returns them."""
        dedup = self.ctx.lab.flags.dedup
        ttl = self.ctx.settings.news_dedup_ttl_s
        claimed: dict[str, NewsArticle] = {}
        for article in articles:
            key = DEDUP_PREFIX + article.article_id
            if article.article_id not in claimed and dedup.claim_once(key, ttl_seconds=ttl):
                claimed[article.article_id] = article
        messages = [self.article_message(a) for a in claimed.values()]
        if not messages:
            return []
        try:
            self.ctx.lab.bus.publish_many(Stream.NEWS_RAW, messages)
        except BaseException:
            for article_id in claimed:
                dedup.release_claim(DEDUP_PREFIX + article_id)
            raise
        return messages

    def article_message(self, article: NewsArticle) -> NewsArticleMessage:
        message_id = article_message_id(article)
        return cast(
            "NewsArticleMessage",
            new_message(
                article, producer=self.name, produced_at=self.ctx.now(), message_id=message_id
            ),
        )

    def close(self) -> None:
        for source in self.sources.values():
            source.close()
