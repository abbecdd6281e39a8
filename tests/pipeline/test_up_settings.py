"""The pipeline's settings: what `up` runs, checked once at start with one message per bad key."""

from __future__ import annotations

import pytest

from tradeos_lab.errors import ConfigError
from tradeos_lab.settings import NEWS_SERVICES, PIPELINE_SERVICES, load_settings


def test_pipeline_defaults_run_every_service_but_the_news_on_the_synthetic_feed() -> None:
    s = load_settings()
    assert s.pipeline_feed == "synthetic"
    assert s.pipeline_symbols == ("BTC-USD", "ETH-USD")
    assert s.pipeline_strategies == ("sma_cross",)
    assert s.pipeline_services == tuple(n for n in PIPELINE_SERVICES if n not in NEWS_SERVICES)


def test_a_configured_news_source_adds_the_news_services_to_the_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings(news_feeds=["https://news.example/rss"]).pipeline_services == (
        PIPELINE_SERVICES
    )
    monkeypatch.setenv("TRADEOS_NEWS_FEEDS", "https://news.example/rss")
    assert load_settings().pipeline_services == PIPELINE_SERVICES
    assert load_settings(pipeline_services="ingestion").pipeline_services == ("ingestion",)


def test_symbols_take_their_canonical_spelling_from_a_comma_list_in_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRADEOS_PIPELINE_SYMBOLS", "btc/usd, SPY,BTC-USD")
    assert load_settings().pipeline_symbols == ("BTC-USD", "SPY")


def test_replay_feed_keeps_its_path_and_named_feeds_are_lower_case() -> None:
    assert load_settings(pipeline_feed="replay:/data/bars.csv").pipeline_feed == (
        "replay:/data/bars.csv"
    )
    assert load_settings(pipeline_feed="Coinbase").pipeline_feed == "coinbase"


def test_strategy_names_are_canonical_and_class_references_keep_their_case() -> None:
    s = load_settings(pipeline_strategies=["SMA_Cross", "my_pkg.mod:MyStrategy"])
    assert s.pipeline_strategies == ("sma_cross", "my_pkg.mod:MyStrategy")


def test_chosen_services_run_in_pipeline_order() -> None:
    s = load_settings(pipeline_services="positions,ingestion")
    assert s.pipeline_services == ("ingestion", "positions")


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"pipeline_feed": "ticker-tape"}, "unknown feed 'ticker-tape'"),
        ({"pipeline_feed": "replay:"}, "replay feed needs a file"),
        ({"pipeline_symbols": ["BTC USD"]}, "is not a ticker"),
        ({"pipeline_symbols": []}, "at least one symbol"),
        ({"pipeline_strategies": ["sma cross"]}, "bad strategy name"),
        ({"pipeline_services": ["broker"]}, "unknown service 'broker'"),
        ({"pipeline_timeframe": "2m"}, "pipeline_timeframe"),
        ({"news_feeds": ["ftp://news.example/rss"]}, "is not an http"),
        ({"news_subreddits": ["stocks"]}, "needs reddit_client_id"),
        ({"news_subreddits": ["no spaces"]}, "is not a subreddit"),
        ({"news_scorer": "finbert"}, "unknown news scorer"),
    ],
)
def test_bad_pipeline_setting_is_one_config_error_naming_it(
    overrides: dict[str, object], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(**overrides)


def test_settings_know_the_services_of_the_registry_in_its_order() -> None:
    from tradeos_lab.pipeline.registry import PIPELINE_ORDER

    assert PIPELINE_SERVICES == PIPELINE_ORDER
