"""Property: whatever order, overlap and corrections writes come in, every tier equals the pandas
rollup of the latest value written for each minute."""

from __future__ import annotations

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lake_helpers import RULES, assert_same_bars, make_bars, pandas_rollup

from tradeos_lab.stores.lake import TIERS, Lake, bars_table

SYMBOLS = ("AAPL", "BTC-USD")
MINUTES = 150

# One write: a symbol, a slice of its minutes, and a volume factor (1.0 replays, else corrects).
writes = st.lists(
    st.tuples(
        st.sampled_from(SYMBOLS),
        st.integers(0, MINUTES - 1),
        st.integers(1, 70),
        st.sampled_from([1.0, 1.0, 2.0, 0.5]),
    ),
    min_size=1,
    max_size=6,
)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(plan=writes)
def test_tiers_equal_the_rollup_of_the_latest_minutes(lake: Lake, plan: list) -> None:
    for tf in TIERS:
        lake.command(f"TRUNCATE TABLE {bars_table(tf)}")
    base = {s: make_bars(s, periods=MINUTES, seed=i) for i, s in enumerate(SYMBOLS)}
    latest: dict[tuple[str, pd.Timestamp], pd.Series] = {}

    for symbol, first, length, factor in plan:
        chunk = base[symbol].iloc[first : first + length].copy()
        chunk["volume"] = (chunk["volume"] * factor).round(2)
        lake.write_bars(chunk)
        for _, row in chunk.iterrows():
            latest[(symbol, row["ts"])] = row

    expected = pd.DataFrame(list(latest.values())).sort_values(["symbol", "ts"])
    expected["trade_count"] = expected["trade_count"].astype("Int64")
    for symbol in expected["symbol"].unique():
        mine = expected[expected["symbol"] == symbol].reset_index(drop=True)
        assert_same_bars(lake.read_bars(symbol, "1m"), mine)
        for tf, rule in RULES.items():
            assert_same_bars(lake.read_bars(symbol, tf), pandas_rollup(mine, rule))
    coverage = lake.coverage()
    assert coverage.loc[coverage["timeframe"] == "1m", "bars"].sum() == len(expected)
