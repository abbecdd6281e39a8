"""Orders per second through Execution (paper broker) beside bare inserts of the order rows.

    python benchmarks/bench_execution.py [--orders 1000] [--batch 100] [--rounds 3]
                                         [--records both|sqlite|postgres]

For each records backend (a SQLite file in a scratch directory; a scratch database on the server
of TRADEOS_TEST_PG_URL, default postgresql://postgres@127.0.0.1:5432/postgres, dropped at the
end) it times, in the same run:

- Execution: `Execution.handle_batch` (what the runner calls with a batch read from `intents`)
  over `--orders` intents in batches of `--batch`, each from a modified signal the records hold,
  market orders filled by the paper broker at the cached latest bar: the intents kept, the kill
  switches read, the orders, their events, fills, ledger entries and trades written, the orders,
  fills and audit messages built;
- the peer: the same number of order rows inserted into the same `orders` table with bare
  SQLAlchemy Core (one executemany per batch, one commit per batch), the least any execution
  path that records its orders must do.

Rounds are paired (both sides back to back, alternating which goes first), since the machine may
be shared; the medians and the median of the per-round ratios are printed with the load average.
Redis (kill switches, circuit breaker, the cached bar) is the machine's at TRADEOS_TEST_REDIS_URL
(default redis://127.0.0.1:6379), under a namespace of this run, removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import redis
from sqlalchemy import insert

import tradeos_lab as tl
from tradeos_lab import operator
from tradeos_lab.contracts import Intent, Message, ModifiedSignal, new_message
from tradeos_lab.contracts.ids import new_message_id
from tradeos_lab.lab import Lab
from tradeos_lab.pipeline.service import ServiceContext
from tradeos_lab.pipeline.services.execution import Execution, client_order_id_for
from tradeos_lab.settings import SharedRedisServerWarning, load_settings
from tradeos_lab.stores.records import Order, RecordsStore

ADMIN_URL = os.environ.get("TRADEOS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TRADEOS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0").rsplit("/", 1)[0]
SYMBOL = "BTC-USD"
STRATEGY = "bench"
BAR_TS = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)


@contextmanager
def records_url(backend: str, workdir: Path) -> Iterator[str]:
    """A fresh, empty records database of `backend`; dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{workdir / 'records.db'}"
        return
    name = f"tradeos_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = psycopg.conninfo.conninfo_to_dict(ADMIN_URL)
        host, port, user = url.get("host"), url.get("port", 5432), url.get("user", "postgres")
        yield f"postgresql+psycopg://{user}@{host}:{port}/{name}"
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def bench_lab(backend: str, workdir: Path) -> Iterator[Lab]:
    """A lab on the machine's Redis (a namespace of this run) and fresh records of `backend`,
    migrated, the kill switches armed and a bar of the symbol cached for the paper broker."""
    namespace = f"bench{uuid.uuid4().hex[:10]}"
    with records_url(backend, workdir) as url, warnings.catch_warnings():
        warnings.simplefilter("ignore", SharedRedisServerWarning)
        settings = load_settings(
            data_dir=workdir / "lab",
            namespace=namespace,
            bus_url=f"{REDIS_URL}/0",
            cache_url=f"{REDIS_URL}/1",
            flags_url=f"{REDIS_URL}/2",
            records_url=url,
            lake_url=f"chdb://{workdir / 'lake'}",
            pipeline_timeframe="1m",
        )
        RecordsStore.open(settings, migrate=True).close()
        lab = tl.connect(settings, start=False)
        try:
            operator.arm(lab, actor="user:bench", reason="execution benchmark")
            bar = {"open": 100.0, "high": 101.0, "low": 99.0, "close": 100.0, "volume": 1e12}
            lab.cache.append_bar(SYMBOL, "1m", {**bar, "ts": BAR_TS})
            yield lab
        finally:
            lab.close()
            for db in (0, 1, 2):
                client = redis.Redis.from_url(f"{REDIS_URL}/{db}")
                for key in client.scan_iter(match=f"{namespace}:*", count=1000):
                    client.delete(key)
                client.close()


def make_intents(lab: Lab, count: int) -> list[Message]:
    """`count` intents (buy and sell in turn, so the position stays flat), each from a modified
    signal kept in the records as the Signal Modifier leaves it."""
    signals: list[Message] = []
    intents: list[Message] = []
    for i in range(count):
        signal = new_message(
            ModifiedSignal(
                raw_signal_id=new_message_id(),
                strategy=STRATEGY,
                symbol=SYMBOL,
                timeframe="1m",
                ts=BAR_TS,
                direction="long" if i % 2 == 0 else "short",
                raw_strength=0.5 if i % 2 == 0 else -0.5,
                adjusted_strength=0.5 if i % 2 == 0 else -0.5,
                confidence=0.8,
                modifiers=[],
            ),
            producer="signal_modifier",
        )
        intent = Intent(
            symbol=SYMBOL,
            side="buy" if i % 2 == 0 else "sell",
            quantity=0.01,
            order_type="market",
            time_in_force="gtc",
            strategy=STRATEGY,
            reduce_only=False,
            checks_passed=["kill_switch"],
            signal_id=signal.message_id,
        )  # type: ignore[call-arg]
        signals.append(signal)
        intents.append(new_message(intent, producer="feasibility"))
    lab.records.keep_messages(signals)  # type: ignore[arg-type]
    return intents


def batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def through_execution(lab: Lab, intents: list[Message], batch: int) -> Callable[[], None]:
    """Every intent handed to `Execution.handle_batch`, a batch at a time."""
    service = Execution(ServiceContext(lab, lab.settings, instance="execution-bench"))

    def run() -> None:
        for chunk in batches(intents, batch):
            answers = service.handle_batch(chunk)
            assert len(answers) == len(chunk)

    return run


def bare_inserts(lab: Lab, count: int, batch: int) -> Callable[[], None]:
    """As many order rows inserted into `orders` with Core executemany, a commit per batch."""
    now = datetime.now(UTC)
    rows = [
        {
            "client_order_id": f"peer-{uuid.uuid4()}",
            "intent_id": new_message_id(),
            "correlation_id": new_message_id(),
            "strategy": STRATEGY,
            "broker": "paper",
            "symbol": SYMBOL,
            "side": "buy" if i % 2 == 0 else "sell",
            "order_type": "market",
            "quantity": 0.01,
            "time_in_force": "gtc",
            "status": "new",
            "filled_quantity": 0.0,
            "created_at": now,
            "updated_at": now,
        }
        for i in range(count)
    ]
    table = Order.__table__
    engine = lab.records.engine

    def run() -> None:
        for chunk in batches(rows, batch):
            with engine.begin() as conn:
                conn.execute(insert(table), chunk)

    return run


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(backend: str, orders: int, batch: int, rounds: int) -> dict[str, float]:
    workdir = Path(tempfile.mkdtemp(prefix="tradeos-bench-exec-"))
    try:
        with bench_lab(backend, workdir) as lab:
            through_execution(lab, make_intents(lab, batch), batch)()  # warm-up
            ours: list[float] = []
            peer: list[float] = []
            for i in range(rounds):
                intents = make_intents(lab, orders)
                ours_run = through_execution(lab, intents, batch)
                peer_run = bare_inserts(lab, orders, batch)
                # Pairs run back to back, alternating which goes first, so that load from
                # other processes on the machine hits both sides alike.
                if i % 2:
                    ours.append(orders / timed(ours_run))
                    peer.append(orders / timed(peer_run))
                else:
                    peer.append(orders / timed(peer_run))
                    ours.append(orders / timed(ours_run))
                cids = [client_order_id_for(m.message_id) for m in intents]
                placed = lab.records.known_orders(cids)
                assert len(placed) == orders, f"{orders - len(placed)} intents placed no order"
            return {
                "execution": statistics.median(ours),
                "peer": statistics.median(peer),
                "ratio": statistics.median(o / p for o, p in zip(ours, peer, strict=True)),
                "ratio_min": min(o / p for o, p in zip(ours, peer, strict=True)),
                "ratio_max": max(o / p for o, p in zip(ours, peer, strict=True)),
            }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1000, help="orders per round and side")
    parser.add_argument("--batch", type=int, default=100, help="intents per handle_batch call")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--records", choices=["both", "sqlite", "postgres"], default="both")
    args = parser.parse_args()
    backends = ["sqlite", "postgres"] if args.records == "both" else [args.records]

    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{args.orders} orders a round, batches of {args.batch}, {args.rounds} rounds (medians)")
    header = (
        f"{'records':<10} {'execution orders/s':>19} {'bare inserts/s':>15} {'ratio':>7}  range"
    )
    print(header)
    print("-" * len(header))
    for backend in backends:
        r = measure(backend, args.orders, args.batch, args.rounds)
        print(
            f"{backend:<10} {r['execution']:>19,.0f} {r['peer']:>15,.0f} {r['ratio']:>7.3f}"
            f"  {r['ratio_min']:.3f}-{r['ratio_max']:.3f}"
        )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
