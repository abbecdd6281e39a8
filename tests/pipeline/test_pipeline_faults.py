"""Faults in the running pipeline: services killed mid-batch, malformed messages on every stream.

- SIGKILL: the pipeline runs under the supervisor (one process per service, the machine's Redis 7
  and PostgreSQL). Each service in turn is frozen (SIGSTOP) so a backlog builds at its input, woken
  and killed (SIGKILL) while it works through that batch; the supervisor restarts it. Afterwards
  every stage has answered every input once: no message lost, no output duplicated on the bus
  (outputs of a re-handled input carry the same derived ids), no order or trade recorded twice.
- Bad input: a malformed entry on every stream a service reads goes to that stream's dead
  letters with the reason, and bars published after it still become fills.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from end_to_end_support import (
    allow_trading_every_bar,
    pipeline_settings_for,
    running_pipeline,
    settled,
    stream_messages,
    wait_for,
    zigzag_file,
)

from tradeos_lab.contracts import (
    BarMessage,
    FillMessage,
    IntentMessage,
    Message,
    OrderMessage,
    PositionMessage,
    RawSignalMessage,
)
from tradeos_lab.keys import Stream
from tradeos_lab.lab import Lab
from tradeos_lab.pipeline.registry import service_class
from tradeos_lab.pipeline.supervisor import Backoff, Supervisor, service_instance
from tradeos_lab.settings import Settings

#: How long a frozen service lets its input pile up, and how long it works before the kill: a
#: service that settled its whole backlog within the first is killed again after the next.
FROZEN_S = 0.6
WORKING_S = (0.03, 0.01, 0.0)


def _kill_mid_batch(supervisor: Supervisor, lab: Lab, name: str) -> int:
    """Freeze `name`, let a backlog build, wake it, SIGKILL it mid-batch, await its restart;
    again, sooner after the wake, while the killed process held nothing (a fast service can
    settle its whole backlog before the first kill lands). A service that reads no stream
    (ingestion) holds no batch: it is killed once.

    Returns how many entries the last killed process held unacked (its batch in hand).
    """
    in_hand = 0
    for working_s in WORKING_S:
        pid = _running(supervisor, lab, name)
        restarts = supervisor.restarts()[name]
        os.kill(pid, signal.SIGSTOP)
        time.sleep(FROZEN_S)
        os.kill(pid, signal.SIGCONT)
        time.sleep(working_s)
        os.kill(pid, signal.SIGKILL)
        in_hand = sum(
            int(row.pending)
            for stream in service_class(name).inputs
            for row in lab.bus.inspect.consumers(stream, name).itertuples()
            if row.consumer == service_instance(pid)
        )
        wait_for(
            lambda before=restarts: supervisor.restarts()[name] > before,
            timeout=30,
            what=f"{name} restart",
        )
        _running(supervisor, lab, name)
        if in_hand or not service_class(name).inputs:
            break
    return in_hand


def _running(supervisor: Supervisor, lab: Lab, name: str) -> int:
    """The pid of `name`'s process once its runner heartbeats and its consumer groups exist."""
    pid = wait_for(lambda: supervisor.pids()[name], timeout=30, what=f"{name} process")
    instance = service_instance(pid)
    wait_for(
        lambda: any(w.instance == instance for w in lab.flags.workers.live_workers()),
        timeout=60,
        what=f"{name} heartbeat",
    )
    inputs = {s.value for s in service_class(name).inputs}

    def reads_every_input() -> bool:  # a batch can only be in hand once its groups exist
        groups = lab.bus.inspect.groups()
        return inputs <= set(groups.loc[groups["group"] == name, "stream"])

    wait_for(reads_every_input, timeout=60, what=f"{name} consumer groups")
    return pid


def _by_cause(messages: list[Message]) -> dict[str, list[Message]]:
    out: dict[str | None, list[Message]] = defaultdict(list)
    for m in messages:
        out[m.causation_id].append(m)
    return out  # type: ignore[return-value]


@pytest.mark.slow
def test_sigkill_of_each_service_mid_batch_loses_and_duplicates_nothing(
    pipeline_lab: Lab, pipeline_settings: Settings, tmp_path: Path
) -> None:
    lab = pipeline_lab
    replay = zigzag_file(tmp_path / "bars.csv", 3_000)
    settings = pipeline_settings_for(
        pipeline_settings,
        replay,
        pipeline_bar_interval_s=0.02,
        claim_idle_ms=1_000,  # a restarted process has a new name: reclaim the dead one's batch
    )
    services = settings.pipeline_services  # what `up` runs
    supervisor = Supervisor(
        settings,
        services,
        workers=lab.flags.workers,
        backoff=Backoff(base_s=0.2, cap_s=1.0),
    )
    allow_trading_every_bar(lab)
    supervisor.start()
    try:
        wait_for(
            lambda: len(stream_messages(lab, Stream.FILLS_RAW)) >= 3,
            timeout=60,
            what="fills before the first kill",
        )
        in_hand = {name: _kill_mid_batch(supervisor, lab, name) for name in services}
        wait_for(lambda: len(stream_messages(lab, Stream.FILLS_RAW)) >= 10, timeout=30)
    finally:
        supervisor.stop()
    # what the stopped pipeline had in hand is finished by a fresh one (no new bars)
    with running_pipeline(lab, settings, names=[n for n in services if n != "ingestion"]):
        wait_for(lambda: settled(lab), timeout=60, what="every group to catch up")
    assert all(n >= 1 for n in supervisor.restarts().values()), supervisor.restarts()
    # the kills hit work in progress: most services on the way from a bar to its fill died
    # with a batch unacked
    on_the_way = ["signal_engine", "signal_modifier", "feasibility", "execution", "positions"]
    assert sum(in_hand[n] > 0 for n in on_the_way) >= len(on_the_way) // 2, in_hand

    streams = {s: stream_messages(lab, s) for s in Stream}
    for stream, messages in streams.items():
        repeated = [i for i, n in Counter(m.message_id for m in messages).items() if n > 1]
        assert not repeated, f"{len(repeated)} duplicated message ids on {stream.value}"
        assert lab.bus.inspect.dead_letters(stream).empty, f"dead letters on {stream.value}"

    bars = [m for m in streams[Stream.MARKET_DATA] if isinstance(m, BarMessage)]
    bar_ts = [b.payload.ts for b in bars]
    assert bar_ts == sorted(set(bar_ts)), "ingestion published a bar twice or out of order"
    raws = [m for m in streams[Stream.SIGNALS_RAW] if isinstance(m, RawSignalMessage)]
    signalled = Counter(r.payload.source_message_id for r in raws)
    wrong = {str(b.payload.ts): signalled[b.message_id] for b in bars[1:]}
    wrong = {ts: n for ts, n in wrong.items() if n != 1}
    assert not wrong, f"bars lost (0) or signalled twice (2): {wrong} of {len(bars)}"
    modified = _by_cause(streams[Stream.SIGNALS_MODIFIED])
    assert all(len(modified[r.message_id]) == 1 for r in raws), "a raw signal lost or doubled"
    # Feasibility may rightly answer nothing (the strategy already holds that side): that it
    # handled every modified signal is the settled group with no dead letters above.
    intents = [m for m in streams[Stream.INTENTS] if isinstance(m, IntentMessage)]
    orders = [m for m in streams[Stream.ORDERS] if isinstance(m, OrderMessage)]
    fills = [m for m in streams[Stream.FILLS_RAW] if isinstance(m, FillMessage)]
    assert intents
    assert fills
    client_ids = {o.payload.intent_id: o.payload.client_order_id for o in orders}
    assert all(i.message_id in client_ids for i in intents), "an intent never became an order"
    assert len(set(client_ids.values())) == len(client_ids), "one client order id per intent"

    # the records: each order once, each trade once, the ledger is the sum of the fills
    for intent_id, coid in client_ids.items():
        assert lab.records.order(coid).intent_id == intent_id
    executions = [f.payload.execution_id for f in fills]
    assert len(set(executions)) == len(executions), "a fill published twice"
    for execution_id in executions:
        assert len(lab.records.attribution(execution_id=execution_id)) == 1
    symbol = fills[0].payload.symbol
    total = sum(f.payload.quantity * (1 if f.payload.side == "buy" else -1) for f in fills)
    assert abs(lab.records.net_quantity(None, symbol) - total) < 1e-9
    booked = _by_cause(streams[Stream.POSITIONS])
    for fill in fills:
        assert any(isinstance(m, PositionMessage) for m in booked[fill.message_id]), (
            f"fill {fill.payload.execution_id} was never booked"
        )


def test_a_malformed_message_on_every_stream_is_dead_lettered_and_the_pipeline_goes_on(
    pipeline_lab: Lab, tmp_path: Path
) -> None:
    lab = pipeline_lab
    replay = zigzag_file(tmp_path / "bars.csv", 400)
    settings = pipeline_settings_for(lab.settings, replay, pipeline_bar_interval_s=0.05)
    with running_pipeline(lab, settings):
        wait_for(lambda: len(stream_messages(lab, Stream.FILLS_RAW)) >= 2, timeout=30, what="fills")
        readers = Counter(lab.bus.inspect.groups()["stream"])
        read = sorted(readers)
        assert set(read) >= {"market_data", "signals.raw", "signals.modified", "intents"}
        assert "fills.raw" in read
        for name in read:
            lab.bus.redis.xadd(lab.bus.stream_key(Stream(name)), {"m": b'{"schema": "bogus"'})
        injected = time.time()
        for name in read:
            wait_for(
                lambda name=name: not lab.bus.inspect.dead_letters(name).empty,
                timeout=10,
                what=f"a dead letter on {name}",
            )
        # bars published after the bad entries still become fills
        wait_for(
            lambda: any(
                f.produced_at.timestamp() > injected + 0.5
                for f in stream_messages(lab, Stream.FILLS_RAW, skip_invalid=True)
            ),
            timeout=15,
            what="a fill after the malformed messages",
        )
    for name in read:
        dead = lab.bus.inspect.dead_letters(name)
        # once per group reading the stream, each with its reason
        assert len(dead) == readers[name], f"{name}: {dead[['group', 'reason']].to_dict('records')}"
        assert sorted(dead["group"]) == sorted(lab.bus.inspect.groups(name)["group"])
        assert set(dead["reason"]) == {"invalid"}
        assert all("not valid JSON" in e for e in dead["error"]), f"{name}: {list(dead['error'])}"
    # each is also announced on risk_events (which held a malformed entry of its own: the audit
    # trail reads it)
    announced = [
        m
        for m in stream_messages(lab, Stream.RISK_EVENTS, skip_invalid=True)
        if m.payload.kind == "dead_letter"  # type: ignore[attr-defined]
    ]
    assert len(announced) >= len(read)
