"""The records database (seed 000, layer 4): SQLAlchemy 2 models, Alembic migrations, one store."""

from tradeos_lab.stores.records.models import (
    BacktestRun,
    Base,
    ConfigChange,
    Fill,
    Order,
    PolicyProfile,
    PositionSnapshot,
    SignalOutcome,
    SystemConfig,
    Trade,
)
from tradeos_lab.stores.records.store import (
    Attribution,
    Position,
    RecordsStore,
    create_records_engine,
)
from tradeos_lab.stores.records.timescale import (
    enable_timescaledb,
    timescaledb_available,
    timescaledb_installed,
)

__all__ = [
    "Attribution",
    "BacktestRun",
    "Base",
    "ConfigChange",
    "Fill",
    "Order",
    "PolicyProfile",
    "Position",
    "PositionSnapshot",
    "RecordsStore",
    "SignalOutcome",
    "SystemConfig",
    "Trade",
    "create_records_engine",
    "enable_timescaledb",
    "timescaledb_available",
    "timescaledb_installed",
]
