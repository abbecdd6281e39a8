"""The durable business records (the pipeline's fourth data layer) as typed SQLAlchemy 2 models.

The schema itself is owned by the Alembic migrations in `migrations/versions/`; these models
mirror it (a test compares them) and are what the store and notebooks query with.

The attribution chain of a trade follows the stream pipeline:
`market_data` message -> `signals.raw` signal -> `signals.modified` signal -> `intents` intent ->
order (`client_order_id`) -> fill (broker `execution_id`), all sharing one `correlation_id`.

Time-series tables (fills, position snapshots, signal outcomes) carry their time column in the
primary key so that TimescaleDB can turn them into hypertables without a schema change.

The messages the pipeline publishes (signals, intents, risk events, audit entries) and every broker
order update are kept here too, keyed by their message or event id: the bus trims its streams,
and the audit trail must outlive that.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    Uuid,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from tradeos_lab.contracts.enums import OrderStatus, TimeInForce
from tradeos_lab.contracts.types import CLIENT_ORDER_ID_MAX_LENGTH
from tradeos_lab.stores.records.sqltypes import BigId, JSONDoc, UTCDateTime

# Deterministic constraint names, so migrations can drop them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ORDER_SIDES = ("buy", "sell")
ORDER_STATUSES = tuple(s.value for s in OrderStatus)
TIMES_IN_FORCE = tuple(t.value for t in TimeInForce)
SIGNAL_STAGES = ("raw", "modified")
MESSAGE_ID_LENGTH = 36  # a canonical UUIDv7
BACKTEST_STATES = ("pending", "running", "succeeded", "failed")
BACKTEST_KINDS = ("backtest", "sweep", "walk_forward")
SIGNAL_OUTCOMES = ("win", "loss", "flat", "unfilled", "expired")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads this class attribute
        datetime: UTCDateTime(),
        dict[str, Any]: JSONDoc,
        uuid.UUID: Uuid(),
        float: Double(),
    }


class Order(Base):
    """An order the Execution stage placed; `client_order_id` is our idempotency key.

    Broker updates move it only through `order_state.advance` (see `RecordsStore.
    apply_order_update`): `broker_updated_at`/`broker_sequence` are those of the last update
    applied, so a late, older update changes nothing.
    """

    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint(_in("side", ORDER_SIDES), name="side"),
        CheckConstraint(_in("status", ORDER_STATUSES), name="status"),
        CheckConstraint(_in("time_in_force", TIMES_IN_FORCE), name="time_in_force"),
        CheckConstraint(
            "filled_quantity >= 0 AND filled_quantity <= quantity", name="filled_quantity"
        ),
        # The working orders of a symbol (the paper broker on each bar) or of a strategy in it
        # (Feasibility's book, each batch) are read by status first: the read costs what the
        # working orders cost, not the whole order history.
        Index("ix_orders_status_symbol_strategy", "status", "symbol", "strategy"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    client_order_id: Mapped[str] = mapped_column(String(CLIENT_ORDER_ID_MAX_LENGTH), unique=True)
    broker_order_id: Mapped[str | None] = mapped_column(String(64))
    intent_id: Mapped[str | None] = mapped_column(String(64))
    correlation_id: Mapped[str | None] = mapped_column(String(64), index=True)
    strategy: Mapped[str | None] = mapped_column(String(64), index=True)
    broker: Mapped[str | None] = mapped_column(String(32))
    symbol: Mapped[str] = mapped_column(String(20))
    side: Mapped[str] = mapped_column(String(4))
    order_type: Mapped[str] = mapped_column(String(16))
    quantity: Mapped[float]
    limit_price: Mapped[float | None]
    stop_price: Mapped[float | None]
    time_in_force: Mapped[str] = mapped_column(String(8), server_default="day")
    status: Mapped[str] = mapped_column(String(16))
    filled_quantity: Mapped[float] = mapped_column(server_default="0")
    avg_price: Mapped[float | None]
    reason: Mapped[str | None] = mapped_column(String(256))
    broker_updated_at: Mapped[datetime | None]
    broker_sequence: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    external: Mapped[bool] = mapped_column(Boolean, server_default=false())
    """Found at the broker by reconciliation, not placed by Execution."""


class OrderEvent(Base):
    """One broker update of an order as it was received, whether or not it moved the order."""

    __tablename__ = "order_events"
    __table_args__ = (CheckConstraint(_in("status", ORDER_STATUSES), name="status"),)

    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    client_order_id: Mapped[str] = mapped_column(
        String(CLIENT_ORDER_ID_MAX_LENGTH), ForeignKey("orders.client_order_id"), index=True
    )
    status: Mapped[str] = mapped_column(String(16))
    filled_quantity: Mapped[float | None]
    avg_price: Mapped[float | None]
    broker_order_id: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(String(256))
    broker_at: Mapped[datetime]
    broker_sequence: Mapped[int | None] = mapped_column(BigInteger)
    received_at: Mapped[datetime]
    applied: Mapped[bool] = mapped_column(Boolean)


class Fill(Base):
    """One broker execution; recorded once per `execution_id` however often it is reported."""

    __tablename__ = "fills"
    __table_args__ = (
        CheckConstraint(_in("side", ORDER_SIDES), name="side"),
        # Dropped when fills becomes a hypertable (unique indexes must include filled_at there);
        # RecordsStore.record_fill checks the execution id itself, so behaviour is the same.
        Index("uq_fills_execution_id", "execution_id", unique=True),
    )

    execution_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    filled_at: Mapped[datetime] = mapped_column(primary_key=True)
    client_order_id: Mapped[str] = mapped_column(
        String(CLIENT_ORDER_ID_MAX_LENGTH), ForeignKey("orders.client_order_id"), index=True
    )
    broker: Mapped[str] = mapped_column(String(32))
    symbol: Mapped[str] = mapped_column(String(20))
    side: Mapped[str] = mapped_column(String(4))
    quantity: Mapped[float]
    price: Mapped[float]
    fee: Mapped[float]
    external: Mapped[bool] = mapped_column(Boolean, server_default=false())
    """Imported from the broker's report by reconciliation, not reported through Execution."""


class LedgerEntry(Base):
    """A fill applied to its strategy's position, once per broker `execution_id`.

    `signed_quantity` is positive for a buy and negative for a sell, so a position is the sum of
    its entries (`RecordsStore.net_quantity`).
    """

    __tablename__ = "position_ledger"
    __table_args__ = (
        CheckConstraint(_in("side", ORDER_SIDES), name="side"),
        Index("ix_position_ledger_symbol_strategy", "symbol", "strategy"),
    )

    execution_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_order_id: Mapped[str] = mapped_column(
        String(CLIENT_ORDER_ID_MAX_LENGTH), ForeignKey("orders.client_order_id")
    )
    strategy: Mapped[str | None] = mapped_column(String(64))
    symbol: Mapped[str] = mapped_column(String(20))
    side: Mapped[str] = mapped_column(String(4))
    quantity: Mapped[float]
    signed_quantity: Mapped[float]
    price: Mapped[float]
    fee: Mapped[float]
    executed_at: Mapped[datetime]


NO_STRATEGY = ""
"""`PositionTotal.strategy` of ledger entries without a strategy (a key column cannot be NULL:
NULLs never collide in a unique key)."""


class PositionTotal(Base):
    """The ledger summed per strategy and symbol, kept by database triggers on
    `position_ledger` (migration 0012), so a position is read in one row however long the
    ledger grows."""

    __tablename__ = "position_totals"

    strategy: Mapped[str] = mapped_column(String(64), primary_key=True)
    """The entries' strategy, `NO_STRATEGY` for entries without one."""
    symbol: Mapped[str] = mapped_column(String(20), primary_key=True)
    quantity: Mapped[float]
    """Sum of `signed_quantity`."""
    entries: Mapped[int] = mapped_column(Integer)
    """How many ledger entries are summed: the row goes when the last one does."""


class FillTotal(Base):
    """A broker's fills summed per symbol (`RecordsStore.fill_totals`), kept by database
    triggers on `fills` (migration 0012), so an account is read in one row per symbol however
    many fills it had."""

    __tablename__ = "fill_totals"

    broker: Mapped[str] = mapped_column(String(32), primary_key=True)
    symbol: Mapped[str] = mapped_column(String(20), primary_key=True)
    quantity: Mapped[float]
    """Bought minus sold."""
    cash_flow: Mapped[float]
    """Proceeds of sells minus cost of buys, before fees."""
    fees: Mapped[float]
    fills: Mapped[int] = mapped_column(Integer)
    """How many fills are summed: the row goes when the last one does."""


class Trade(Base):
    """A filled order with its full attribution chain, so every P&L traces back to its data."""

    __tablename__ = "trades"
    __table_args__ = (CheckConstraint(_in("side", ORDER_SIDES), name="side"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    correlation_id: Mapped[str] = mapped_column(String(64), index=True)
    market_data_message_id: Mapped[str | None] = mapped_column(String(64))
    raw_signal_id: Mapped[str | None] = mapped_column(String(64), index=True)
    modified_signal_id: Mapped[str | None] = mapped_column(String(64))
    intent_id: Mapped[str | None] = mapped_column(String(64))
    client_order_id: Mapped[str] = mapped_column(
        String(CLIENT_ORDER_ID_MAX_LENGTH), ForeignKey("orders.client_order_id"), index=True
    )
    # Not a foreign key: fills may be a hypertable, which cannot be referenced.
    execution_id: Mapped[str] = mapped_column(String(64), unique=True)
    strategy: Mapped[str | None] = mapped_column(String(64))
    symbol: Mapped[str] = mapped_column(String(20))
    side: Mapped[str] = mapped_column(String(4))
    quantity: Mapped[float]
    price: Mapped[float]
    executed_at: Mapped[datetime]


class PositionSnapshot(Base):
    """A position at one instant, as a `PositionUpdate` message reported it; the series of
    snapshots is the P&L history. The fills behind a position are in `LedgerEntry`."""

    __tablename__ = "position_snapshots"

    snapshot_at: Mapped[datetime] = mapped_column(primary_key=True)
    account: Mapped[str] = mapped_column(String(32), primary_key=True)
    symbol: Mapped[str] = mapped_column(String(20), primary_key=True)
    quantity: Mapped[float]
    avg_price: Mapped[float]
    mark_price: Mapped[float | None]
    unrealized_pnl: Mapped[float | None]
    realized_pnl: Mapped[float | None]


class BacktestRun(Base):
    """A backtest job: what ran (parameters, strategy code hash, data source, range and hash,
    package version in `code_version`, engine) and its result (metrics in `results`, the equity
    curve as Parquet bytes). Its id is what later records (an intent of a promoted strategy)
    reference as their research evidence."""

    __tablename__ = "backtest_runs"
    __table_args__ = (
        CheckConstraint(_in("state", BACKTEST_STATES), name="state"),
        CheckConstraint(_in("kind", BACKTEST_KINDS), name="kind"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    strategy: Mapped[str] = mapped_column(String(128), index=True)
    state: Mapped[str] = mapped_column(String(16))
    parameters: Mapped[dict[str, Any]]
    results: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)
    data_start: Mapped[datetime]
    data_end: Mapped[datetime]
    data_hash: Mapped[str] = mapped_column(String(128))
    code_version: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    kind: Mapped[str] = mapped_column(String(16), server_default="backtest")
    strategy_hash: Mapped[str | None] = mapped_column(String(64))
    data_source: Mapped[str | None] = mapped_column(String(256))
    engine: Mapped[str | None] = mapped_column(String(16))
    equity_curve: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)


class _ProfileLimits:
    """The limits and rules a policy profile and each of its versions hold."""

    description: Mapped[str] = mapped_column(Text)
    max_position_pct: Mapped[float]
    max_daily_loss_pct: Mapped[float]
    max_leverage: Mapped[float]
    risk_per_trade_pct: Mapped[float]
    max_open_positions: Mapped[int]
    max_drawdown_pct: Mapped[float]
    min_signal_confidence: Mapped[float]
    #: The agent's rules and limits under this profile; None: `AgentRules` defaults.
    agent_rules: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    #: Notional above which a cleared intent waits for an operator's approval; None: never.
    approval_notional: Mapped[float | None] = mapped_column(default=None)
    #: How long an intent waits for approval before it is rejected, in seconds.
    approval_ttl_s: Mapped[float] = mapped_column(default=300.0, server_default="300")


class PolicyProfile(_ProfileLimits, Base):
    """A named set of risk limits the Feasibility stage enforces before an intent is formed.

    - max_position_pct: largest single position, in % of portfolio value.
    - max_daily_loss_pct: realised + unrealised loss in one day, in % of start-of-day equity,
      at which new intents are refused for the rest of the day.
    - max_leverage: gross exposure / equity.
    - risk_per_trade_pct: equity put at risk by one trade (entry to stop), in %.
    - max_open_positions: positions open at the same time.
    - max_drawdown_pct: peak-to-trough equity loss, in %, that trips the kill switch.
    - min_signal_confidence: modified-signal confidence (0-1) below which no intent is formed.
    - approval_notional: an intent above this notional waits for an operator (None: none waits);
      approval_ttl_s: how long it waits before it is rejected.

    Seeded by the first migration: Conservative, Balanced, Aggressive.
    """

    __tablename__ = "policy_profiles"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    updated_at: Mapped[datetime]


class SystemConfig(Base):
    """A live-tunable parameter (hero signals, thresholds, active profile) and its value now."""

    __tablename__ = "system_config"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSONDoc)
    updated_at: Mapped[datetime]
    updated_by: Mapped[str] = mapped_column(String(64))


class ConfigChange(Base):
    """Every change of a system config value: who, when, old and new value, and why."""

    __tablename__ = "system_config_history"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(64), index=True)
    old_value: Mapped[Any | None] = mapped_column(JSONDoc)
    new_value: Mapped[Any] = mapped_column(JSONDoc)
    changed_by: Mapped[str] = mapped_column(String(64))
    changed_at: Mapped[datetime]
    reason: Mapped[str] = mapped_column(Text)


class SignalOutcome(Base):
    """What became of a signal (TCA): outcome, slippage, P&L and holding time."""

    __tablename__ = "signal_outcomes"
    __table_args__ = (
        CheckConstraint(_in("outcome", SIGNAL_OUTCOMES), name="outcome"),
        # Dropped when signal_outcomes becomes a hypertable, as for fills.
        Index("uq_signal_outcomes_signal_id", "signal_id", unique=True),
    )

    signal_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    signal_at: Mapped[datetime] = mapped_column(primary_key=True)
    symbol: Mapped[str] = mapped_column(String(20))
    execution_id: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    slippage_bps: Mapped[float | None]
    pnl: Mapped[float | None]
    holding_seconds: Mapped[float | None]
    closed_at: Mapped[datetime | None]
    recorded_at: Mapped[datetime]


# ---- transaction cost analysis (the tca service) ----------------------------------------------

SIGNAL_HORIZON_STATES = ("open", "done", "expired")


class FillCost(Base):
    """One fill against its arrival price (the close of the bar behind its order), once per
    `execution_id`; for a real venue's fill also the paper fill model's shadow of it."""

    __tablename__ = "fill_costs"
    __table_args__ = (CheckConstraint(_in("side", ORDER_SIDES), name="side"),)

    execution_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_order_id: Mapped[str] = mapped_column(String(CLIENT_ORDER_ID_MAX_LENGTH), index=True)
    correlation_id: Mapped[str | None] = mapped_column(String(64))
    signal_id: Mapped[str | None] = mapped_column(String(64), index=True)
    strategy: Mapped[str | None] = mapped_column(String(64), index=True)
    broker: Mapped[str] = mapped_column(String(32))
    symbol: Mapped[str] = mapped_column(String(20))
    side: Mapped[str] = mapped_column(String(4))
    quantity: Mapped[float]
    price: Mapped[float]
    fee: Mapped[float]
    filled_at: Mapped[datetime]
    arrival_price: Mapped[float | None]
    arrival_at: Mapped[datetime | None]
    slippage_bps: Mapped[float | None]
    shadow_quantity: Mapped[float | None]
    shadow_price: Mapped[float | None]
    shadow_fee: Mapped[float | None]
    shadow_price_diff_bps: Mapped[float | None]
    recorded_at: Mapped[datetime]


class OrderCost(Base):
    """An order's implementation shortfall (`tradeos_lab.tca.implementation_shortfall`), revised
    on each of its fills."""

    __tablename__ = "order_costs"
    __table_args__ = (CheckConstraint(_in("side", ORDER_SIDES), name="side"),)

    client_order_id: Mapped[str] = mapped_column(
        String(CLIENT_ORDER_ID_MAX_LENGTH), primary_key=True
    )
    strategy: Mapped[str | None] = mapped_column(String(64), index=True)
    broker: Mapped[str] = mapped_column(String(32))
    symbol: Mapped[str] = mapped_column(String(20))
    side: Mapped[str] = mapped_column(String(4))
    quantity: Mapped[float]
    filled_quantity: Mapped[float]
    arrival_price: Mapped[float]
    avg_price: Mapped[float | None]
    last_price: Mapped[float]
    fees: Mapped[float]
    execution_cost: Mapped[float]
    opportunity_cost: Mapped[float]
    shortfall: Mapped[float]
    shortfall_bps: Mapped[float]
    updated_at: Mapped[datetime]


class SignalHorizon(Base):
    """A filled signal at one holding horizon (bars of its timeframe after the signal's bar):
    open until that bar is known, then its forward return and P&L; expired if it never comes."""

    __tablename__ = "signal_horizons"
    __table_args__ = (
        CheckConstraint(_in("side", ORDER_SIDES), name="side"),
        CheckConstraint(_in("status", SIGNAL_HORIZON_STATES), name="status"),
        Index("ix_signal_horizons_status", "status"),
        # a strategy's latest at a horizon (its scores) read in index order
        Index(
            "ix_signal_horizons_strategy_horizon_bars_signal_at",
            "strategy",
            "horizon_bars",
            "signal_at",
        ),
    )

    signal_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    horizon_bars: Mapped[int] = mapped_column(Integer, primary_key=True)
    strategy: Mapped[str] = mapped_column(String(64))
    symbol: Mapped[str] = mapped_column(String(20))
    timeframe: Mapped[str] = mapped_column(String(8))
    signal_at: Mapped[datetime]
    strength: Mapped[float]
    side: Mapped[str] = mapped_column(String(4))
    quantity: Mapped[float]
    avg_price: Mapped[float]
    fees: Mapped[float]
    arrival_price: Mapped[float]
    status: Mapped[str] = mapped_column(String(8))
    exit_at: Mapped[datetime | None]
    exit_price: Mapped[float | None]
    forward_return: Mapped[float | None]
    pnl: Mapped[float | None]
    opened_at: Mapped[datetime]
    closed_at: Mapped[datetime | None]


# ---- the pipeline's messages, kept past the bus's trimming -----------------------------------


class _Published:
    """The envelope of a bus message: unique by `message_id`, so a redelivery is a no-op."""

    message_id: Mapped[str] = mapped_column(String(MESSAGE_ID_LENGTH), primary_key=True)
    version: Mapped[str] = mapped_column(String(20))
    correlation_id: Mapped[str] = mapped_column(String(128), index=True)
    causation_id: Mapped[str | None] = mapped_column(String(MESSAGE_ID_LENGTH))
    producer: Mapped[str] = mapped_column(String(64))
    produced_at: Mapped[datetime] = mapped_column(index=True)
    payload: Mapped[dict[str, Any]]


class SignalRecord(_Published, Base):
    """A `signals.raw` or `signals.modified` message."""

    __tablename__ = "signals"
    __table_args__ = (CheckConstraint(_in("stage", SIGNAL_STAGES), name="stage"),)

    stage: Mapped[str] = mapped_column(String(8))
    strategy: Mapped[str] = mapped_column(String(64))
    symbol: Mapped[str] = mapped_column(String(20))
    direction: Mapped[str] = mapped_column(String(8))
    ts: Mapped[datetime]


class IntentRecord(_Published, Base):
    """An `intents` message: an order the Feasibility stage cleared."""

    __tablename__ = "intents"
    __table_args__ = (CheckConstraint(_in("side", ORDER_SIDES), name="side"),)

    strategy: Mapped[str] = mapped_column(String(64))
    symbol: Mapped[str] = mapped_column(String(20))
    side: Mapped[str] = mapped_column(String(4))
    quantity: Mapped[float]
    signal_id: Mapped[str | None] = mapped_column(String(MESSAGE_ID_LENGTH))


class RiskEventRecord(_Published, Base):
    """A `risk_events` message."""

    __tablename__ = "risk_events"

    kind: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16))
    scope: Mapped[str] = mapped_column(String(128))
    ts: Mapped[datetime]


class AuditRecord(_Published, Base):
    """An `audit` message: who changed what, from which value to which, and why."""

    __tablename__ = "audit"

    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(128))


# ---- news and sentiment ------------------------------------------------------------------------

SCORE_RANGE = "score >= -1 AND score <= 1"


class NewsArticleRecord(Base):
    """An article the sentiment scorer took from `news.raw`, once per content hash: the same
    story fetched again (or from another source) is not recorded, nor scored, a second time."""

    __tablename__ = "news_articles"
    __table_args__ = (
        CheckConstraint(SCORE_RANGE, name="score"),
        Index("ix_news_articles_fetched_at", "fetched_at"),
    )

    article_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(MESSAGE_ID_LENGTH))
    source: Mapped[str] = mapped_column(String(64))
    external_id: Mapped[str | None] = mapped_column(String(256))
    url: Mapped[str | None] = mapped_column(Text)
    title: Mapped[str] = mapped_column(String(256))
    body: Mapped[str] = mapped_column(Text)
    published_at: Mapped[datetime | None]
    fetched_at: Mapped[datetime]
    scorer: Mapped[str] = mapped_column(String(64))
    score: Mapped[float]
    recorded_at: Mapped[datetime]


class NewsScoreRecord(Base):
    """One article's sentiment for one ticker it names, at the article's time."""

    __tablename__ = "news_scores"
    __table_args__ = (
        CheckConstraint(SCORE_RANGE, name="score"),
        Index("ix_news_scores_symbol_ts", "symbol", "ts"),
    )

    article_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("news_articles.article_id"), primary_key=True
    )
    symbol: Mapped[str] = mapped_column(String(20), primary_key=True)
    ts: Mapped[datetime]
    score: Mapped[float]
    scorer: Mapped[str] = mapped_column(String(64))


# ---- the agent and the learning loop ---------------------------------------------------------

CONFIG_PROPOSAL_STATES = ("pending", "applied", "rejected")


class PolicyProfileVersion(_ProfileLimits, Base):
    """One version of a policy profile. `effective_from` is when it became (or becomes) the
    profile's live values; None marks a candidate not activated yet."""

    __tablename__ = "policy_profile_versions"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    effective_from: Mapped[datetime | None]
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    reason: Mapped[str] = mapped_column(Text)


class WeightAdjustment(Base):
    """One update of the Signal Modifier's ensemble weights by the learning loop: the weights
    before and after, and the evidence (trades, P&L per strategy) it was made on. `applied` is
    False when a guardrail held the weights where they were."""

    __tablename__ = "weight_adjustments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    adjusted_at: Mapped[datetime] = mapped_column(index=True)
    method: Mapped[str] = mapped_column(String(32))
    before: Mapped[dict[str, Any]]
    after: Mapped[dict[str, Any]]
    evidence: Mapped[dict[str, Any]]
    applied: Mapped[bool] = mapped_column(Boolean)


class ConfigProposal(Base):
    """A system config change the agent proposed: pending an operator's approval when the active
    profile asks for it, then applied (through `RecordsStore.set_config`) or rejected."""

    __tablename__ = "config_proposals"
    __table_args__ = (CheckConstraint(_in("status", CONFIG_PROPOSAL_STATES), name="status"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(64))
    old_value: Mapped[Any | None] = mapped_column(JSONDoc)
    new_value: Mapped[Any] = mapped_column(JSONDoc)
    proposed_by: Mapped[str] = mapped_column(String(64))
    proposed_at: Mapped[datetime]
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), index=True)
    decided_by: Mapped[str | None] = mapped_column(String(64))
    decided_at: Mapped[datetime | None]
