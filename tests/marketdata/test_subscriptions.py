"""The subscription manager on the real Redis: reference counts per subscriber, atomic writes."""

from __future__ import annotations

import threading

import pytest
import redis

from tradeos_lab.errors import ValidationError
from tradeos_lab.keys import Keys
from tradeos_lab.marketdata import SubscriptionManager


@pytest.fixture
def subs(shared_redis: redis.Redis, keys: Keys) -> SubscriptionManager:
    return SubscriptionManager(shared_redis, keys=keys)


def test_a_pair_is_needed_while_any_subscriber_holds_a_reference(
    subs: SubscriptionManager,
) -> None:
    assert subs.subscribe("momentum", "BTC-USD", "1m") == {"BTC-USD": 1}
    assert subs.subscribe("momentum", "BTC-USD", "1m") == {"BTC-USD": 2}
    assert subs.subscribe("dashboard", ["BTC-USD", "ETH-USD"], "1m") == {
        "BTC-USD": 1,
        "ETH-USD": 1,
    }

    needed = subs.needed("1m").set_index("symbol")
    assert needed.loc["BTC-USD", "subscribers"] == 2
    assert needed.loc["BTC-USD", "refs"] == 3
    assert needed.loc["ETH-USD", "refs"] == 1

    assert subs.unsubscribe("momentum", "BTC-USD", "1m") == {"BTC-USD": 1}
    assert subs.unsubscribe("momentum", "BTC-USD", "1m") == {"BTC-USD": 0}
    assert subs.refs("momentum", "BTC-USD", "1m") == 0
    assert subs.is_needed("BTC-USD", "1m")  # the dashboard still holds it

    subs.unsubscribe("dashboard", ["BTC-USD", "ETH-USD"], "1m")
    assert not subs.is_needed("BTC-USD", "1m")
    assert subs.needed().empty
    assert subs.redis.exists(subs.key) == 0  # released pairs leave nothing behind


def test_releasing_more_than_held_never_goes_negative(subs: SubscriptionManager) -> None:
    assert subs.unsubscribe("ghost", "BTC-USD") == {"BTC-USD": 0}
    subs.subscribe("algo", "BTC-USD")
    assert subs.unsubscribe("algo", "BTC-USD") == {"BTC-USD": 0}
    assert subs.unsubscribe("algo", "BTC-USD") == {"BTC-USD": 0}
    assert subs.subscriptions().empty


def test_all_refs_and_unsubscribe_all_release_what_a_subscriber_holds(
    subs: SubscriptionManager,
) -> None:
    for _ in range(3):
        subs.subscribe("algo-1", ["BTC-USD", "ETH-USD"], "5m")
    subs.subscribe("algo-1", "SOL-USD", "1h")
    subs.subscribe("algo-12", "BTC-USD", "5m")  # a name that shares a prefix

    assert subs.unsubscribe("algo-1", "ETH-USD", "5m", all_refs=True) == {"ETH-USD": 0}
    assert subs.unsubscribe_all("algo-1") == 2

    left = subs.subscriptions()
    assert list(left["subscriber"]) == ["algo-12"]
    assert subs.symbols("5m") == ["BTC-USD"]
    assert subs.symbols("1h") == []


def test_timeframes_are_tracked_separately(subs: SubscriptionManager) -> None:
    subs.subscribe("a", ["BTC-USD", "ETH-USD"], "1m")
    subs.subscribe("a", "BTC-USD", "1d")
    assert subs.symbols("1m") == ["BTC-USD", "ETH-USD"]
    assert subs.symbols("1d") == ["BTC-USD"]
    mine = subs.subscriptions("a")
    assert set(zip(mine["symbol"], mine["timeframe"], strict=True)) == {
        ("BTC-USD", "1m"),
        ("ETH-USD", "1m"),
        ("BTC-USD", "1d"),
    }


@pytest.mark.parametrize(
    ("subscriber", "symbols", "timeframe"),
    [
        ("ok", ["BTC-USD", "AAPL'; DROP TABLE x;--"], "1m"),
        ("ok", ["BTC-USD", "АAPL"], "1m"),  # Cyrillic A
        ("ok", ["BTC-USD"], "7m"),
        ("bad|name", ["BTC-USD"], "1m"),
        ("", ["BTC-USD"], "1m"),
        ("x" * 65, ["BTC-USD"], "1m"),
    ],
)
def test_bad_input_changes_nothing(
    subs: SubscriptionManager, subscriber: str, symbols: list[str], timeframe: str
) -> None:
    with pytest.raises(ValidationError):
        subs.subscribe(subscriber, symbols, timeframe)
    assert subs.subscriptions().empty


def test_concurrent_subscribers_count_exactly(
    shared_redis: redis.Redis, keys: Keys, subs: SubscriptionManager
) -> None:
    def work(name: str) -> None:
        mine = SubscriptionManager(redis.Redis.from_url("redis://127.0.0.1:6379/0"), keys=keys)
        for _ in range(50):
            mine.subscribe(name, ["BTC-USD", "ETH-USD"])
        for _ in range(20):
            mine.unsubscribe(name, "BTC-USD")
        mine.redis.close()

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    needed = subs.needed("1m").set_index("symbol")
    assert needed.loc["BTC-USD", "refs"] == 4 * 30
    assert needed.loc["ETH-USD", "refs"] == 4 * 50
    assert needed.loc["BTC-USD", "subscribers"] == 4
