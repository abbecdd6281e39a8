"""Regenerates `sample_5m_xnys.csv`: two weeks of 5-minute bars in NYSE regular hours.

The bars are synthetic (`SyntheticProvider`, seed 1987), cut to the XNYS sessions of
2025-10-01..2025-10-21 (holidays and early closes from `exchange_calendars`) and rounded like a
real feed, so the parity tests run on equity-shaped data with session boundaries and gaps.

    PYTHONPATH=$PWD python tests/strategies/data/make_sample.py
"""

from __future__ import annotations

from pathlib import Path

import exchange_calendars as xcals
import numpy as np

from tradeos_lab.providers import SyntheticProvider

OUT = Path(__file__).with_name("sample_5m_xnys.csv")


def main() -> None:
    schedule = xcals.get_calendar("XNYS", start="2025-01-01").schedule.loc[
        "2025-10-01":"2025-10-21"
    ]
    provider = SyntheticProvider(
        seed=1987, annual_volatility=0.25, base_price=420.0, gap_rate=0.003, outage_rate=0.0
    )
    bars = provider.fetch_bars("SAMPLE", "5m", schedule.open.iloc[0], schedule.close.iloc[-1])
    inside = np.zeros(len(bars), dtype=bool)
    for open_, close in zip(schedule.open, schedule.close, strict=True):
        inside |= ((bars.ts >= open_) & (bars.ts < close)).to_numpy()
    bars = bars[inside].copy()
    bars["volume"] = (bars["volume"] * 1000).round()
    bars = bars.round({"open": 4, "high": 4, "low": 4, "close": 4, "vwap": 4})
    bars["ts"] = bars["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    columns = ["ts", "open", "high", "low", "close", "volume", "vwap", "trade_count"]
    bars[columns].to_csv(OUT, index=False)


if __name__ == "__main__":
    main()
