"""The news sources against a local server in the feeds' documented formats: RSS 2.0, Atom 1.0,
Reddit listings; malformed, slow, huge and unicode feeds give articles or typed errors, never a
hang or a crash."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from news_support import NewsServer, atom, reddit_listing, reddit_token, rss

from tradeos_lab.contracts import NewsArticleMessage, encode, new_message
from tradeos_lab.contracts.codec import MAX_MESSAGE_BYTES
from tradeos_lab.contracts.types import ARTICLE_TEXT_MAX_LENGTH
from tradeos_lab.errors import ConfigError, ProviderError, TransientError
from tradeos_lab.news.articles import article_id, plain_text
from tradeos_lab.news.fetchers import FeedSource, RedditSource, open_reddit, open_sources
from tradeos_lab.settings import load_settings


def _feed(url: str, *, timeout_s: float = 5.0, max_bytes: int = 5_000_000) -> FeedSource:
    client = httpx.Client(timeout=timeout_s)
    return FeedSource(url=url, every_s=60, timeout_s=timeout_s, max_bytes=max_bytes, client=client)


ITEMS = (
    {
        "title": "Apple beats estimates; $AAPL jumps",
        "link": "https://news.example.com/a",
        "guid": "a-1",
        "pubDate": "Fri, 15 Mar 2024 14:30:00 GMT",
        "description": "&lt;p&gt;Strong &lt;b&gt;iPhone&lt;/b&gt; sales.&lt;/p&gt;",
    },
    {
        "title": "Bitcoin slides as ETF outflows grow",
        "link": "https://news.example.com/b",
        "guid": "b-2",
        "pubDate": "Fri, 15 Mar 2024 15:00:00 GMT",
        "description": "BTC fell 5%.",
    },
)


def test_an_rss_feed_gives_one_plain_text_article_per_item(news_server: NewsServer) -> None:
    source = _feed(news_server.add("/rss", rss(*ITEMS)))
    articles = source.fetch()
    assert [a.title for a in articles] == [i["title"] for i in ITEMS]
    first = articles[0]
    assert first.body == "Strong iPhone sales."  # HTML removed
    assert first.url == "https://news.example.com/a"
    assert first.external_id == "a-1"
    assert first.published_at == datetime(2024, 3, 15, 14, 30, tzinfo=UTC)
    assert first.source == "rss:127.0.0.1"
    assert first.article_id == article_id(first.title, first.body)


def test_an_atom_feed_gives_its_entries_with_their_content(news_server: NewsServer) -> None:
    doc = atom(
        {
            "id": "urn:example:1",
            "title": "Nvidia guides higher",
            "link": "https://news.example.com/n",
            "summary": "short",
            "content": "&lt;div&gt;Data-center demand &amp;amp; AI.&lt;/div&gt;",
            "updated": "2024-03-15T16:00:00Z",
        }
    )
    (article,) = _feed(news_server.add("/atom", doc, content_type="application/atom+xml")).fetch()
    assert article.title == "Nvidia guides higher"
    assert article.body == "Data-center demand & AI."
    assert article.external_id == "urn:example:1"
    assert article.published_at == datetime(2024, 3, 15, 16, tzinfo=UTC)


def test_unicode_survives_and_control_characters_do_not(news_server: NewsServer) -> None:
    doc = rss({"title": "Äpfel — 株式 🚀 rally", "description": "caf\u00e9 déjà vu", "guid": "u"})
    doc = doc.replace("rally", "rally\x01")  # a control character the XML should not carry
    (article,) = _feed(news_server.add("/u", doc.encode("utf-8"))).fetch()
    assert article.title == "Äpfel — 株式 🚀 rally"  # the feed is read despite the bad byte
    assert article.body == "café déjà vu"
    clean = plain_text("Äpfel\x00 — 株式\x1b 🚀\ud800")
    assert clean == "Äpfel — 株式 🚀"


def test_same_story_twice_has_one_id_whatever_the_whitespace_and_case() -> None:
    assert article_id("Apple  beats", "Strong\nsales") == article_id("apple beats", "strong sales")
    assert article_id("Apple beats", "Strong sales") != article_id("Apple misses", "Weak sales")


def test_a_huge_item_is_cut_to_the_contract_and_still_fits_a_message(
    news_server: NewsServer,
) -> None:
    huge = {"title": "T" * 5000, "description": "word " * 400_000, "guid": "h"}
    (article,) = _feed(news_server.add("/huge", rss(huge))).fetch()
    assert len(article.title) == 256
    assert len(article.body) == ARTICLE_TEXT_MAX_LENGTH
    message = new_message(article, producer="news_fetcher")
    assert isinstance(message, NewsArticleMessage)
    assert len(encode(message)) < MAX_MESSAGE_BYTES


def test_a_feed_larger_than_the_cap_is_refused_not_read(news_server: NewsServer) -> None:
    url = news_server.add("/big", rss(*ITEMS * 20))
    with pytest.raises(ProviderError, match="larger than 1024 bytes"):
        _feed(url, max_bytes=1024).fetch()


@pytest.mark.parametrize(
    "document",
    [b"this is not a feed at all", b"\x00\xff\xfe garbage", b"<html><body>Login</body></html>"],
)
def test_a_document_that_is_no_feed_is_a_provider_error(
    news_server: NewsServer, document: bytes
) -> None:
    with pytest.raises(ProviderError, match="is not RSS or Atom"):
        _feed(news_server.add("/bad", document)).fetch()


def test_a_truncated_feed_gives_the_items_before_the_break(news_server: NewsServer) -> None:
    whole = rss(*ITEMS)
    cut = whole[: whole.index("</item>") + len("</item>")] + "<item><title>half"
    articles = _feed(news_server.add("/cut", cut)).fetch()
    assert [a.title for a in articles][:1] == [ITEMS[0]["title"]]


def test_items_with_no_title_or_impossible_dates_still_make_articles(
    news_server: NewsServer,
) -> None:
    doc = rss(
        {"description": "Body only, no title", "guid": "n1"},
        {"title": "Year nine thousand", "pubDate": "Fri, 15 Mar 9999 14:30:00 GMT", "guid": "n2"},
        {"title": "Not a date", "pubDate": "yesterday-ish", "guid": "n3"},
    )
    articles = _feed(news_server.add("/odd", doc)).fetch()
    assert [a.title for a in articles] == ["(untitled)", "Year nine thousand", "Not a date"]
    assert all(a.published_at is None for a in articles)


def test_a_slow_feed_times_out_as_a_transient_error(news_server: NewsServer) -> None:
    url = news_server.add("/slow", rss(*ITEMS), delay_s=5.0)
    with pytest.raises(TransientError, match="timed out"):
        _feed(url, timeout_s=0.2).fetch()


@pytest.mark.parametrize(("status", "error"), [(503, TransientError), (404, ProviderError)])
def test_http_errors_are_typed(
    news_server: NewsServer, status: int, error: type[Exception]
) -> None:
    url = news_server.add("/err", "nope", status=status)
    with pytest.raises(error, match=f"HTTP {status}"):
        _feed(url).fetch()


def test_an_unreachable_feed_is_a_transient_error() -> None:
    with pytest.raises(TransientError, match="unreachable"):
        _feed("http://127.0.0.1:9/feed").fetch()


# ---- Reddit ----------------------------------------------------------------------------------


def _reddit_settings(news_server: NewsServer, **more: Any) -> Any:
    return load_settings(
        news_subreddits=["stocks"],
        reddit_client_id="client-id",
        reddit_client_secret="client-secret-value",
        reddit_url=news_server.url,
        reddit_oauth_url=news_server.url,
        news_timeout_seconds=2.0,
        **more,
    )


def test_reddit_posts_come_read_only_from_the_listing(news_server: NewsServer) -> None:
    news_server.add("/api/v1/access_token", reddit_token(), content_type="application/json")
    news_server.add(
        "/r/stocks/new",
        reddit_listing(
            {"id": "abc", "title": "$TSLA to the moon 🚀", "selftext": "Deliveries **beat**."},
            {"id": "def", "title": "Market wrap", "created_utc": 1710513000},
        ),
        content_type="application/json",
    )
    settings = _reddit_settings(news_server)
    (source,) = open_sources(settings)
    assert isinstance(source, RedditSource)
    assert source.name == "reddit:stocks"
    first, second = source.fetch()
    assert first.title == "$TSLA to the moon 🚀"
    assert first.external_id == "t3_abc"
    assert first.url == f"{news_server.url}/r/stocks/comments/abc/x/"
    assert second.published_at == datetime.fromtimestamp(1710513000, UTC)
    token, listing = news_server.requests[0], news_server.requests[-1]
    assert token[0] == "POST" and token[1] == "/api/v1/access_token"
    assert listing[1].startswith("/r/stocks/new")
    assert listing[2]["Authorization"] == "bearer test-token"
    assert "client-secret-value" not in repr(settings)


def test_reddit_down_is_a_transient_error(news_server: NewsServer) -> None:
    news_server.add("/api/v1/access_token", reddit_token(), content_type="application/json")
    news_server.add("/r/stocks/new", "down", status=503)
    (source,) = open_sources(_reddit_settings(news_server))
    with pytest.raises(TransientError, match="r/stocks"):
        source.fetch()


def test_a_reddit_listing_that_is_not_json_is_a_provider_error(news_server: NewsServer) -> None:
    news_server.add("/api/v1/access_token", reddit_token(), content_type="application/json")
    news_server.add("/r/stocks/new", "<html>oops</html>", content_type="text/html")
    (source,) = open_sources(_reddit_settings(news_server))
    with pytest.raises(ProviderError, match="r/stocks"):
        source.fetch()


def test_reddit_without_credentials_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="reddit_client_id"):
        open_reddit(load_settings())
