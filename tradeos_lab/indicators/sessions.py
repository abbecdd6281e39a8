"""Trading sessions from a maintained market calendar, for the session-based indicators.

A session is the half-open interval [open, close) of one trading day of `exchange_calendars`:
"24/7" (crypto) gives one session per UTC day, "XNYS" the NYSE's regular hours with its
holidays and early closes. A bar belongs to the session its open time `ts` falls into; a bar
outside every session (pre-market, a holiday) belongs to none. Lunch breaks are not modelled:
a session runs from its open to its close.
"""

from __future__ import annotations

import bisect
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

import numba
import numpy as np

from tradeos_lab.errors import ValidationError

#: The first day every calendar is loaded from; bars before it are refused by name.
CALENDAR_START: Final = "2000-01-01"


@dataclass(frozen=True)
class Sessions:
    """The sessions of one calendar as sorted epoch-nanosecond arrays (and lists for bisect)."""

    calendar: str
    opens: np.ndarray
    closes: np.ndarray
    open_list: list[int]
    close_list: list[int]

    def locate(self, ts: int) -> tuple[int, int] | None:
        """(open, close) of the session holding epoch-ns `ts`, or None outside every session."""
        self._check_range(ts)
        i = bisect.bisect_right(self.open_list, ts) - 1
        if i >= 0 and ts < self.close_list[i]:
            return self.open_list[i], self.close_list[i]
        return None

    def index(self, ts: np.ndarray) -> np.ndarray:
        """Session number of every epoch-ns stamp in `ts`, sorted ascending (-1 outside every
        session): one merge pass over the stamps and the sessions."""
        if not len(ts):
            return np.empty(0, dtype=np.int64)
        self.check_span(ts)
        return _merge_sessions(ts, self.opens, self.closes)

    def check_span(self, ts: np.ndarray, unit: int = 1) -> None:
        """`ValidationError` unless sorted epoch `ts` (`unit` ns each) lie within the
        calendar's range."""
        if len(ts):
            self._check_range(int(ts[0]) * unit)
            self._check_range(int(ts[-1]) * unit)

    def _check_range(self, ts: int) -> None:
        if ts < self.open_list[0] or ts >= self.close_list[-1]:
            raise ValidationError(
                f"bar time {np.datetime64(ts, 'ns')} is outside the {self.calendar} calendar "
                f"({np.datetime64(self.open_list[0], 'ns')} .. "
                f"{np.datetime64(self.close_list[-1], 'ns')})"
            )


@numba.njit(cache=True)
def session_at(ts: int, opens: np.ndarray) -> int:
    """Index of the last session opening at or before `ts` (0 if none): where a merge starts."""
    return max(int(np.searchsorted(opens, ts, side="right")) - 1, 0)


@numba.njit(cache=True)
def _merge_sessions(ts: np.ndarray, opens: np.ndarray, closes: np.ndarray) -> np.ndarray:
    out = np.empty(len(ts), dtype=np.int64)
    k = session_at(ts[0], opens)
    last = len(opens) - 1
    for i in range(len(ts)):
        t = ts[i]
        while k < last and opens[k + 1] <= t:
            k += 1
        out[i] = k if opens[k] <= t < closes[k] else -1
    return out


def check_calendar(name: object) -> str:
    """The calendar name if `exchange_calendars` knows it, else a `ValidationError`."""
    import exchange_calendars as xcals

    if not isinstance(name, str) or name not in xcals.get_calendar_names(include_aliases=True):
        raise ValidationError(f"unknown market calendar {name!r} (e.g. '24/7', 'XNYS')")
    return name


@lru_cache(maxsize=16)
def sessions(calendar: str) -> Sessions:
    """The sessions of `calendar` from `CALENDAR_START` to the calendar's default end."""
    import exchange_calendars as xcals

    check_calendar(calendar)
    with warnings.catch_warnings():
        # exchange_calendars 4.13 reads Series.values on tz-aware times, which pandas 3.1
        # deprecates; the values it gets are still right (UTC) and the warning is not ours.
        warnings.filterwarnings("ignore", message="Series.values returning an ndarray")
        schedule = xcals.get_calendar(calendar, start=CALENDAR_START).schedule
    opens = schedule["open"].array.asi8.astype(np.int64)
    closes = schedule["close"].array.asi8.astype(np.int64)
    return Sessions(calendar, opens, closes, opens.tolist(), closes.tolist())
