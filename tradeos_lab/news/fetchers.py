"""News sources: RSS/Atom feeds over httpx + feedparser, and subreddits through praw (read-only).

A source's `fetch()` returns the articles it holds now, as `NewsArticle` payloads; which are new
is decided by the caller (the news fetcher service, through dedup keys in the flags tier). A
source never hangs its caller: every request has a timeout, a feed's download also a wall-clock
deadline and a size cap. Failures are typed: `TransientError` for the network (try again at the
next poll), `ProviderError` for an answer that cannot be read.
"""

from __future__ import annotations

import calendar
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, Final, Protocol
from urllib.parse import urlsplit

import feedparser
import httpx
import pydantic

from tradeos_lab.errors import ConfigError, ProviderError, TransientError
from tradeos_lab.news.articles import build_article
from tradeos_lab.symbols import canonical_name

if TYPE_CHECKING:
    from tradeos_lab.contracts import NewsArticle
    from tradeos_lab.settings import Settings

log = logging.getLogger(__name__)

#: Items read from one feed document at most (a feed of a million items is cut, not fatal).
MAX_FEED_ITEMS: Final = 500
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(2200, 1, 1, tzinfo=UTC)


class NewsSource(Protocol):
    """A place articles come from, polled on its own schedule."""

    name: str
    every_s: float

    def fetch(self) -> list[NewsArticle]:
        """The articles the source holds now (new or not)."""
        ...

    def close(self) -> None: ...


def _utc(value: datetime | None) -> datetime | None:
    """A source's time if it is a plausible one, else None (a feed's year 0 or 9999)."""
    if value is None:
        return None
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value if _EARLIEST <= value < _LATEST else None


def _articles(build: Callable[[], NewsArticle], what: str) -> NewsArticle | None:
    """One item's article, or None (logged) when the item cannot make one."""
    try:
        return build()
    except (pydantic.ValidationError, ValueError) as e:
        log.warning("skipping %s: %s", what, str(e)[:300])
        return None


# ---- RSS and Atom -------------------------------------------------------------------------------


def feed_source_name(url: str) -> str:
    """`rss:HOST` for a feed URL (Atom feeds too): the `source` of its articles."""
    host = urlsplit(url).hostname or "feed"
    return canonical_name(f"rss:{host}"[:64], "news source")


@dataclass
class FeedSource:
    """One RSS 2.0 or Atom 1.0 feed, downloaded with httpx and parsed by feedparser."""

    url: str
    every_s: float
    timeout_s: float
    max_bytes: int
    client: httpx.Client
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        self.name = feed_source_name(self.url)

    def download(self) -> bytes:
        """The feed document; at most `max_bytes`, within `timeout_s` of wall time overall (a
        server that drips bytes is cut off like one that never answers)."""
        deadline = time.monotonic() + self.timeout_s
        chunks: list[bytes] = []
        size = 0
        try:
            with self.client.stream("GET", self.url, timeout=self.timeout_s) as response:
                if response.status_code >= 500 or response.status_code == 429:
                    raise TransientError(f"feed {self.url} answered HTTP {response.status_code}")
                if response.status_code >= 400:
                    raise ProviderError(f"feed {self.url} answered HTTP {response.status_code}")
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise ProviderError(
                            f"feed {self.url} is larger than {self.max_bytes} bytes; not read"
                        )
                    if time.monotonic() > deadline:
                        raise TransientError(
                            f"feed {self.url} took longer than {self.timeout_s}s to download"
                        )
                    chunks.append(chunk)
        except httpx.TimeoutException as e:
            raise TransientError(f"feed {self.url} timed out: {type(e).__name__}") from e
        except httpx.HTTPError as e:
            raise TransientError(f"feed {self.url} unreachable: {type(e).__name__}: {e}") from e
        return b"".join(chunks)

    def fetch(self) -> list[NewsArticle]:
        document = self.download()
        parsed = feedparser.parse(document, sanitize_html=True, resolve_relative_uris=False)
        entries = parsed.get("entries") or []
        if not entries and (parsed.get("bozo") or not parsed.get("version")):
            problem = parsed.get("bozo_exception")
            raise ProviderError(f"feed {self.url} is not RSS or Atom: {problem or 'no feed in it'}")
        if parsed.get("bozo"):
            log.warning(
                "feed %s is malformed; read what parses: %s", self.url, parsed.get("bozo_exception")
            )
        fetched_at = datetime.fromtimestamp(self.clock(), UTC)
        out = []
        for entry in entries[:MAX_FEED_ITEMS]:
            article = _articles(partial(self._article, entry, fetched_at), f"an item of {self.url}")
            if article is not None:
                out.append(article)
        return out

    def _article(self, entry: Any, fetched_at: datetime) -> NewsArticle:
        content = entry.get("content") or []
        body = content[0].get("value") if content else None
        body = body or entry.get("summary")
        # dict.get: the stored keys only, not feedparser's deprecated key fallbacks
        stamp = dict.get(entry, "published_parsed") or dict.get(entry, "updated_parsed")
        published = None
        if stamp is not None:
            try:
                published = datetime.fromtimestamp(calendar.timegm(stamp), UTC)
            except (OverflowError, ValueError, OSError):
                published = None
        return build_article(
            source=self.name,
            title=entry.get("title"),
            body=body,
            fetched_at=fetched_at,
            published_at=_utc(published),
            url=entry.get("link"),
            external_id=entry.get("id"),
        )

    def close(self) -> None:
        self.client.close()


# ---- Reddit -------------------------------------------------------------------------------------


@dataclass
class RedditSource:
    """The newest posts of one subreddit, read-only through praw with a script app's
    credentials (`reddit_client_id`, `reddit_client_secret`)."""

    subreddit: str
    every_s: float
    limit: int
    reddit: Any  # praw.Reddit: untyped
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        self.name = canonical_name(f"reddit:{self.subreddit}", "news source")

    def fetch(self) -> list[NewsArticle]:
        import prawcore

        try:
            posts = list(self.reddit.subreddit(self.subreddit).new(limit=self.limit))
        except (prawcore.exceptions.RequestException, prawcore.exceptions.ServerError) as e:
            raise TransientError(f"reddit r/{self.subreddit} unreachable: {e}") from e
        except prawcore.exceptions.TooManyRequests as e:
            raise TransientError(f"reddit r/{self.subreddit} rate-limited us: {e}") from e
        except (prawcore.exceptions.PrawcoreException, ValueError, KeyError, TypeError) as e:
            raise ProviderError(f"reddit r/{self.subreddit}: {type(e).__name__}: {e}") from e
        fetched_at = datetime.fromtimestamp(self.clock(), UTC)
        out = []
        for post in posts:
            article = _articles(
                partial(self._article, post, fetched_at), f"a post of r/{self.subreddit}"
            )
            if article is not None:
                out.append(article)
        return out

    def _article(self, post: Any, fetched_at: datetime) -> NewsArticle:
        created = getattr(post, "created_utc", None)
        published = None
        if isinstance(created, int | float):
            try:
                published = _utc(datetime.fromtimestamp(created, UTC))
            except (OverflowError, ValueError, OSError):
                published = None
        permalink = getattr(post, "permalink", None)
        base = self.reddit.config.reddit_url
        return build_article(
            source=self.name,
            title=getattr(post, "title", None),
            body=getattr(post, "selftext", None),
            fetched_at=fetched_at,
            published_at=published,
            url=f"{base}{permalink}" if isinstance(permalink, str) else None,
            external_id=getattr(post, "fullname", None),
        )

    def close(self) -> None:
        """praw holds a requests session per instance; nothing to release explicitly."""


def open_reddit(settings: Settings) -> Any:
    """A read-only `praw.Reddit` from the settings (URLs overridable, requests time out)."""
    import praw

    if settings.reddit_client_id is None or settings.reddit_client_secret is None:
        raise ConfigError("reading Reddit needs reddit_client_id and reddit_client_secret")
    reddit = praw.Reddit(
        client_id=settings.reddit_client_id.get_secret_value(),
        client_secret=settings.reddit_client_secret.get_secret_value(),
        user_agent=settings.reddit_user_agent,
        reddit_url=settings.reddit_url,
        oauth_url=settings.reddit_oauth_url,
        check_for_updates=False,
        check_for_async=False,
        requestor_kwargs={"timeout": settings.news_timeout_seconds},
    )
    reddit.read_only = True
    return reddit


def open_sources(settings: Settings, clock: Callable[[], float] = time.time) -> list[NewsSource]:
    """Every source the settings configure: one per feed URL, one per subreddit."""
    sources: list[NewsSource] = []
    if settings.news_feeds:
        client = httpx.Client(
            follow_redirects=True,
            timeout=settings.news_timeout_seconds,
            headers={"User-Agent": settings.reddit_user_agent},
        )
        sources.extend(
            FeedSource(
                url=url,
                every_s=settings.news_feed_poll_s,
                timeout_s=settings.news_timeout_seconds,
                max_bytes=settings.news_max_feed_bytes,
                client=client,
                clock=clock,
            )
            for url in settings.news_feeds
        )
    if settings.news_subreddits:
        reddit = open_reddit(settings)
        sources.extend(
            RedditSource(
                subreddit=name,
                every_s=settings.news_reddit_poll_s,
                limit=settings.news_reddit_limit,
                reddit=reddit,
                clock=clock,
            )
            for name in settings.news_subreddits
        )
    return sources


def sources_named(sources: Sequence[NewsSource]) -> dict[str, NewsSource]:
    """Sources by their timer name (`news:rss:HOST:N`), unique even for two feeds of a host."""
    out: dict[str, NewsSource] = {}
    for i, source in enumerate(sources):
        out[f"news:{source.name}:{i}"] = source
    return out
