"""Run records: every backtest, sweep and walk-forward kept in the records' backtest runs.

A run keeps what is needed to reproduce and trust it: the strategy's name, parameters and a hash
of its code, the data source, range and a hash of the bars, the package version and vectorbt
engine, the costs and stops, the metrics and the equity curve. Its id is a UUID that later
records (an intent of a promoted strategy) can reference.
"""

from __future__ import annotations

import importlib.metadata
import io
import math
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from tradeos_lab.errors import ValidationError
from tradeos_lab.research.backtest import METRICS
from tradeos_lab.strategies.base import Strategy, strategy_hash

if TYPE_CHECKING:
    from tradeos_lab.research.backtest import BacktestResult
    from tradeos_lab.research.market import BarSet
    from tradeos_lab.stores.records import BacktestRun, RecordsStore


def package_version() -> str:
    """What ran, as `code_version`: tradeos-lab's and vectorbt's versions."""
    ours = importlib.metadata.version("tradeos-lab")
    return f"tradeos-lab=={ours};vectorbt=={importlib.metadata.version('vectorbt')}"


def _jsonable(value: float) -> float | None:
    """A metric for JSON: NaN (undefined, e.g. the win rate without trades) becomes null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def metrics_json(metrics: dict[str, float]) -> dict[str, float | None]:
    return {k: _jsonable(float(metrics[k])) for k in METRICS}


def equity_bytes(equity: pd.Series) -> bytes:
    """An equity curve as Parquet bytes (ts, equity)."""
    buffer = io.BytesIO()
    frame = pd.DataFrame({"ts": equity.index, "equity": equity.to_numpy()})
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def equity_series(data: bytes) -> pd.Series:
    frame = pd.read_parquet(io.BytesIO(data))
    return pd.Series(frame["equity"].to_numpy(), index=pd.DatetimeIndex(frame["ts"]), name="equity")


def start_run(
    records: RecordsStore,
    *,
    kind: str,
    strategy: type[Strategy[Any]],
    parameters: dict[str, Any],
    barset: BarSet,
    engine: str,
) -> uuid.UUID:
    """Record a run as started; `finish_backtest` closes it with results or an error."""
    return records.start_backtest(
        strategy=strategy.name,
        parameters={
            **parameters,
            "symbols": list(barset.symbols),
            "timeframe": barset.timeframe.value if barset.timeframe else None,
        },
        data_start=barset.start.to_pydatetime(),
        data_end=barset.end.to_pydatetime(),
        data_hash=barset.data_hash,
        code_version=package_version(),
        kind=kind,
        strategy_hash=strategy_hash(strategy),
        data_source=barset.source[:256],
        engine=engine,
    )


def record_backtest(records: RecordsStore, result: BacktestResult) -> uuid.UUID:
    """Keep a finished backtest in the records; returns its run id."""
    run_id = start_run(
        records,
        kind="backtest",
        strategy=type(result.strategy),
        parameters={
            "strategy": result.strategy.params.model_dump(mode="json"),
            "profile": result.profile.to_dict(),
            "stops": result.stops.to_dict(),
        },
        barset=result.barset,
        engine=result.engine,
    )
    records.finish_backtest(
        run_id,
        results={"metrics": metrics_json(result.metrics)},
        equity_curve=equity_bytes(result.equity),
    )
    return run_id


@dataclass(frozen=True)
class RunRecord:
    """A kept run as a notebook reads it: what ran, its metrics, its equity curve."""

    id: uuid.UUID
    kind: str
    strategy: str
    state: str
    parameters: dict[str, Any]
    results: dict[str, Any] | None
    metrics: dict[str, float | None]
    data_start: datetime
    data_end: datetime
    data_hash: str
    data_source: str | None
    strategy_hash: str | None
    code_version: str
    engine: str | None
    created_at: datetime
    equity: pd.Series | None

    @classmethod
    def of(cls, run: BacktestRun, equity: bytes | None = None) -> RunRecord:
        results = run.results or {}
        return cls(
            id=run.id,
            kind=run.kind,
            strategy=run.strategy,
            state=run.state,
            parameters=run.parameters,
            results=run.results,
            metrics=dict(results.get("metrics") or {}),
            data_start=run.data_start,
            data_end=run.data_end,
            data_hash=run.data_hash,
            data_source=run.data_source,
            strategy_hash=run.strategy_hash,
            code_version=run.code_version,
            engine=run.engine,
            created_at=run.created_at,
            equity=None if equity is None else equity_series(equity),
        )

    def row(self) -> dict[str, Any]:
        """One row of a runs table: id, kind, strategy, its parameters, range, metrics."""
        params = self.parameters.get("strategy") or {}
        return {
            "run_id": str(self.id),
            "kind": self.kind,
            "strategy": self.strategy,
            "state": self.state,
            "parameters": ", ".join(f"{k}={v}" for k, v in params.items()),
            "symbols": ",".join(self.parameters.get("symbols") or []),
            "timeframe": self.parameters.get("timeframe"),
            "data_start": self.data_start,
            "data_end": self.data_end,
            "created_at": self.created_at,
            **{m: self.metrics.get(m) for m in METRICS},
        }


def runs_table(records: RecordsStore, **filters: Any) -> pd.DataFrame:
    """The kept runs, newest first, one row each (see `RunRecord.row`)."""
    rows = [RunRecord.of(run).row() for run in records.backtests(**filters)]
    return pd.DataFrame(rows, columns=None if rows else ["run_id", "kind", "strategy", *METRICS])


def load_run(records: RecordsStore, run_id: uuid.UUID | str) -> RunRecord:
    key = _run_id(run_id)
    return RunRecord.of(records.backtest(key), records.backtest_equity(key))


def compare_runs(records: RecordsStore, run_ids: Iterable[uuid.UUID | str]) -> pd.DataFrame:
    """The runs side by side: one row per run (in the order given), metrics as columns."""
    ids = [_run_id(r) for r in run_ids]
    if not ids:
        raise ValidationError("name at least one run to compare")
    rows = [RunRecord.of(records.backtest(r)).row() for r in ids]
    return pd.DataFrame(rows).set_index("run_id")


def _run_id(value: uuid.UUID | str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise ValidationError(f"{value!r} is not a run id (a UUID)") from None
