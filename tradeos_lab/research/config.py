"""A backtest or sweep described in a TOML file (what `tradeos-lab backtest CONFIG.toml` runs).

strategy = "sma_cross"              # a registered name, module:Class or path.py:Class

[parameters]                        # a list of values makes it a sweep
fast = [5, 10, 20]
slow = 50

[bars]
source = "file"                     # file (path) or lake
path = "bars.csv"
symbols = ["AAPL"]
timeframe = "1d"
start = "2020-01-01"                # optional, as is end

[profile]                           # optional: a policy profile's name, or costs
fee_bps = 10
slippage_bps = 5

[stops]                             # optional
stop_loss = 0.02

[sweep]                             # optional
workers = 2
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from tradeos_lab.errors import ValidationError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BarsSection(_Section):
    source: Literal["file", "lake"] = "file"
    path: Path | None = None
    symbols: list[str] = Field(default_factory=list)
    timeframe: str | None = None
    start: str | None = None
    end: str | None = None


class ProfileSection(_Section):
    policy: str | None = None
    fee_bps: float | None = None
    slippage_bps: float | None = None
    position_pct: float | None = None
    init_cash: float | None = None


class StopsSection(_Section):
    stop_loss: float | None = None
    take_profit: float | None = None
    trailing: bool = False


class SweepSection(_Section):
    workers: int = Field(default=1, ge=1)
    chunk_cells: int | None = Field(default=None, ge=1)
    scheduler: str | None = None


class BacktestConfig(_Section):
    """One run: a backtest when every parameter has one value, a sweep when any has a list."""

    strategy: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    bars: BarsSection
    profile: ProfileSection = ProfileSection()
    stops: StopsSection = StopsSection()
    sweep: SweepSection = SweepSection()

    @property
    def is_sweep(self) -> bool:
        return any(isinstance(v, list) for v in self.parameters.values())

    @classmethod
    def load(cls, path: Path) -> BacktestConfig:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise ValidationError(f"cannot read {path}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise ValidationError(f"{path} is not TOML: {e}") from None
        try:
            config = cls.model_validate(data)
        except pydantic.ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
            )
            raise ValidationError(f"{path}: {problems}") from None
        if config.bars.source == "file" and config.bars.path is None:
            raise ValidationError(f"{path}: bars.path is needed for source = 'file'")
        if config.bars.path is not None and not config.bars.path.is_absolute():
            config = config.model_copy(
                update={
                    "bars": config.bars.model_copy(update={"path": path.parent / config.bars.path})
                }
            )
        return config
