"""The records database (the pipeline's durable layer): SQLAlchemy 2 models, Alembic migrations,
one store."""

from tradeos_lab.stores.records.models import (
    AuditRecord,
    BacktestRun,
    Base,
    ConfigChange,
    Fill,
    IntentRecord,
    LedgerEntry,
    Order,
    OrderEvent,
    PolicyProfile,
    PositionSnapshot,
    RiskEventRecord,
    SignalOutcome,
    SignalRecord,
    SystemConfig,
    Trade,
)
from tradeos_lab.stores.records.order_state import OrderState, OrderUpdate, advance
from tradeos_lab.stores.records.store import (
    Attribution,
    FillTotals,
    PlacedOrder,
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
    "AuditRecord",
    "BacktestRun",
    "Base",
    "ConfigChange",
    "Fill",
    "FillTotals",
    "IntentRecord",
    "LedgerEntry",
    "Order",
    "OrderEvent",
    "OrderState",
    "OrderUpdate",
    "PlacedOrder",
    "PolicyProfile",
    "PositionSnapshot",
    "RecordsStore",
    "RiskEventRecord",
    "SignalOutcome",
    "SignalRecord",
    "SystemConfig",
    "Trade",
    "advance",
    "create_records_engine",
    "enable_timescaledb",
    "timescaledb_available",
    "timescaledb_installed",
]
