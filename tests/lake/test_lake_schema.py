"""Tier tables and retention: a table per tier, each with the TTL its setting gives it."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import pandas as pd
from lake_helpers import make_bars

from tradeos_lab.settings import Settings
from tradeos_lab.stores.lake import TIERS, Lake, bars_table, serve_gateway

NOW = pd.Timestamp.now(tz="UTC").floor("D")


def test_every_tier_has_a_table_with_the_retention_from_settings(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(
        lake_ttl_1m_days=30, lake_ttl_5m_days=60, lake_ttl_1h_days=400, lake_ttl_1d_days=0
    )
    with Lake.open(settings) as lake:
        tables = set(lake.query("SHOW TABLES")["name"])
        assert {bars_table(tf) for tf in TIERS} | {"gap_ledger"} <= tables
        assert lake.table_ttl("1m") == "ts + toIntervalDay(30)"
        assert lake.table_ttl("5m") == "ts + toIntervalDay(60)"
        assert lake.table_ttl("15m") == "ts + toIntervalDay(60)"
        assert lake.table_ttl("1h") == "ts + toIntervalDay(400)"
        assert lake.table_ttl("1d") == ""


def test_changed_retention_applies_when_the_lake_is_reopened(
    settings_factory: Callable[..., Settings],
) -> None:
    with Lake.open(settings_factory(lake_ttl_1m_days=30)) as lake:
        assert lake.table_ttl("1m") == "ts + toIntervalDay(30)"
    with Lake.open(settings_factory(lake_ttl_1m_days=45, lake_ttl_1d_days=3650)) as lake:
        assert lake.table_ttl("1m") == "ts + toIntervalDay(45)"
        assert lake.table_ttl("1d") == "ts + toIntervalDay(3650)"
    with Lake.open(settings_factory(lake_ttl_1m_days=0)) as lake:
        assert lake.table_ttl("1m") == ""
        assert lake.table_ttl("1d") == ""


def test_the_engine_deletes_bars_past_their_tiers_retention(
    settings_factory: Callable[..., Settings],
) -> None:
    with Lake.open(settings_factory(lake_ttl_1m_days=30)) as lake:
        old = make_bars(start=NOW - pd.Timedelta(days=40), periods=10)
        recent = make_bars(start=NOW - pd.Timedelta(days=10), periods=10)
        rows = pd.concat([old, recent]).drop(columns=["timeframe"]).assign(version=1)
        rows["vwap_volume"] = rows["volume"]
        lake.insert_df("bars_1m", rows)  # straight into the table, past write_bars

        lake.command("OPTIMIZE TABLE bars_1m FINAL")

        assert list(lake.read_bars("AAPL", "1m")["ts"]) == list(recent["ts"])


def test_bars_older_than_a_tiers_retention_go_to_the_coarser_tiers_only_when_written_there(
    settings_factory: Callable[..., Settings],
) -> None:
    with Lake.open(settings_factory(lake_ttl_1m_days=30)) as lake:
        old = make_bars(start=NOW - pd.Timedelta(days=40), periods=120)
        recent = make_bars(start=NOW - pd.Timedelta(days=10), periods=120, seed=1)
        lake.write_bars(pd.concat([old, recent]))

        assert list(lake.read_bars("AAPL", "1m")["ts"]) == list(recent["ts"])
        assert len(lake.read_bars("AAPL", "1h")) == 2

        lake.write_bars(make_bars(start=NOW - pd.Timedelta(days=40), timeframe="1h", periods=24))
        assert len(lake.read_bars("AAPL", "1h")) == 26
        assert len(lake.read_bars("AAPL", "1d")) == 2


def test_bars_survive_closing_and_reopening_the_lake(lake_settings: Settings) -> None:
    bars = make_bars(periods=30)
    with Lake.open(lake_settings) as lake:
        lake.write_bars(bars)

    with Lake.open(lake_settings) as lake:
        assert len(lake.read_bars("AAPL", "1m")) == 30
        assert len(lake.read_bars("AAPL", "5m")) == 6


def test_a_chdb_url_names_the_lake_directory(
    settings_factory: Callable[..., Settings], lake_settings: Settings
) -> None:
    where = lake_settings.data_dir / "elsewhere"
    with Lake.open(settings_factory(lake_url=f"chdb://{where}")) as lake:
        lake.write_bars(make_bars(periods=5))
        assert lake.backend.name == "chdb"
    assert (where / "metadata").is_dir()


def test_a_lake_without_retention_settings_keeps_the_tables_retention(
    settings_factory: Callable[..., Settings],
) -> None:
    with Lake.open(settings_factory(lake_ttl_1m_days=30)) as owner:
        # Same directory, same process: a bare Lake over the owner's backend changes nothing.
        bare = Lake(owner.backend)
        assert bare.table_ttl("1m") == "ts + toIntervalDay(30)"


def test_a_gateway_client_works_by_the_owners_retention(
    settings_factory: Callable[..., Settings],
) -> None:
    token = secrets.token_urlsafe(24)
    with Lake.open(settings_factory(lake_ttl_1m_days=30)) as owner:
        server = serve_gateway(owner, token)
        try:
            client = Lake.over_gateway(server.url, token)
            old = make_bars(start=NOW - pd.Timedelta(days=40), periods=60)
            recent = make_bars(start=NOW - pd.Timedelta(days=10), periods=60)
            client.write_bars(pd.concat([old, recent]))

            assert list(owner.read_bars("AAPL", "1m")["ts"]) == list(recent["ts"])
            assert len(owner.read_bars("AAPL", "1h")) == 1
            client.close()
        finally:
            server.shutdown()
