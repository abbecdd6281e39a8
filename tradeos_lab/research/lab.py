"""`lab.research`: backtests, sweeps and walk-forwards of a connected lab, kept in its records."""

from __future__ import annotations

import getpass
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import pandas as pd

from tradeos_lab.errors import ValidationError
from tradeos_lab.research.backtest import BacktestProfile, BacktestResult, backtest
from tradeos_lab.research.runs import RunRecord, compare_runs, load_run, runs_table

if TYPE_CHECKING:
    from tradeos_lab.lab import Lab
    from tradeos_lab.research.promote import Promotion
    from tradeos_lab.research.sweep import SweepResult, WalkForwardResult
    from tradeos_lab.settings import Settings
    from tradeos_lab.stores.records import RecordsStore


class Research:
    """The research functions with the lab's records: every run is kept, and listed, loaded and
    compared from there. The records open on first use."""

    def __init__(
        self, records: Callable[[], RecordsStore], settings: Settings, lab: Lab | None = None
    ) -> None:
        self._records = records
        self.settings = settings
        self._lab = lab

    @property
    def records(self) -> RecordsStore:
        return self._records()

    def profile(self, policy: str) -> BacktestProfile:
        """Costs and sizing of the named policy profile with the paper broker's fees."""
        return BacktestProfile.from_records(self.records, policy)

    def backtest(self, strategy: Any, bars: Any, **options: Any) -> BacktestResult:
        """`tradeos_lab.research.backtest`, recorded; `result.run_id` names the run."""
        return backtest(strategy, bars, records=self.records, **options)

    def sweep(self, strategy: Any, bars: Any, **options: Any) -> SweepResult:
        """`tradeos_lab.research.sweep`, recorded, on the settings' Dask scheduler or
        `research_workers` local processes unless the call says otherwise."""
        from tradeos_lab.research.sweep import sweep

        options.setdefault("scheduler", self.settings.research_scheduler)
        options.setdefault("workers", self.settings.research_workers)
        return sweep(strategy, bars, records=self.records, **options)

    def walk_forward(self, strategy: Any, bars: Any, **options: Any) -> WalkForwardResult:
        """`tradeos_lab.research.walk_forward`, recorded, where the sweeps run."""
        from tradeos_lab.research.sweep import walk_forward

        options.setdefault("scheduler", self.settings.research_scheduler)
        options.setdefault("workers", self.settings.research_workers)
        return walk_forward(strategy, bars, records=self.records, **options)

    def runs(
        self, *, strategy: str | None = None, kind: str | None = None, limit: int = 100
    ) -> pd.DataFrame:
        """The kept runs, newest first: id, what ran, range and metrics."""
        return runs_table(self.records, strategy=strategy, kind=kind, limit=limit)

    def load(self, run_id: uuid.UUID | str) -> RunRecord:
        """One run with its parameters, metrics and equity curve."""
        return load_run(self.records, run_id)

    def compare(self, run_ids: Iterable[uuid.UUID | str]) -> pd.DataFrame:
        """Runs side by side, one row each."""
        return compare_runs(self.records, run_ids)

    def promote(
        self,
        run_id: uuid.UUID | str,
        *,
        reason: str | None = None,
        actor: str | None = None,
    ) -> Promotion:
        """Promote backtest run `run_id` to paper trading: recorded and audited, and traded by
        the pipeline's Signal Engine (the stack's, or `lab.pipeline.start()` here) from its next
        bar (`tradeos_lab.research.promote`)."""
        from tradeos_lab.research.promote import promote

        if self._lab is None:
            raise ValidationError("promote needs a connected lab: tl.connect().research.promote")
        who = actor or f"user:{getpass.getuser()}"
        return promote(self._lab, run_id, actor=who, reason=reason)

    def promoted(self) -> dict[str, dict[str, Any]]:
        """Strategy name -> the backtest run it was last promoted from."""
        from tradeos_lab.research.promote import promoted

        return promoted(self.records)
