"""With URLs set, the same code runs against the machine's Redis 7 and PostgreSQL."""

from __future__ import annotations

import pandas as pd

import tradeos_lab as tl
from tradeos_lab.contracts import Audit, new_message
from tradeos_lab.keys import Stream
from tradeos_lab.settings import Settings
from tradeos_lab.status import collect_status


def test_connect_uses_the_servers_and_starts_nothing(server_settings: Settings) -> None:
    with tl.connect(server_settings) as lab:
        assert not lab.owns_stack
        assert lab.records.engine.dialect.name == "postgresql"
        assert sorted(p.name for p in lab.records.profiles()) == [
            "Aggressive",
            "Balanced",
            "Conservative",
        ]
        entry = lab.bus.publish(
            Stream.AUDIT,
            new_message(
                Audit(
                    actor="user:test",
                    action="config.set",
                    target="global",
                    old_value=1,
                    new_value=2,
                    reason="t",
                ),
                producer="test",
            ),
        )
        assert lab.bus.redis.xlen(lab.keys.stream(Stream.AUDIT)) == 1
        assert entry
        lab.cache.set_price("AAPL", 187.5)
        assert lab.cache.get_price("AAPL").price == 187.5  # type: ignore[union-attr]
        bar = {"open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "volume": 10.0}
        minute = pd.Timestamp("2024-01-02 14:30", tz="UTC")
        lab.cache.append_bar("AAPL", "1m", {**bar, "ts": minute})
        assert len(lab.cache.get_bars("AAPL", "1m")) == 1
        lab.cache.append_bar("AAPL", "1m", {**bar, "ts": minute + pd.Timedelta(minutes=1)})
        assert len(lab.cache.get_bars("AAPL", "1m")) == 2  # the near cache saw the write
        assert len(lab.cache.get_bars("AAPL", "1m")) == 2
        assert lab.cache.near is not None and lab.cache.near.stats()["hits"] == 1
        assert lab.lake.query("SELECT 1 AS one")["one"].iloc[0] == 1
        ts = pd.Timestamp.now(tz="UTC").floor("1D") - pd.Timedelta(days=1)
        lab.lake.write_bars(
            pd.DataFrame(
                {
                    "symbol": ["AAPL"],
                    "timeframe": ["1d"],
                    "ts": [ts],
                    "open": [1.0],
                    "high": [2.0],
                    "low": [0.5],
                    "close": [1.5],
                    "volume": [10.0],
                }
            )
        )
        assert len(lab.lake.read_bars("AAPL", "1d")) == 1
    assert not (server_settings.data_dir / "runtime.json").exists()


def test_status_flags_tiers_whose_server_policy_is_wrong(server_settings: Settings) -> None:
    report = collect_status(server_settings)
    states = {p.part: p for p in report.parts}
    assert states["bus"].state == "up"  # the machine's Redis runs noeviction, right for the bus
    assert states["cache"].state == "degraded"
    assert "wants allkeys-lru" in states["cache"].detail
    assert states["flags"].state == "degraded"
    assert states["records"].state == "up"
    assert "postgresql" in states["records"].detail
    assert report.ok, "degraded is reported but is not down"
