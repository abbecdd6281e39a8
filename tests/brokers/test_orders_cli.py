"""`tradeos-lab reconcile` and `tradeos-lab orders cancel-all` through click, on the machine's
Redis (this test's namespace), records on SQLite and PostgreSQL, the paper broker in those
records and Alpaca paper on the local trading server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from alpaca_trading_server import API_KEY, SECRET_KEY, AlpacaTradingServer, Fault
from click.testing import CliRunner, Result

from tradeos_lab.brokers import AlpacaBroker, OrderRequest, PaperBroker
from tradeos_lab.cli import cli
from tradeos_lab.contracts import OrderType, Side, TimeInForce
from tradeos_lab.keys import Keys, Stream
from tradeos_lab.settings import Settings
from tradeos_lab.stores.records import RecordsStore
from tradeos_lab.tiers.bus import Bus
from tradeos_lab.tiers.flags import Flags, KillSource, KillSwitches

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # one Redis for the three tiers


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def records_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The records the commands use, migrated: SQLite and a fresh PostgreSQL database."""
    url: str = (
        f"sqlite:///{tmp_path / 'records.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    with RecordsStore.from_url(url) as store:
        store.upgrade()
    return url


@pytest.fixture
def env(
    tmp_path: Path,
    namespace: str,
    shared_redis_url: str,
    records_url: str,
    alpaca_server: AlpacaTradingServer,
) -> dict[str, str]:
    return {
        "TRADEOS_NAMESPACE": namespace,
        "TRADEOS_DATA_DIR": str(tmp_path / "lab"),
        "TRADEOS_BUS_URL": shared_redis_url,
        "TRADEOS_CACHE_URL": shared_redis_url,
        "TRADEOS_FLAGS_URL": shared_redis_url,
        "TRADEOS_RECORDS_URL": records_url,
        "TRADEOS_ALPACA_TRADING_URL": alpaca_server.url,
        "TRADEOS_ALPACA_API_KEY": API_KEY,
        "TRADEOS_ALPACA_SECRET_KEY": SECRET_KEY,
        "TRADEOS_ALPACA_TIMEOUT_SECONDS": "2",
        "TRADEOS_LOG_LEVEL": "WARNING",
    }


@pytest.fixture
def records(records_url: str) -> Iterator[RecordsStore]:
    with RecordsStore.from_url(records_url) as store:
        yield store


@pytest.fixture
def manual(shared_redis: redis.Redis, keys: Keys) -> KillSwitches:
    """The operator's switches (their audit is not what these tests read); registry armed."""
    switches = KillSwitches(shared_redis, keys=keys, source=KillSource.MANUAL, audit=lambda _: None)
    switches.arm(actor="user:ops", reason="cli test")
    return switches


@pytest.fixture
def alpaca(
    alpaca_server: AlpacaTradingServer, shared_redis: redis.Redis, keys: Keys, settings: Settings
) -> Iterator[AlpacaBroker]:
    """Another client of the same Alpaca account (placing orders the way a person would)."""
    with AlpacaBroker(
        Flags(shared_redis, keys=keys, settings=settings),
        api_key=API_KEY,
        secret_key=SECRET_KEY,
        url=alpaca_server.url,
        name="alpaca_app",
    ) as broker:
        yield broker


@pytest.fixture
def settings(settings_factory: Any) -> Settings:
    settings: Settings = settings_factory()
    return settings


def run(env: dict[str, str], *args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result


def _limit(cid: str, symbol: str = "AAPL") -> OrderRequest:
    return OrderRequest(
        client_order_id=cid,
        symbol=symbol,
        side=Side.BUY,
        quantity=5.0,
        order_type=OrderType.LIMIT,
        limit_price=100.0,
        time_in_force=TimeInForce.GTC,
    )


def _audit(shared_redis: redis.Redis, keys: Keys, settings: Settings) -> list[dict[str, Any]]:
    frame = Bus(shared_redis, keys=keys, settings=settings).inspect.read(Stream.AUDIT, count=100)
    if frame.empty:
        return []
    rows: list[dict[str, Any]] = frame.to_dict("records")
    return rows


def test_reconcile_shows_the_differences_then_applies_them(
    env: dict[str, str],
    alpaca: AlpacaBroker,
    alpaca_server: AlpacaTradingServer,
    records: RecordsStore,
) -> None:
    alpaca.submit(_limit("by-hand-1"))
    alpaca_server.fill("by-hand-1", 5.0, 99.0, publish=False)

    dry = run(env, "reconcile", "--broker", "alpaca", "--dry-run", code=1)
    assert "mismatched (dry run)" in dry.output
    assert "unknown_order" in dry.output and "would import" in dry.output
    assert records.find_order("by-hand-1") is None

    applied = run(env, "reconcile", "--broker", "alpaca", "--actor", "user:lead")
    assert "reconciled (applied)" in applied.output
    assert records.order("by-hand-1").external is True
    (entry,) = records.audit_trail()
    assert (entry.actor, entry.action) == ("user:lead", "order.imported")

    again = run(env, "reconcile", "--broker", "alpaca")
    assert "unknown_order" not in again.output


def test_reconcile_exits_1_and_halts_while_a_position_disagrees(
    env: dict[str, str],
    alpaca_server: AlpacaTradingServer,
    manual: KillSwitches,
    records: RecordsStore,
) -> None:
    alpaca_server.positions["MSFT"] = 3.0
    result = run(env, "reconcile", "--broker", "alpaca", code=1)
    assert "halted REDUCING: MSFT" in result.output
    (switch,) = manual.state().switches
    assert (switch.source, switch.target) == (KillSource.RECONCILIATION, "MSFT")
    assert [e.kind for e in records.risk_events()] == ["reconciliation"]

    # The operator path clears it whatever the reconciliation thinks (it halts again next run).
    run(
        env,
        "flags",
        "clear",
        "--scope",
        "symbol",
        "--target",
        "MSFT",
        "--source",
        "reconciliation",
        "--reason",
        "position moved in by hand, checked",
    )
    assert manual.state().switches == ()


def test_reconcile_exits_3_when_the_broker_does_not_report(
    env: dict[str, str], alpaca_server: AlpacaTradingServer, records: RecordsStore
) -> None:
    alpaca_server.inject("GET", "/v2/orders", *(Fault(status=503) for _ in range(5)))
    result = run(env, "reconcile", "--broker", "alpaca", code=3)
    assert "unknown" in result.output and "did not report" in result.output


def test_cancel_all_reaches_both_brokers_while_halted_and_is_audited(
    env: dict[str, str],
    alpaca: AlpacaBroker,
    alpaca_server: AlpacaTradingServer,
    manual: KillSwitches,
    records: RecordsStore,
    shared_redis: redis.Redis,
    keys: Keys,
    settings: Settings,
) -> None:
    paper = PaperBroker(records, lambda _symbol: None)  # no bar yet: the order rests
    paper.submit(_limit("tl-paper-1"))
    alpaca.submit(_limit("tl-alpaca-1"))
    manual.engage("global", "HALTED", actor="user:ops", reason="market halt")

    result = run(env, "orders", "cancel-all", "--reason", "flatten before the close")
    assert "paper: 1 canceled" in result.output and "alpaca: 1 canceled" in result.output
    assert records.order("tl-paper-1").status == "canceled"
    assert alpaca_server.order_of("tl-alpaca-1")["status"] == "canceled"

    audit = _audit(shared_redis, keys, settings)
    assert [(a["payload.action"], a["payload.target"]) for a in audit] == [
        ("orders.cancel_all", "broker:paper"),
        ("orders.cancel_all", "broker:alpaca"),
    ]
    assert {a["payload.reason"] for a in audit} == {"flatten before the close"}
    assert all(a["payload.actor"].startswith("user:") for a in audit)
    assert [a.action for a in records.audit_trail()] == ["orders.cancel_all"] * 2


def test_cancel_all_at_an_unreachable_broker_still_cancels_the_others_and_exits_1(
    env: dict[str, str],
    alpaca_server: AlpacaTradingServer,
    records: RecordsStore,
) -> None:
    PaperBroker(records, lambda _symbol: None).submit(_limit("tl-paper-2"))
    alpaca_server.inject("DELETE", "/v2/orders", *(Fault(status=503) for _ in range(5)))
    result = run(env, "orders", "cancel-all", "--reason", "stop", "--actor", "user:ops", code=1)
    assert "alpaca: not canceled" in result.output
    assert records.order("tl-paper-2").status == "canceled"
    failed = next(a for a in records.audit_trail() if a.target == "broker:alpaca")
    assert failed.payload["new_value"]["error"]


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["orders", "cancel-all", "--reason", "x", "--broker", "nyse"], "nyse"),
        (["orders", "cancel-all", "--reason", ""], "--reason"),
        (["orders", "cancel-all", "--reason", "   "], "--reason"),
        (["orders", "cancel-all"], "--reason"),
        (["orders", "cancel-all", "--reason", "x", "--actor", ""], "--actor"),
        (["reconcile", "--broker", "nyse"], "nyse"),
        (["reconcile", "--lookback-hours", "0"], "--lookback-hours"),
    ],
)
def test_bad_input_is_a_clear_error_with_exit_2(
    env: dict[str, str], records: RecordsStore, args: list[str], complaint: str
) -> None:
    PaperBroker(records, lambda _symbol: None).submit(_limit("tl-paper-3"))
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 2, result.output
    assert complaint in result.output
    assert records.order("tl-paper-3").status == "accepted"  # nothing was canceled
