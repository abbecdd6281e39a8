"""Execution while the records' PostgreSQL is down for 30 s (issue #11).

The pipeline from bars to positions runs on the machine's Redis 7 and on a PostgreSQL server this
test owns (initdb in a scratch directory, on a free port), which it stops while bars keep coming
and starts again 30 s later. Requirements:

- no order reaches the broker without its intent committed in the records first (checked as each
  order row is written, from a connection of its own, so only committed rows count);
- no fill is acknowledged before it is committed: every fill on the bus is recorded once, with its
  trade and its ledger entry, and the position is the sum of the fills;
- the pipeline recovers by itself: every group's pending list drains to empty, and nothing is
  dead-lettered because the records were down (a transient error is retried with backoff).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
from end_to_end_support import (
    pipeline_settings_for,
    running_pipeline,
    settled,
    stream_messages,
    wait_for,
    zigzag_file,
)
from pydantic import SecretStr
from sqlalchemy import event

import tradeos_lab as tl
from tradeos_lab import operator
from tradeos_lab.contracts import (
    FillMessage,
    IntentMessage,
    OrderMessage,
    PositionMessage,
    RiskEvent,
    RiskKind,
    Side,
)
from tradeos_lab.keys import Stream
from tradeos_lab.lab import Lab
from tradeos_lab.settings import Settings, SharedRedisServerWarning
from tradeos_lab.stores.records import RecordsStore

PG_BIN = Path("/usr/lib/postgresql/15/bin")
OUTAGE_S = 30.0
BARS = 500
SERVICES = (
    "ingestion",
    "signal_engine",
    "signal_modifier",
    "feasibility",
    "execution",
    "positions",
    "audit_trail",
)

#: Risk events that would mean an order or a message was given up on because of the outage.
OUTAGE_KINDS = {
    RiskKind.DEAD_LETTER,
    RiskKind.EXECUTION_FAILURE,
    RiskKind.KILL_SWITCH,
    RiskKind.CIRCUIT_BREAKER,
}

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PostgresServer:
    """A PostgreSQL server of this test's own (trust auth), started and stopped with pg_ctl."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.data = directory / "data"
        self.port = _free_port()
        # initdb and postgres refuse to run as root: they run as the postgres user then.
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            shutil.chown(directory, "postgres")
        self._run(PG_BIN / "initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg_ctl("start", "-o", options, "-l", self.directory / "server.log")

    def stop(self) -> None:
        """Stop at once: open sessions are cut off, as when the server goes away."""
        self._pg_ctl("stop", "-m", "immediate")

    def _pg_ctl(self, *args: object) -> None:
        self._run(PG_BIN / "pg_ctl", "-D", self.data, "-w", "-t", "60", *args)

    def _run(self, *args: object) -> None:
        subprocess.run(
            [*self._as, *map(str, args)], check=True, capture_output=True, cwd=self.directory
        )


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    # tmp_path is readable by root only; the server runs as another user
    directory = Path(tempfile.mkdtemp(prefix="tradeos-pg-"))
    server = PostgresServer(directory)
    server.start()
    try:
        yield server
    finally:
        subprocess.run(
            [*server._as, PG_BIN / "pg_ctl", "-D", server.data, "stop", "-m", "immediate"],
            capture_output=True,
        )
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def outage_lab(pipeline_settings: Settings, own_postgres: PostgresServer) -> Iterator[Lab]:
    """A lab on the machine's Redis (this test's namespace) and the test's own PostgreSQL."""
    settings = pipeline_settings.model_copy(update={"records_url": SecretStr(own_postgres.url)})
    RecordsStore.open(settings, migrate=True).close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SharedRedisServerWarning)
        lab = tl.connect(settings, start=False)
    operator.arm(lab, actor="user:test", reason="records outage test")
    yield lab
    lab.close()


class IntentsCommittedFirst:
    """Watches every statement that writes order rows and asks, from a connection of its own
    (which sees committed rows only), whether the orders' intents are in the records already."""

    _ORDER_INSERT = re.compile(r"^\s*INSERT INTO orders\b", re.IGNORECASE)

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.checked: set[str] = set()
        self.missing: set[str] = set()

    def before_cursor_execute(
        self,
        _conn: object,
        _cursor: object,
        statement: str,
        parameters: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None,
        _context: object,
        _executemany: bool,
    ) -> None:
        if not self._ORDER_INSERT.match(statement):
            return
        rows = [parameters] if isinstance(parameters, Mapping) else list(parameters or [])
        intents = {
            value
            for row in rows
            if isinstance(row, Mapping)
            for key, value in row.items()
            if key.startswith("intent_id") and isinstance(value, str)
        }
        if not intents:
            return
        try:
            # a connection per check: one kept open would be stale after the restart
            with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
                found = {
                    r[0]
                    for r in conn.execute(
                        "SELECT message_id FROM intents WHERE message_id = ANY(%s)",
                        (list(intents),),
                    )
                }
        except psycopg.OperationalError:
            return  # the server is down: the insert that follows fails as well
        self.checked |= intents
        self.missing |= intents - found


def _signed(fill: FillMessage) -> float:
    p = fill.payload
    return p.quantity if p.side is Side.BUY else -p.quantity


def test_a_30s_records_outage_holds_orders_back_and_loses_nothing(
    outage_lab: Lab, own_postgres: PostgresServer, tmp_path: Path
) -> None:
    lab = outage_lab
    settings = pipeline_settings_for(
        lab.settings,
        zigzag_file(tmp_path / "bars.csv", BARS),
        pipeline_bar_interval_s=0.075,  # bars until about the end of the outage
    )
    watch = IntentsCommittedFirst(own_postgres.dsn)
    event.listen(lab.records.engine, "before_cursor_execute", watch.before_cursor_execute)
    try:
        with running_pipeline(lab, settings, names=SERVICES):
            wait_for(
                lambda: len(stream_messages(lab, Stream.FILLS_RAW)) >= 3,
                timeout=60,
                what="fills before the outage",
            )
            own_postgres.stop()
            bars_at_stop = len(stream_messages(lab, Stream.MARKET_DATA))
            fills_at_stop = len(stream_messages(lab, Stream.FILLS_RAW))
            time.sleep(OUTAGE_S)
            bars_at_start = len(stream_messages(lab, Stream.MARKET_DATA))
            fills_at_start = len(stream_messages(lab, Stream.FILLS_RAW))
            backlog = lab.bus.inspect.groups()
            own_postgres.start()
            wait_for(
                lambda: len(stream_messages(lab, Stream.MARKET_DATA)) >= BARS,
                timeout=120,
                what="every bar published",
            )
            wait_for(lambda: settled(lab), timeout=120, what="every group to catch up")
    finally:
        event.remove(lab.records.engine, "before_cursor_execute", watch.before_cursor_execute)

    # the outage hit work in flight: bars kept coming, intents waited, no fill went out
    assert bars_at_start > bars_at_stop, "no bar arrived while the records were down"
    assert fills_at_start == fills_at_stop, "a fill was published while the records were down"
    waiting = backlog[backlog["group"].isin(["feasibility", "execution", "positions"])]
    assert int(waiting["lag"].sum() + waiting["pending"].sum()) > 0, backlog.to_dict("records")

    streams = {s: stream_messages(lab, s) for s in Stream}
    for stream, messages in streams.items():
        repeated = [i for i, n in Counter(m.message_id for m in messages).items() if n > 1]
        assert not repeated, f"{len(repeated)} duplicated message ids on {stream.value}"
        dead = lab.bus.inspect.dead_letters(stream)
        assert dead.empty, f"dead letters on {stream.value}: {dead.to_dict('records')}"
    # nothing refused or given up on because the records were down
    refused = [
        m.payload
        for m in streams[Stream.RISK_EVENTS]
        if isinstance(m.payload, RiskEvent) and m.payload.kind in OUTAGE_KINDS
    ]
    assert not refused, [(r.kind, r.detail) for r in refused]
    groups = lab.bus.inspect.groups()
    assert int(groups["pending"].sum()) == 0 and int(groups["lag"].sum()) == 0

    # every intent became one order, placed only once its intent was committed
    intents = [m for m in streams[Stream.INTENTS] if isinstance(m, IntentMessage)]
    orders = [m for m in streams[Stream.ORDERS] if isinstance(m, OrderMessage)]
    assert intents
    placed = {o.payload.intent_id: o.payload.client_order_id for o in orders}
    assert {i.message_id for i in intents} <= set(placed), "an intent never became an order"
    assert not watch.missing, f"orders written before their intents were committed: {watch.missing}"
    assert watch.checked >= {i.message_id for i in intents}, "an order row went unwatched"
    kept = {i.message_id for i in lab.records.intents()}
    assert {i.message_id for i in intents} <= kept

    # every fill recorded once, with its trade and its ledger entry; the book is their sum
    fills = [m for m in streams[Stream.FILLS_RAW] if isinstance(m, FillMessage)]
    executions = [f.payload.execution_id for f in fills]
    assert len(fills) > fills_at_start, "no fill after the records came back"
    assert len(set(executions)) == len(executions), "a fill published twice"
    recorded = {
        f.execution_id
        for coid in {f.payload.client_order_id for f in fills}
        for f in lab.records.fills(coid)
    }
    assert recorded == set(executions), "the records' fills differ from the fills published"
    for execution_id in executions:
        assert len(lab.records.attribution(execution_id=execution_id)) == 1
    ledger = Counter(e.execution_id for e in lab.records.ledger())
    assert ledger == Counter(executions), "a fill booked twice or never"
    total = sum(_signed(f) for f in fills)
    assert abs(lab.records.net_quantity(None, "BTC-USD") - total) < 1e-9
    booked = Counter(m.causation_id for m in streams[Stream.POSITIONS])
    assert all(booked[f.message_id] >= 1 for f in fills), "a fill the positions never booked"
    assert all(isinstance(m, PositionMessage) for m in streams[Stream.POSITIONS])
