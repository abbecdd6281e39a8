"""Replay bars from a CSV or Parquet file, e.g. an export from another tool or a saved session.

Column names are matched case-insensitively with common variants (`timestamp`, `date`, `time`
for `ts`; `o`/`h`/`l`/`c`/`v`; `vw`; `n`/`trades`), so exports from most tools load unchanged.
A file without a `symbol` or `timeframe` column needs them given to the constructor. The whole
file passes the bar gate once, on first use, and is read again only when it changes.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pandas as pd

from tradeos_lab.bars import BAR_COLUMNS, validate_bars
from tradeos_lab.errors import ProviderError, ValidationError
from tradeos_lab.providers.base import BarRequest, TimeLike, finish
from tradeos_lab.symbols import Timeframe, validate_symbol

ALIASES = {
    "symbol": ("symbol", "ticker", "product_id", "instrument", "pair"),
    "timeframe": ("timeframe", "interval", "resolution", "granularity"),
    "ts": ("ts", "timestamp", "time", "date", "datetime", "open_time", "t", "time_utc"),
    "open": ("open", "o"),
    "high": ("high", "h"),
    "low": ("low", "l"),
    "close": ("close", "c"),
    "volume": ("volume", "v", "vol"),
    "vwap": ("vwap", "vw"),
    "trade_count": ("trade_count", "trades", "n", "count", "num_trades"),
}
CSV_SUFFIXES = (".csv", ".csv.gz", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")


def _kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    raise ValidationError(
        f"{path.name}: unknown bar file type; use {', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES)}"
    )


def normalise_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Rename known header variants to the bar frame's names; raise on an ambiguous header."""
    lookup = {str(c).strip().lower(): c for c in frame.columns}
    renames: dict[object, str] = {}
    for name, variants in ALIASES.items():
        found = [lookup[v] for v in variants if v in lookup]
        if len(found) > 1:
            raise ValidationError(f"columns {found} all look like {name!r}; keep one")
        if found:
            renames[found[0]] = name
    return frame.rename(columns=renames)


def _timestamps(values: pd.Series) -> pd.Series:
    """Parse ISO strings, dates or epoch numbers (seconds, or milliseconds when that large)."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        if values.abs().max() > 10**11:
            return pd.to_datetime(values, unit="ms", utc=True)
        return pd.to_datetime(values, unit="s", utc=True)
    return pd.to_datetime(values, utc=True, format="mixed")


def read_bar_file(
    path: str | Path, *, symbol: str | None = None, timeframe: Timeframe | str | None = None
) -> pd.DataFrame:
    """Load a CSV or Parquet file into a validated bar frame."""
    path = Path(path)
    kind = _kind(path)
    if not path.is_file():
        raise ProviderError(f"bar file {path} does not exist")
    try:
        raw = pd.read_csv(path) if kind == "csv" else pd.read_parquet(path)
    except (OSError, ValueError) as e:
        raise ValidationError(f"{path.name} cannot be read as {kind}: {e}") from e
    frame = normalise_columns(raw)
    if "symbol" not in frame.columns and symbol is not None:
        frame["symbol"] = validate_symbol(symbol)
    if "timeframe" not in frame.columns and timeframe is not None:
        frame["timeframe"] = Timeframe.parse(timeframe).value
    missing = [c for c in BAR_COLUMNS[:8] if c not in frame.columns]
    if missing:
        hint = (
            " (pass symbol=/timeframe= for a one-series file)"
            if {"symbol", "timeframe"} & {*missing}
            else ""
        )
        raise ValidationError(f"{path.name} lacks columns {missing}{hint}")
    try:
        frame["ts"] = _timestamps(frame["ts"])
    except (ValueError, TypeError) as e:
        raise ValidationError(f"{path.name} has unparseable timestamps: {e}") from e
    try:
        return validate_bars(frame)
    except ValidationError as e:
        raise ValidationError(f"{path.name}: {e}") from e


def save_bars(bars: pd.DataFrame, path: str | Path) -> Path:
    """Write a bar frame to CSV or Parquet (by suffix) so it can be replayed later."""
    path = Path(path)
    kind = _kind(path)
    frame = validate_bars(bars)
    if kind == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


class FileReplayProvider:
    """Serves the bars of one file; raises for a symbol or timeframe the file does not hold."""

    name = "file"

    def __init__(
        self,
        path: str | Path,
        *,
        symbol: str | None = None,
        timeframe: Timeframe | str | None = None,
    ) -> None:
        self.path = Path(path)
        _kind(self.path)
        self._symbol = validate_symbol(symbol) if symbol is not None else None
        self._timeframe = Timeframe.parse(timeframe) if timeframe is not None else None
        self._bars: pd.DataFrame | None = None
        self._stamp: tuple[float, int] | None = None
        self._lock = threading.Lock()

    def bars(self) -> pd.DataFrame:
        """Every bar in the file, validated; re-read when the file's mtime or size changes."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            raise ProviderError(f"bar file {self.path} does not exist") from None
        stamp = (stat.st_mtime, stat.st_size)
        with self._lock:
            if self._bars is None or stamp != self._stamp:
                self._bars = read_bar_file(
                    self.path, symbol=self._symbol, timeframe=self._timeframe
                )
                self._stamp = stamp
            return self._bars

    def fetch_bars(
        self, symbol: str, timeframe: Timeframe | str, start: TimeLike, end: TimeLike
    ) -> pd.DataFrame:
        """Bars opening in [start, end); empty when the file holds the series but not the range."""
        request = BarRequest(symbol, timeframe, start, end)
        bars = self.bars()
        series = bars.loc[
            (bars["symbol"] == request.symbol) & (bars["timeframe"] == request.timeframe.value)
        ]
        if series.empty:
            held = sorted(
                f"{s} {t}"
                for s, t in bars[["symbol", "timeframe"]].drop_duplicates().itertuples(index=False)
            )
            shown = ", ".join(held[:10]) + (" ..." if len(held) > 10 else "")
            raise ProviderError(
                f"{self.path.name} holds no {request.symbol} {request.timeframe.value} bars "
                f"(it holds: {shown or 'nothing'})"
            )
        return finish(series, request, self.path.name)

    def __repr__(self) -> str:
        return f"FileReplayProvider({str(self.path)!r})"
