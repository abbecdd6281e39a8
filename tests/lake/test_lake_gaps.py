"""Gap detection per symbol and timeframe, and the ledger that keeps gaps until they are filled."""

from __future__ import annotations

import pandas as pd
from lake_helpers import ANCHOR, make_bars

from tradeos_lab.stores.lake import Lake

MIN = pd.Timedelta(minutes=1)


def runs(frame: pd.DataFrame) -> list[tuple[pd.Timestamp, pd.Timestamp, int]]:
    return [(r.gap_start, r.gap_end, int(r.missing_bars)) for r in frame.itertuples(index=False)]


def holey_minutes() -> pd.DataFrame:
    """An hour of minutes without 00:10-00:14 and 00:30."""
    bars = make_bars(periods=60)
    minute = (bars["ts"] - ANCHOR) // MIN
    return bars[~(minute.between(10, 14) | (minute == 30))]


def test_gaps_lists_each_missing_run_with_its_size(any_lake: Lake) -> None:
    any_lake.write_bars(holey_minutes())

    found = any_lake.gaps("AAPL", "1m", ANCHOR - 5 * MIN, ANCHOR + 65 * MIN)

    assert list(found.columns) == ["gap_start", "gap_end", "missing_bars"]
    assert runs(found) == [
        (ANCHOR - 5 * MIN, ANCHOR, 5),
        (ANCHOR + 10 * MIN, ANCHOR + 15 * MIN, 5),
        (ANCHOR + 30 * MIN, ANCHOR + 31 * MIN, 1),
        (ANCHOR + 60 * MIN, ANCHOR + 65 * MIN, 5),
    ]


def test_a_complete_range_has_no_gaps_and_an_empty_one_is_one_gap(any_lake: Lake) -> None:
    any_lake.write_bars(make_bars(periods=30))

    assert any_lake.gaps("AAPL", "1m", ANCHOR, ANCHOR + 30 * MIN).empty
    assert runs(any_lake.gaps("MSFT", "5m", ANCHOR, ANCHOR + 60 * MIN)) == [
        (ANCHOR, ANCHOR + 60 * MIN, 12)
    ]


def test_bounds_off_the_grid_count_only_whole_bars_inside_the_range(lake: Lake) -> None:
    lake.write_bars(make_bars(periods=10))
    second = pd.Timedelta(seconds=1)

    found = lake.gaps("AAPL", "1m", ANCHOR + 10 * MIN + 30 * second, ANCHOR + 13 * MIN + second)

    assert runs(found) == [(ANCHOR + 11 * MIN, ANCHOR + 14 * MIN, 3)]


def test_a_missing_hour_of_minutes_is_a_gap_in_the_rolled_up_hours(lake: Lake) -> None:
    bars = make_bars(periods=180)
    lake.write_bars(bars[(bars["ts"] < ANCHOR + 60 * MIN) | (bars["ts"] >= ANCHOR + 120 * MIN)])

    hour = pd.Timedelta(hours=1)
    assert runs(lake.gaps("AAPL", "1h", ANCHOR, ANCHOR + 3 * hour)) == [
        (ANCHOR + hour, ANCHOR + 2 * hour, 1)
    ]


def test_recorded_gaps_stay_open_until_the_missing_bars_arrive(any_lake: Lake) -> None:
    full = make_bars(periods=60)
    any_lake.write_bars(holey_minutes())

    recorded = any_lake.record_gaps("AAPL", "1m", ANCHOR, ANCHOR + 60 * MIN)
    ledger = any_lake.gap_ledger("AAPL", "1m")
    assert len(recorded) == 2
    assert runs(ledger) == runs(recorded)
    assert ledger["filled_at"].isna().all()

    # Fill the five-minute hole; the one-minute hole stays open.
    minute = (full["ts"] - ANCHOR) // MIN
    any_lake.write_bars(full[minute.between(10, 14)])

    ledger = any_lake.gap_ledger("AAPL", "1m")
    assert ledger["filled_at"].notna().tolist() == [True, False]
    assert runs(any_lake.gap_ledger(open_only=True)) == [(ANCHOR + 30 * MIN, ANCHOR + 31 * MIN, 1)]


def test_refreshing_the_ledger_closes_gaps_filled_by_any_tier(lake: Lake) -> None:
    bars = make_bars(periods=120)
    lake.write_bars(bars[bars["ts"] < ANCHOR + 60 * MIN])
    lake.record_gaps("AAPL", "1h", ANCHOR, ANCHOR + pd.Timedelta(hours=2))
    assert len(lake.gap_ledger(open_only=True)) == 1

    # The second hour of minutes rolls up into the missing 1h bar and closes its gap.
    lake.write_bars(bars[bars["ts"] >= ANCHOR + 60 * MIN])

    assert lake.gap_ledger(open_only=True).empty
    assert lake.refresh_gap_ledger() == 0
    assert lake.gap_ledger("AAPL", "1h")["filled_at"].notna().all()


def test_recording_the_same_gap_twice_keeps_one_ledger_row(lake: Lake) -> None:
    lake.write_bars(holey_minutes())
    lake.record_gaps("AAPL", "1m", ANCHOR, ANCHOR + 60 * MIN)
    lake.record_gaps("AAPL", "1m", ANCHOR, ANCHOR + 60 * MIN)

    assert len(lake.gap_ledger()) == 2
