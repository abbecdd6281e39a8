"""The cache tier on the machine's Redis: typed accessors, the last-N bar block, TTLs, bad input."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
import redis

from tradeos_lab.bars import empty_bars, validate_bars
from tradeos_lab.errors import (
    ConfigError,
    DependencyUnavailable,
    StoreError,
    SymbolError,
    ValidationError,
)
from tradeos_lab.keys import Keys
from tradeos_lab.settings import Settings
from tradeos_lab.stack.redis_server import RedisServerProcess
from tradeos_lab.tiers.cache import BAR_RECORD, Cache

START = pd.Timestamp("2024-01-02 14:30", tz="UTC")


def bar_frame(n: int, symbol: str = "AAPL", timeframe: str = "1m", start: pd.Timestamp = START):
    step = pd.Timedelta(timeframe.replace("m", "min"))
    ts = pd.date_range(start, periods=n, freq=step)
    close = 100 + np.sin(np.arange(n) / 10)
    return pd.DataFrame(
        {
            "symbol": symbol,
            "timeframe": timeframe,
            "ts": ts,
            "open": close - 0.1,
            "high": close + 0.5,
            "low": close - 0.5,
            "close": close,
            "volume": np.arange(n, dtype=float) * 10 + 1,
            "vwap": close + 0.01,
            "trade_count": np.arange(n) + 1,
        }
    )


def one_bar(ts: pd.Timestamp, close: float = 100.0) -> dict[str, object]:
    return {
        "ts": ts,
        "open": close,
        "high": close + 1,
        "low": close - 1,
        "close": close,
        "volume": 5.0,
    }


@pytest.fixture
def cache(
    shared_redis: redis.Redis, keys: Keys, settings_factory: Callable[..., Settings]
) -> Cache:
    return Cache(shared_redis, keys=keys, settings=settings_factory())


def written(client: redis.Redis, namespace: str) -> list[bytes]:
    return list(client.scan_iter(match=f"{namespace}:*", count=1000))


# ---- bars ------------------------------------------------------------------------------------


def test_last_500_bars_read_back_as_the_validated_bar_frame(cache: Cache) -> None:
    frame = bar_frame(600)
    assert cache.write_bars(frame) == 600
    got = cache.get_bars("AAPL", "1m")
    expected = validate_bars(frame).tail(500).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected)


def test_appending_keeps_exactly_the_last_n_bars(
    shared_redis: redis.Redis, keys: Keys, settings_factory: Callable[..., Settings]
) -> None:
    cache = Cache(shared_redis, keys=keys, settings=settings_factory(cache_bars=5))
    for i in range(8):
        kept = cache.append_bar("MSFT", "5m", one_bar(START + pd.Timedelta(minutes=5 * i), 10 + i))
        assert kept == min(i + 1, 5)
    got = cache.get_bars("MSFT", "5m")
    assert list(got["close"]) == [13.0, 14.0, 15.0, 16.0, 17.0]
    assert shared_redis.strlen(keys.bars("MSFT", "5m")) == 5 * BAR_RECORD.itemsize


def test_a_bar_with_the_same_timestamp_replaces_the_cached_one(cache: Cache) -> None:
    cache.write_bars(bar_frame(3))
    last = START + pd.Timedelta(minutes=2)
    assert cache.append_bar("AAPL", "1m", one_bar(last, close=150.0)) == 3
    got = cache.get_bars("AAPL", "1m")
    assert len(got) == 3
    assert got["close"].iloc[-1] == 150.0
    assert got["ts"].is_monotonic_increasing


def test_late_and_overlapping_bars_merge_by_timestamp(cache: Cache) -> None:
    frame = bar_frame(10)
    cache.write_bars(frame.iloc[[0, 2, 4, 6, 8]])
    cache.write_bars(frame.iloc[[1, 3, 5, 7, 9]])
    cache.write_bars(frame.iloc[[4]].assign(close=100.2, high=101.0))
    got = cache.get_bars("AAPL", "1m")
    assert list(got["ts"]) == list(frame["ts"])
    assert got["close"].iloc[4] == 100.2
    assert got.drop(index=4).equals(validate_bars(frame).drop(index=4))


def test_limit_reads_only_the_latest_bars(cache: Cache) -> None:
    cache.write_bars(bar_frame(50))
    got = cache.get_bars("AAPL", "1m", limit=7)
    pd.testing.assert_frame_equal(got, cache.get_bars("AAPL", "1m").tail(7).reset_index(drop=True))
    assert len(cache.get_bars("AAPL", "1m", limit=500)) == 50
    assert cache.get_bars("AAPL", "1m", limit=0).empty


def test_missing_vwap_and_trade_count_round_trip_as_missing(cache: Cache) -> None:
    frame = bar_frame(4).drop(columns=["vwap", "trade_count"])
    cache.write_bars(frame)
    got = cache.get_bars("AAPL", "1m")
    assert got["vwap"].isna().all()
    assert got["trade_count"].isna().all()
    assert str(got["trade_count"].dtype) == "Int64"


def test_a_cache_miss_is_an_empty_bar_frame(cache: Cache) -> None:
    got = cache.get_bars("NVDA", "1h")
    assert got.empty
    assert list(got.columns) == list(validate_bars(bar_frame(1)).columns)


def test_bar_blocks_carry_the_profile_ttl_of_their_timeframe(
    shared_redis: redis.Redis, keys: Keys, settings_factory: Callable[..., Settings]
) -> None:
    cache = Cache(shared_redis, keys=keys, settings=settings_factory())
    cache.write_bars(pd.concat([bar_frame(3), bar_frame(3, timeframe="5m")]))
    assert 55 <= shared_redis.ttl(keys.bars("AAPL", "1m")) <= 60
    assert 295 <= shared_redis.ttl(keys.bars("AAPL", "5m")) <= 300

    tuned = Cache(shared_redis, keys=keys, settings=settings_factory(bar_ttl_1m_seconds=150))
    tuned.append_bar("AAPL", "1m", one_bar(START + pd.Timedelta(minutes=3)))
    assert 145 <= shared_redis.ttl(keys.bars("AAPL", "1m")) <= 150


def test_latest_indicators_are_written_with_their_bar_and_never_go_back_in_time(
    cache: Cache, shared_redis: redis.Redis, keys: Keys
) -> None:
    t1 = START + pd.Timedelta(minutes=1)
    cache.append_bar("AAPL", "1m", one_bar(t1), indicators={"rsi_14": 55.5, "sma_20": 100.1})
    snap = cache.get_snapshot("AAPL", "1m")
    assert len(snap.bars) == 1
    assert snap.indicators is not None
    assert snap.indicators.ts == t1
    assert snap.indicators.values == {"rsi_14": 55.5, "sma_20": 100.1}
    assert 0 < shared_redis.ttl(keys.indicators("AAPL", "1m")) <= 60

    assert cache.set_indicators("AAPL", "1m", {"rsi_14": 1.0}, ts=START) is False
    assert cache.get_indicators("AAPL", "1m") == snap.indicators
    t2 = t1 + pd.Timedelta(minutes=1)
    assert cache.set_indicators("AAPL", "1m", {"macd": -0.5}, ts=t2) is True
    latest = cache.get_indicators("AAPL", "1m")
    assert latest is not None
    assert latest.values == {"macd": -0.5}
    assert latest.ts == t2


def test_bar_frames_for_several_symbols_are_split_per_key(cache: Cache) -> None:
    frame = pd.concat([bar_frame(5, "AAPL"), bar_frame(7, "BTC-USD"), bar_frame(2, "BRK.B", "5m")])
    assert cache.write_bars(frame) == 14
    assert len(cache.get_bars("AAPL", "1m")) == 5
    assert len(cache.get_bars("BTC-USD", "1m")) == 7
    assert len(cache.get_bars("BRK.B", "5m")) == 2


def test_a_returned_frame_can_be_edited_without_touching_the_next_read(cache: Cache) -> None:
    cache.write_bars(bar_frame(3))
    first = cache.get_bars("AAPL", "1m")
    first.loc[0, "symbol"] = "ZZZ"
    first.loc[0, "close"] = 1.0
    first["volume"] *= 2
    again = cache.get_bars("AAPL", "1m")
    assert again.loc[0, "symbol"] == "AAPL"
    assert again.loc[0, "close"] != 1.0
    assert again["volume"].iloc[1] == 11.0


# ---- prices, account, positions --------------------------------------------------------------


def test_price_round_trips_with_the_profile_ttl(
    cache: Cache, shared_redis: redis.Redis, keys: Keys
) -> None:
    when = datetime(2024, 1, 2, 15, 0, tzinfo=UTC)
    cache.set_price("AAPL", 187.25, ts=when)
    price = cache.get_price("AAPL")
    assert price is not None
    assert (price.symbol, price.price, price.ts) == ("AAPL", 187.25, when.timestamp())
    ttl = shared_redis.ttl(keys.price("AAPL"))
    assert (
        cache.settings.limits.price_ttl_seconds - 5
        <= ttl
        <= cache.settings.limits.price_ttl_seconds
    )
    assert cache.get_price("MSFT") is None


def test_prices_for_many_symbols_in_one_round_trip_skip_unknown_ones(cache: Cache) -> None:
    cache.set_price("AAPL", 1.5)
    cache.set_price("BTC/USD", 42_000.0)
    got = cache.get_prices(["AAPL", "MSFT", "BTC/USD"])
    # keyed by the canonical spelling, whichever spelling was written or asked for
    assert {s: p.price for s, p in got.items()} == {"AAPL": 1.5, "BTC-USD": 42_000.0}
    assert cache.get_price("btc-usd") == got["BTC-USD"]


def test_account_balance_and_portfolio_value_round_trip(cache: Cache) -> None:
    assert cache.get_account() is None
    cache.set_account(balance=10_000.5, portfolio_value=12_345.0)
    account = cache.get_account()
    assert account is not None
    assert (account.balance, account.portfolio_value) == (10_000.5, 12_345.0)


def test_open_positions_live_in_one_hash(
    cache: Cache, shared_redis: redis.Redis, keys: Keys
) -> None:
    cache.set_position("AAPL", quantity=10, avg_price=180.0, strategy="momentum")
    cache.set_position("TSLA", quantity=-3, avg_price=250.0)
    assert shared_redis.type(keys.positions()) == b"hash"
    positions = cache.get_positions()
    assert list(positions) == ["AAPL", "TSLA"]
    assert positions["AAPL"].side == "long"
    assert positions["AAPL"].strategy == "momentum"
    assert positions["TSLA"].side == "short"
    assert cache.remove_position("AAPL") is True
    assert cache.get_position("AAPL") is None
    assert cache.remove_position("AAPL") is False


def test_positions_use_the_contracts_names_quantity_and_avg_price(
    cache: Cache, shared_redis: redis.Redis, keys: Keys
) -> None:
    cache.set_position("TSLA", quantity=-3, avg_price=250.0)
    stored = json.loads(shared_redis.hget(keys.positions(), "TSLA") or b"{}")
    assert (stored["quantity"], stored["avg_price"]) == (-3, 250.0)
    position = cache.get_position("TSLA")
    assert position is not None
    assert (position.quantity, position.avg_price) == (-3, 250.0)


def test_the_book_is_the_account_the_positions_and_the_prices_asked_and_held(
    cache: Cache,
) -> None:
    empty = cache.get_book(["AAPL"])
    assert (empty.account, empty.positions, empty.prices) == (None, {}, {})
    cache.set_account(balance=9_000.0, portfolio_value=10_000.0)
    cache.set_position("TSLA", quantity=-3, avg_price=250.0)
    cache.set_price("AAPL", 180.0)
    cache.set_price("TSLA", 240.0)
    book = cache.get_book(["aapl", "MSFT"])  # MSFT has no price: left out
    assert book.account == cache.get_account()
    assert book.positions == cache.get_positions()
    assert book.prices == cache.get_prices(["AAPL", "TSLA"])  # TSLA is held, not asked for


def test_the_book_is_written_whole_positions_and_account_together(
    cache: Cache, shared_redis: redis.Redis, keys: Keys
) -> None:
    cache.set_position("TSLA", quantity=-3, avg_price=250.0)
    cache.set_position("MSFT", quantity=2, avg_price=400.0)
    with pytest.raises(ValidationError, match="avg_price"):
        cache.set_book({"AAPL": (10, 0.0)}, balance=1.0, portfolio_value=1.0)
    assert cache.get_account() is None  # nothing of a refused book is written
    cache.set_book(
        {"aapl": (10, 180.0), "TSLA": None, "MSFT": (0, 400.0)},
        balance=9_000.0,
        portfolio_value=10_800.0,
    )
    positions = cache.get_positions()
    assert list(positions) == ["AAPL"]
    assert (positions["AAPL"].quantity, positions["AAPL"].avg_price) == (10, 180.0)
    account = cache.get_account()
    assert account is not None
    assert (account.balance, account.portfolio_value) == (9_000.0, 10_800.0)
    stored = json.loads(shared_redis.hget(keys.positions(), "AAPL") or b"{}")
    assert stored["quantity"] == 10 and stored["strategy"] is None


# ---- signals, policy, trackers, rankings -----------------------------------------------------


def test_hero_signals_list_is_replaced_in_order(cache: Cache) -> None:
    cache.set_hero_signals(["orb_breakout", "vwap_reversion"])
    cache.set_hero_signals(["momentum", "orb_breakout"])
    assert cache.get_hero_signals() == ["momentum", "orb_breakout"]
    cache.set_hero_signals([])
    assert cache.get_hero_signals() == []


def test_policy_profile_is_replaced_whole_with_typed_parameters(cache: Cache) -> None:
    cache.set_policy_profile("Balanced", {"max_position_pct": 0.05, "max_positions": 10})
    cache.set_policy_profile(
        "Conservative", {"max_position_pct": 0.02, "allow_shorts": False, "tif": "day"}
    )
    profile = cache.get_policy_profile()
    assert profile is not None
    assert profile.name == "Conservative"
    assert profile.params == {"max_position_pct": 0.02, "allow_shorts": False, "tif": "day"}


def test_win_rate_and_ic_trackers(cache: Cache) -> None:
    for won in (True, False, True, True):
        cache.record_outcome("orb_breakout", won=won)
    cache.record_outcome("momentum", won=False)
    rates = cache.get_win_rates()
    assert rates["orb_breakout"].wins == 3
    assert rates["orb_breakout"].rate == 0.75
    assert rates["momentum"].rate == 0.0
    cache.set_ic("orb_breakout", ic=0.12, samples=250)
    ics = cache.get_ics()
    assert (ics["orb_breakout"].ic, ics["orb_breakout"].samples) == (0.12, 250)


def test_watchlist_keeps_first_added_order_in_a_sorted_set(
    cache: Cache, shared_redis: redis.Redis, keys: Keys
) -> None:
    assert cache.watch("NVDA", "AAPL") == 2
    assert cache.watch("AAPL", "MSFT") == 1
    assert cache.get_watchlist() == ["NVDA", "AAPL", "MSFT"]
    assert shared_redis.type(keys.watchlist()) == b"zset"
    assert cache.unwatch("AAPL") == 1
    assert cache.get_watchlist() == ["NVDA", "MSFT"]


def test_ranked_candidates_best_first_and_replaced_atomically(cache: Cache) -> None:
    cache.set_candidates({"AAPL": 0.4, "NVDA": 0.9, "AMD": 0.1})
    assert cache.get_candidates() == [("NVDA", 0.9), ("AAPL", 0.4), ("AMD", 0.1)]
    assert cache.get_candidates(top=1) == [("NVDA", 0.9)]
    cache.set_candidates({"TSLA": 0.5})
    assert cache.get_candidates() == [("TSLA", 0.5)]


# ---- bad input: a typed error, nothing written ------------------------------------------------

BAD_SYMBOLS = ["", "AAPL ", "АAPL", "A" * 21, "AA;PL", None, 7]


@pytest.mark.parametrize("symbol", BAD_SYMBOLS)
def test_invalid_symbols_are_rejected_and_nothing_is_written(
    cache: Cache, shared_redis: redis.Redis, namespace: str, symbol: object
) -> None:
    calls: list[Callable[[], object]] = [
        lambda: cache.set_price(symbol, 1.0),  # type: ignore[arg-type]
        lambda: cache.get_price(symbol),  # type: ignore[arg-type]
        lambda: cache.set_position(symbol, quantity=1, avg_price=1.0),  # type: ignore[arg-type]
        lambda: cache.watch("AAPL", symbol),  # type: ignore[arg-type]
        lambda: cache.set_candidates({"AAPL": 1.0, symbol: 2.0}),  # type: ignore[dict-item]
        lambda: cache.append_bar(symbol, "1m", one_bar(START)),  # type: ignore[arg-type]
        lambda: cache.write_bars(bar_frame(2).assign(symbol=symbol)),
        lambda: cache.get_bars(symbol, "1m"),  # type: ignore[arg-type]
    ]
    for call in calls:
        with pytest.raises(SymbolError):
            call()
    assert written(shared_redis, namespace) == []


@pytest.mark.parametrize("price", [math.nan, math.inf, -math.inf, 0.0, -1.0, True, "101.5", None])
def test_bad_prices_are_rejected_and_nothing_is_written(
    cache: Cache, shared_redis: redis.Redis, namespace: str, price: object
) -> None:
    with pytest.raises(ValidationError):
        cache.set_price("AAPL", price)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        cache.append_bar("AAPL", "1m", {**one_bar(START), "close": price})
    with pytest.raises(ValidationError):
        cache.set_position("AAPL", quantity=1, avg_price=price)  # type: ignore[arg-type]
    assert written(shared_redis, namespace) == []


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.write_bars(bar_frame(3).assign(close=[1.0, math.nan, 1.0])),
        lambda c: c.write_bars(bar_frame(3).assign(timeframe="2m")),
        lambda c: c.append_bar("AAPL", "7m", one_bar(START)),
        lambda c: c.append_bar("AAPL", "1m", {**one_bar(START), "colour": "red"}),
        lambda c: c.append_bar("AAPL", "1m", one_bar(START + pd.Timedelta(seconds=30))),
        lambda c: c.append_bar("AAPL", "1m", one_bar(START), indicators={"rsi": math.nan}),
        lambda c: c.append_bar("AAPL", "1m", one_bar(START), indicators={"bad name": 1.0}),
        lambda c: c.set_indicators("AAPL", "1m", {"rsi": 1.0}, ts=datetime(2024, 1, 1)),
        lambda c: c.set_position("AAPL", quantity=0, avg_price=1.0),
        lambda c: c.set_account(balance=math.nan, portfolio_value=1.0),
        lambda c: c.set_policy_profile("Balanced", {"Max-Pos": 1}),
        lambda c: c.set_policy_profile("Balanced", {"max_pos": math.inf}),
        lambda c: c.set_hero_signals(["ok", "has space"]),
        lambda c: c.set_hero_signals(["dup", "dup"]),
        lambda c: c.record_outcome("orb", won=1),
        lambda c: c.set_ic("orb", ic=1.5, samples=3),
        lambda c: c.set_ic("orb", ic=0.1, samples=-1),
        lambda c: c.set_candidates({"AAPL": math.nan}),
    ],
)
def test_malformed_input_raises_a_validation_error_and_writes_nothing(
    cache: Cache, shared_redis: redis.Redis, namespace: str, call: Callable[[Cache], object]
) -> None:
    with pytest.raises(ValidationError):
        call(cache)
    assert written(shared_redis, namespace) == []


def test_a_client_that_decodes_responses_is_refused(
    keys: Keys, settings_factory: Callable[..., Settings]
) -> None:
    client = redis.Redis(decode_responses=True)
    with pytest.raises(ConfigError):
        Cache(client, keys=keys, settings=settings_factory())
    client.close()


def test_a_block_of_another_layout_reads_as_a_miss(
    cache: Cache, shared_redis: redis.Redis, keys: Keys
) -> None:
    shared_redis.set(keys.bars("AAPL", "1m"), b"x" * (BAR_RECORD.itemsize + 3), ex=60)
    assert cache.get_bars("AAPL", "1m").empty
    cache.append_bar("AAPL", "1m", one_bar(START))
    assert len(cache.get_bars("AAPL", "1m")) == 1


def test_the_block_constructor_and_plain_dataframe_build_the_same_frame(
    cache: Cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tradeos_lab.tiers import cache as cache_module

    frame = bar_frame(20)
    frame.loc[[3, 7], "trade_count"] = pd.NA
    frame.loc[[2, 5], "vwap"] = np.nan
    cache.write_bars(frame)
    fast = cache.get_bars("AAPL", "1m")
    assert cache_module._FROM_BLOCKS is not None  # pandas >= 3.0 here
    monkeypatch.setattr(cache_module, "_FROM_BLOCKS", None)
    plain = cache.get_bars("AAPL", "1m")
    pd.testing.assert_frame_equal(fast, plain)
    pd.testing.assert_frame_equal(fast, validate_bars(frame))
    assert fast.dtypes.equals(empty_bars().dtypes)
    for got in (fast, plain):  # every column writable, so a notebook may edit the frame
        got.loc[0, "close"] = 1.0
        got.loc[0, "ts"] = START
        assert got.loc[0, "close"] == 1.0
    pd.testing.assert_frame_equal(cache.get_bars("AAPL", "1m"), validate_bars(frame))


def test_frames_do_not_share_their_column_index(cache: Cache) -> None:
    cache.write_bars(bar_frame(3))
    first = cache.get_bars("AAPL", "1m")
    first.columns.name = "renamed"
    assert cache.get_bars("AAPL", "1m").columns.name is None


# ---- redis errors at the edge ------------------------------------------------------------------


def every_cache_call() -> list[Callable[[Cache], object]]:
    return [
        lambda c: c.set_price("AAPL", 101.5),
        lambda c: c.get_price("AAPL"),
        lambda c: c.get_prices(["AAPL", "MSFT"]),
        lambda c: c.set_account(balance=1.0, portfolio_value=1.0),
        lambda c: c.get_account(),
        lambda c: c.set_position("AAPL", quantity=1, avg_price=1.0),
        lambda c: c.get_positions(),
        lambda c: c.remove_position("AAPL"),
        lambda c: c.set_hero_signals(["rsi_cross"]),
        lambda c: c.set_policy_profile("Balanced", {"max_pos": 1}),
        lambda c: c.record_outcome("rsi_cross", won=True),
        lambda c: c.set_ic("rsi_cross", ic=0.1, samples=3),
        lambda c: c.watch("AAPL"),
        lambda c: c.get_candidates(),
        lambda c: c.write_bars(bar_frame(3)),
        lambda c: c.append_bar("AAPL", "1m", one_bar(START)),
        lambda c: c.set_indicators("AAPL", "1m", {"rsi": 50.0}, ts=START),
        lambda c: c.get_bars("AAPL", "1m"),
        lambda c: c.get_bars("AAPL", "1m", limit=5),
        lambda c: c.get_indicators("AAPL", "1m"),
        lambda c: c.get_snapshot("AAPL", "1m"),
    ]


def test_a_stopped_cache_server_raises_dependency_unavailable_from_every_call(
    redis_server_factory: Callable[..., RedisServerProcess],
    keys: Keys,
    settings_factory: Callable[..., Settings],
) -> None:
    server = redis_server_factory("cache", policy="allkeys-lru", maxmemory="16mb")
    client = redis.Redis.from_url(server.url, socket_connect_timeout=2)
    cache = Cache(client, keys=keys, settings=settings_factory())
    cache.write_bars(bar_frame(3))
    server.stop()
    for call in every_cache_call():
        with pytest.raises(DependencyUnavailable) as caught:
            call(cache)
        assert isinstance(caught.value.__cause__, redis.ConnectionError)
        assert "cache Redis unreachable" in str(caught.value)
    client.close()


def test_bar_reads_through_the_near_cache_raise_dependency_unavailable_when_the_server_stops(
    redis_server_factory: Callable[..., RedisServerProcess],
    keys: Keys,
    settings_factory: Callable[..., Settings],
) -> None:
    server = redis_server_factory("cache", policy="allkeys-lru", maxmemory="16mb")
    client = redis.Redis.from_url(server.url, socket_connect_timeout=2)
    tracked = redis.Redis.from_url(server.url, socket_connect_timeout=2, protocol=3)
    cache = Cache(client, keys=keys, settings=settings_factory(), near_client=tracked)
    assert cache.near is not None
    cache.write_bars(bar_frame(3))
    assert len(cache.get_bars("AAPL", "1m")) == 3  # held in the near cache now
    server.stop()
    for limit in (None, 2):
        with pytest.raises(DependencyUnavailable) as caught:
            cache.get_bars("AAPL", "1m", limit=limit)
        assert isinstance(caught.value.__cause__, redis.ConnectionError)
    client.close()
    tracked.close()


def test_a_key_of_another_type_is_a_store_error_not_a_redis_error(
    cache: Cache, shared_redis: redis.Redis, keys: Keys
) -> None:
    shared_redis.set(keys.positions(), b"not a hash")
    shared_redis.set(keys.indicators("AAPL", "1m"), b"not a hash")
    with pytest.raises(StoreError, match="get_positions"):
        cache.get_positions()
    with pytest.raises(StoreError, match="append_bar"):
        cache.append_bar("AAPL", "1m", one_bar(START), indicators={"rsi": 50.0})
