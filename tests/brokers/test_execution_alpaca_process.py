"""Execution as its own process (`tradeos-lab service execution`) trading at Alpaca (the local
trading server) with the machine's Redis and PostgreSQL: SIGKILLed after Alpaca accepted and
filled an order but before the intent's ack, the restarted service leaves exactly one order at
the broker, the fill recorded once and nothing pending."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from alpaca_trading_server import AlpacaTradingServer, Fault
from execution_support import alpaca_settings, armed_lab, intent, wait_for

from tradeos_lab.keys import Stream
from tradeos_lab.lab import Lab
from tradeos_lab.pipeline.services.execution import client_order_id_for
from tradeos_lab.pipeline.supervisor import service_instance, settings_environment
from tradeos_lab.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
ENTRY = "import sys; from tradeos_lab.cli import main; main(sys.argv[1:])"


@pytest.fixture
def settings(server_settings: Settings, alpaca_server: AlpacaTradingServer) -> Settings:
    # A submit waits long for its answer: the process is killed while it waits.
    return alpaca_settings(server_settings, alpaca_server, alpaca_timeout_seconds=60.0)


@pytest.fixture
def lab(settings: Settings) -> Iterator[Lab]:
    lab = armed_lab(settings)
    yield lab
    lab.close()


@pytest.fixture
def spawn(settings: Settings, tmp_path: Path) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """Start `tradeos-lab service execution` on `settings` (killed at teardown if alive)."""
    started: list[subprocess.Popen[bytes]] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADEOS_")}
    env = {**env, "PYTHONPATH": str(ROOT), **settings_environment(settings)}

    def start() -> subprocess.Popen[bytes]:
        log = (tmp_path / f"execution-{len(started)}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-c", ENTRY, "service", "execution"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_sigkill_after_the_broker_accepted_before_the_ack_leaves_one_order_one_fill(
    lab: Lab, alpaca_server: AlpacaTradingServer, spawn: Callable[[], subprocess.Popen[bytes]]
) -> None:
    message = intent(quantity=4.0)
    cid = client_order_id_for(message.message_id)
    # Alpaca accepts the order, then its answer hangs: the process waits for it when killed.
    alpaca_server.inject("POST", "/v2/orders", Fault(delay=30.0, after_effect=True))
    lab.bus.publish(Stream.INTENTS, message)
    first = spawn()
    wait_for(lambda: alpaca_server.orders, 120, what="the order reached Alpaca")
    alpaca_server.fill(cid, 4.0, 187.5)  # filled at the venue meanwhile
    first.send_signal(signal.SIGKILL)
    assert first.wait(30) == -signal.SIGKILL

    held = lab.records.order(cid)
    assert held.status == "new", "recorded and committed before it was sent, never answered"
    assert lab.records.fills(cid) == []
    group = lab.bus.inspect.group_info(Stream.INTENTS, "execution")
    assert group.pending == 1, "the intent was not acked"

    # Its supervisor would deregister the dead worker: the next one adopts its pending intent.
    lab.flags.workers.deregister("execution", service_instance(first.pid))
    second = spawn()
    wait_for(
        lambda: lab.bus.inspect.group_info(Stream.INTENTS, "execution").pending == 0,
        120,
        what="the intent handled and acked after the restart",
    )
    second.send_signal(signal.SIGTERM)
    assert second.wait(60) == 0

    assert [o["client_order_id"] for o in alpaca_server.orders.values()] == [cid]
    held = lab.records.order(cid)
    assert (held.status, held.filled_quantity, held.external) == ("filled", 4.0, False)
    (fill,) = lab.records.fills(cid)
    assert (fill.quantity, fill.price, fill.external) == (4.0, 187.5, False)
    (trade,) = lab.records.attribution(correlation_id=message.correlation_id)
    assert trade.trade.execution_id == fill.execution_id
    assert trade.trade.intent_id == message.message_id
    bus = lab.bus

    def published(stream: Stream) -> list[object]:
        rows = bus.redis.xrange(lab.keys.stream(stream))
        return [bus.decode(stream, fields).payload for _, fields in rows]

    orders = [p for p in published(Stream.ORDERS) if p.client_order_id == cid]  # type: ignore[attr-defined]
    fills = published(Stream.FILLS_RAW)
    assert [o.status.value for o in orders] == ["filled"]  # type: ignore[attr-defined]
    assert [f.execution_id for f in fills] == [fill.execution_id]  # type: ignore[attr-defined]
    group = lab.bus.inspect.group_info(Stream.INTENTS, "execution")
    assert (group.pending, group.lag) == (0, 0)
    assert lab.bus.inspect.dead_letters(Stream.INTENTS).empty
