"""The pipeline's end-to-end speed beside a null chain of as many consumers, in the same run.

    python benchmarks/bench_pipeline.py [--rate 1000] [--seconds 10] [--backlog 5000]
                                        [--chain both|null|real] [--records sqlite|PG_URL]
                                        [--verbose]

Starts one scratch redis-server on loopback (the bus role's settings: noeviction, AOF everysec)
and runs, one after the other, two chains of consumer processes over it:

- the null chain: one process per pipeline hop (market_data -> signals.raw -> signals.modified ->
  intents -> orders + fills.raw -> positions, and beside them fills.raw -> audit -> acked, and
  orders -> acked, as the audit trail and the agent read them),
  each a service that only forwards (read -> XADD -> ack; its output is a constant payload derived
  from the input, so ids and correlation carry over as in a real stage), under the same
  `ServiceRunner` as the real services;
- the real chain: the services `up` runs by default less ingestion (the Signal Engine to
  Positions, the TCA Monitor, the audit trail and the agent: as many processes as the null
  chain), each in
  its own process under the `ServiceRunner` (which hands each service a whole batch), on a lab
  whose bus, cache and flags are the same scratch server and whose records are a SQLite file (or
  the PostgreSQL database given), with a strategy that asks to trade on every bar (`FlipFlop` on
  zig-zag bars, no cooldown after an exit nor daily loss limit, a paper broker without fees or
  slippage so the round trips lose nothing and the orders keep their size), so every bar after
  the first becomes a fill; the report says why any bar got none (the rule that refused it, or
  how far down the chain it got). The driver stands in for ingestion: it caches the series'
  latest bars and price before it starts.

For each chain it measures, with the benchmark driver publishing the bars to `market_data` and a
reader thread timing their arrival on `fills.raw` (matched by correlation id):

- throughput: a backlog of bars published flat out, filled bars per second until the last fill
  (a chain that stops filling for 10 s, or runs 90 s, is taken as done: the figure counts what
  it filled); beside it, bars per second until every stage had caught up with the backlog (the
  background stages, TCA and the audit trail, give the CPU and the records' write turn to the
  trading stages, as under `up`, and finish after the last fill);
- latency: bars offered at a fixed rate (`--rate` per second for `--seconds`), p50 and p99 of
  publish -> fill;
- Redis round trips per bar per service: every process counts the writes its Redis connections
  make (one write per round trip: a pipeline or MULTI/EXEC is one), divided by the bars offered;
  beside it the server's own count of commands per bar (INFO commandstats deltas), the CPU
  time each process spent per bar of the throughput run (where a chain's time goes; summed over
  the stages, the null chain's beside the real one's: the stages share the cores, so the
  throughput ratio follows it, and it moves less when other work shares the machine), and, with
  records on SQLite, how long each waited for the records' one write turn and held it.

Prints the ratios the targets are set on: real throughput >= 50% of the null chain's; real latency
p50 <= 2 ms and p99 <= 10 ms at 1,000 bars/s, printed beside the null chain's. Loopback only; about
two minutes with the defaults.
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import multiprocessing as mp
import os
import pstats
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import redis

from tradeos_lab.contracts import (
    Audit,
    Fill,
    Intent,
    Message,
    ModifiedSignal,
    Order,
    Payload,
    PositionUpdate,
    RawSignal,
    RiskEvent,
    decode,
    derive,
)
from tradeos_lab.contracts.codec import FIELD
from tradeos_lab.keys import Keys, Stream
from tradeos_lab.providers.files import save_bars
from tradeos_lab.settings import Settings, SharedRedisServerWarning, load_settings
from tradeos_lab.stack.clients import make_redis
from tradeos_lab.stack.redis_server import (
    RedisServerProcess,
    RedisServerSpec,
    redis_server_binary,
)
from tradeos_lab.tiers.bus import Bus

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "pipeline"))
from end_to_end_support import STRATEGY_REF, allow_trading_every_bar, zigzag_bar

_T0 = datetime(2024, 1, 2, 0, 0, tzinfo=UTC)
#: The benchmark's series ends before now however many bars it publishes (one a minute).
SERIES_START = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=30)
_SYMBOL = "BTC-USD"
_MESSAGE_ID = "01900000-0000-7000-8000-000000000000"
#: A directory: each stage process writes its cProfile stats there (`NAME.prof`) as it stops.
#: They count each thread's CPU time, not wall time: on a shared 2-core machine a stage waits
#: and is descheduled, and wall time would charge that to whatever it was running.
PROFILE_ENV = "BENCH_PIPELINE_PROFILE"

# ---- the scratch server ----------------------------------------------------------------------


def start_server(workdir: Path) -> RedisServerProcess:
    """A bus-role redis-server on a free loopback TCP port (the machine's Redis 7 if present)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = RedisServerSpec(
        role="bus",
        directory=workdir,
        password=secrets.token_hex(16),
        policy="noeviction",
        appendonly=True,
        appendfsync="everysec",
        port=port,
    )
    server = RedisServerProcess(spec, binary=shutil.which("redis-server") or redis_server_binary())
    server.start()
    return server


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds a process has used so far."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def commands_done(client: redis.Redis) -> int:
    """Commands the server has run so far (INFO commandstats), minus INFO itself."""
    stats: dict[str, Any] = client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


# ---- round trips, counted inside each process ------------------------------------------------


def count_round_trips(counter: Any) -> None:
    """Count every write a redis-py connection makes in this process (one per round trip).

    Plain commands, pipelines and MULTI/EXEC blocks each go out in one `send_packed_command`, and
    the bus's raw wire uses the same call, so the count is the process's Redis round trips.
    `counter` is a shared `multiprocessing.Value`, read by the driver before and after a run.
    """
    from redis.connection import AbstractConnection

    original = AbstractConnection.send_packed_command

    def counted(self: Any, command: Any, check_health: bool = True) -> None:
        counter.value += 1
        original(self, command, check_health)

    AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]  # benchmark instrumentation


# ---- the null chain --------------------------------------------------------------------------


def _null_payloads() -> dict[Stream, Payload]:
    """A constant, valid payload for every stream a null hop writes."""
    common = {"symbol": _SYMBOL, "ts": _T0}
    order_ref = {"client_order_id": "bench-0001", "strategy": "bench", "side": "buy"}
    return {
        Stream.SIGNALS_RAW: RawSignal(
            strategy="bench",
            timeframe="1m",
            direction="long",
            strength=1.0,
            confidence=0.5,
            source_message_id=_MESSAGE_ID,
            features={},
            **common,
        ),
        Stream.SIGNALS_MODIFIED: ModifiedSignal(
            raw_signal_id=_MESSAGE_ID,
            strategy="bench",
            timeframe="1m",
            direction="long",
            raw_strength=1.0,
            adjusted_strength=1.0,
            confidence=0.5,
            modifiers=[],
            **common,
        ),
        Stream.INTENTS: Intent(
            symbol=_SYMBOL,
            side="buy",
            quantity=0.01,
            order_type="market",
            time_in_force="gtc",
            strategy="bench",
            reduce_only=False,
            checks_passed=["kill_switch"],
            signal_id=_MESSAGE_ID,
        ),
        Stream.ORDERS: Order(
            intent_id=_MESSAGE_ID,
            quantity=0.01,
            order_type="market",
            time_in_force="gtc",
            status="filled",
            filled_quantity=0.01,
            avg_price=100.0,
            **order_ref,
            **common,
        ),
        Stream.FILLS_RAW: Fill(
            client_order_id="bench-0001",
            broker_order_id="paper-1",
            execution_id="paper-1-1",
            side="buy",
            quantity=0.01,
            price=100.0,
            fee=0.0,
            fee_currency="USD",
            liquidity="taker",
            **common,
        ),
        Stream.POSITIONS: PositionUpdate(
            quantity=0.01,
            avg_price=100.0,
            market_value=1.0,
            unrealized_pnl=0.0,
            realized_pnl=0.0,
            **common,
        ),
        Stream.AUDIT: Audit(
            actor="service:bench",
            action="bench.forwarded",
            target=f"symbol:{_SYMBOL}",
            old_value=None,
            new_value=None,
            reason="null hop",
        ),
    }


#: The pipeline's hops from market data on: (service, input, outputs), one per process of the
#: real chain, so both chains run as many consumer processes: the five on the way from a bar to
#: its fill, then the three beside it (TCA reads the fills and writes audit entries; the audit
#: trail and the agent read the audit stream).
NULL_HOPS: tuple[tuple[str, Stream, tuple[Stream, ...]], ...] = (
    ("signal_engine", Stream.MARKET_DATA, (Stream.SIGNALS_RAW,)),
    ("signal_modifier", Stream.SIGNALS_RAW, (Stream.SIGNALS_MODIFIED,)),
    ("feasibility", Stream.SIGNALS_MODIFIED, (Stream.INTENTS,)),
    ("execution", Stream.INTENTS, (Stream.ORDERS, Stream.FILLS_RAW)),
    ("positions", Stream.FILLS_RAW, (Stream.POSITIONS,)),
    ("tca", Stream.FILLS_RAW, (Stream.AUDIT,)),
    ("audit_trail", Stream.AUDIT, ()),
    ("agent", Stream.ORDERS, ()),
)


def null_service(hop: int) -> type[Any]:
    """A service that only forwards: each input -> constant outputs derived from it."""
    from tradeos_lab.pipeline import Service
    from tradeos_lab.pipeline.registry import service_class

    name, source, outputs = NULL_HOPS[hop]
    payloads = _null_payloads()

    class NullService(Service):
        def handle(self, message: Message) -> list[Message]:
            return [derive(message, payloads[s], producer=self.name) for s in outputs]

    NullService.name = name
    NullService.inputs = (source,)
    NullService.outputs = outputs
    NullService.background = service_class(name).background  # as the real one runs
    return NullService


def run_stage(
    settings: Settings,
    name: str,
    null: bool,
    *,
    ready: MpEvent,
    stop: MpEvent,
    trips: Any,
    turns: Any,
) -> None:
    """One stage process: a real or a null service under the `ServiceRunner`, round trips counted.

    Ready once its consumer groups exist, so no bar published after it is missed.
    """
    import tradeos_lab as tl
    from tradeos_lab.pipeline import ServiceContext
    from tradeos_lab.pipeline.registry import service_class
    from tradeos_lab.pipeline.runner import (
        ServiceRunner,
        freeze_startup_objects,
        yield_to_trading,
    )

    warnings.simplefilter("ignore", SharedRedisServerWarning)  # as in main()
    count_round_trips(trips)
    cls = null_service([h[0] for h in NULL_HOPS].index(name)) if null else service_class(name)
    lab = tl.connect(settings, start=False)
    if not null:
        watch_write_turns(lab, turns)
    ctx = ServiceContext(lab=lab, settings=settings, instance=f"{name}-bench", clock=time.time)
    runner = ServiceRunner(cls, ctx, health_port=0)
    for consumer in runner.consumers:
        lab.bus.ensure_group(consumer.stream, consumer.group)
    if cls.background:  # as `run_service` does in each supervised process
        yield_to_trading(lab)
    freeze_startup_objects()
    halt = threading.Event()
    threading.Thread(target=lambda: (stop.wait(), halt.set()), daemon=True).start()
    ready.set()
    profile_dir = os.environ.get(PROFILE_ENV)
    if profile_dir:
        profiles = profile_threads()
        with cProfile.Profile(time.thread_time) as profile:
            runner.run(halt, handle_signals=False)
        stats = pstats.Stats(profile, *profiles)
        Path(profile_dir).mkdir(parents=True, exist_ok=True)
        stats.dump_stats(Path(profile_dir) / f"{'null-' if null else ''}{name}.prof")
    else:
        runner.run(halt, handle_signals=False)
    lab.close()


def watch_write_turns(lab: Any, turns: Any) -> None:
    """Copy the seconds this process's records writers waited for SQLite's write turn and held
    it into `turns` (a shared array of two), every 50 ms, for the driver to read."""
    from tradeos_lab.stores.records.write_turns import WriteTurns

    own = WriteTurns.of(lab.records.engine)
    if own is None:  # PostgreSQL: no turns
        return

    def copy() -> None:
        while True:
            turns[0], turns[1] = own.waited_s, own.held_s
            time.sleep(0.05)

    threading.Thread(target=copy, daemon=True).start()


def profile_threads() -> list[cProfile.Profile]:
    """Profile every thread started from now on in this process (the runner hands batches to
    worker threads, which a profile of the main thread does not see); each thread's profile is
    added to the returned list as it ends."""
    profiles: list[cProfile.Profile] = []
    original = threading.Thread.run

    def profiled(self: threading.Thread) -> None:
        profile = cProfile.Profile(time.thread_time)
        profile.enable()
        try:
            original(self)
        finally:
            profile.disable()
            profiles.append(profile)

    threading.Thread.run = profiled  # type: ignore[method-assign]  # benchmark instrumentation
    return profiles


# ---- the real chain --------------------------------------------------------------------------


def real_chain_services() -> list[str]:
    """The services `up` runs by default (no news source set) less ingestion, in pipeline
    order; the null chain has a hop for each.

    Raises `ImportError` while a service or the runner is not there yet.
    """
    import tradeos_lab.pipeline.runner  # noqa: F401  # the runner must exist too
    from tradeos_lab.pipeline.registry import service_class

    names = [n for n in Settings.model_fields["pipeline_services"].default if n != "ingestion"]
    for name in names:
        service_class(name)
    if sorted(names) != sorted(h[0] for h in NULL_HOPS):
        raise SystemExit(f"the null chain's hops {NULL_HOPS} do not mirror the services {names}")
    return names


# ---- the driver ------------------------------------------------------------------------------


@dataclass
class Arrivals:
    """When each bar's first fill reached `fills.raw`, by the bar's correlation id."""

    at: dict[str, float] = field(default_factory=dict)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(
        self, ids: Sequence[str], *, first: float = 60.0, idle: float = 10.0, limit: float = 90.0
    ) -> None:
        """Until every bar of `ids` has a fill, or none came for `idle` seconds once fills flow
        (`first` seconds for the first one), or `limit` seconds in all. A real chain need not
        fill every bar (its first one; a rule that refuses) and may fall behind."""
        start = time.monotonic()
        wanted = set(ids)
        with self.cond:
            seen = len(wanted & self.at.keys())
            last_change = start
            while seen < len(wanted):
                now = time.monotonic()
                quiet = idle if seen else first
                if now - start >= limit or now - last_change >= quiet:
                    return
                self.cond.wait(0.1)
                count = len(wanted & self.at.keys())
                if count != seen:
                    seen, last_change = count, time.monotonic()


def read_fills(client: redis.Redis, key: str, arrivals: Arrivals, stop: threading.Event) -> None:
    """Time every fill's arrival: XREAD BLOCK on `fills.raw` from the entries that were there
    when it started, always from the last id seen (so nothing added between reads is missed)."""
    try:
        last = client.xinfo_stream(key)["last-generated-id"]
    except redis.ResponseError:  # no stream yet: everything it will hold is new
        last = "0-0"
    while not stop.is_set():
        reply = client.xread({key: last}, count=1000, block=100)
        now = time.perf_counter()
        for _key, entries in reply or ():
            for entry_id, fields in entries:
                last = entry_id
                message = decode(fields[FIELD.encode()], stream=Stream.FILLS_RAW)
                with arrivals.cond:
                    arrivals.at.setdefault(message.correlation_id, now)
                    arrivals.cond.notify_all()


@dataclass
class ChainResult:
    name: str
    throughput: float = 0.0
    filled: int = 0
    offered: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    trips: dict[str, float] = field(default_factory=dict)
    #: Milliseconds per bar each stage waited for the records' write turn and held it
    #: (SQLite), over the throughput run until every stage had caught up.
    turn_ms: dict[str, tuple[float, float]] = field(default_factory=dict)
    commands_per_bar: float = 0.0
    #: Bars per second of the throughput run until every stage had caught up with it.
    caught_up: float = 0.0
    #: CPU milliseconds each stage process spent per bar of the throughput run (until every
    #: stage had caught up).
    cpu_ms: dict[str, float] = field(default_factory=dict)
    #: Median milliseconds each hop added to the fixed-rate run's bars: stream -> ms from the
    #: stream before it (by the entries' ids, which Redis stamps in milliseconds).
    hop_ms: dict[str, float] = field(default_factory=dict)
    #: Why bars got no fill: reason -> (count, one example).
    unfilled: dict[str, tuple[int, str]] = field(default_factory=dict)

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Stage:
    """One process of a chain and its shared round-trip counter."""

    name: str
    process: Any
    trips: Any
    turns: Any


#: Starts one stage process: (name, ready event, stop event, round-trip counter, write-turn
#: seconds) -> process.
StageStarter = Callable[[str, MpEvent, MpEvent, Any, Any], Any]


def start_chain(names: Sequence[str], starter: StageStarter, stop: MpEvent) -> list[Stage]:
    """Start the stages one by one, each after the previous one is ready to consume."""
    ctx = mp.get_context("spawn")
    stages: list[Stage] = []
    for name in names:
        ready, trips = ctx.Event(), ctx.Value("q", 0, lock=False)
        turns = ctx.Array("d", 2, lock=False)
        process = starter(name, ready, stop, trips, turns)
        while not ready.wait(0.5):
            if not process.is_alive():
                raise RuntimeError(f"stage {name} exited at start (code {process.exitcode})")
        stages.append(Stage(name, process, trips, turns))
    return stages


def run_chain(
    name: str,
    names: Sequence[str],
    starter: StageStarter,
    bus: Bus,
    *,
    rate: float,
    seconds: float,
    backlog: int,
    verbose: bool = False,
) -> ChainResult:
    """Start the chain's processes, then measure throughput, latency and round trips."""
    stop = mp.get_context("spawn").Event()
    result = ChainResult(name)
    arrivals = Arrivals()
    reader_stop = threading.Event()
    reader = threading.Thread(
        target=read_fills,
        args=(bus.redis, bus.stream_key(Stream.FILLS_RAW), arrivals, reader_stop),
        daemon=True,
    )
    stages: list[Stage] = []
    try:
        stages = start_chain(names, starter, stop)
        reader.start()
        time.sleep(0.5)
        # throughput: a backlog published flat out, until its last bar's fill
        bars = [zigzag_bar(i, start=SERIES_START) for i in range(backlog)]
        cpu_before = {s.name: cpu_seconds(s.process.pid) for s in stages}
        turns_before = {s.name: tuple(s.turns) for s in stages}
        t0 = time.perf_counter()
        bus.publish_many(Stream.MARKET_DATA, bars)
        # the background stages may still work through the backlog after its last fill: the
        # next run starts when every group has read and settled everything
        caught_up: list[float] = []
        watcher = threading.Thread(target=lambda: caught_up.append(wait_caught_up(bus)))
        watcher.start()
        ids = [b.correlation_id for b in bars]
        arrivals.wait_for(ids)
        done = [arrivals.at[i] for i in ids if i in arrivals.at]
        result.filled = len(done)
        if done:
            result.throughput = len(done) / (max(done) - t0)
        watcher.join()
        result.caught_up = backlog / (caught_up[0] - t0)
        result.cpu_ms = {
            s.name: (cpu_seconds(s.process.pid) - cpu_before[s.name]) * 1000 / backlog
            for s in stages
        }
        time.sleep(0.1)  # the stages' last copy of their write-turn seconds
        result.turn_ms = {
            s.name: (
                (s.turns[0] - turns_before[s.name][0]) * 1000 / backlog,
                (s.turns[1] - turns_before[s.name][1]) * 1000 / backlog,
            )
            for s in stages
        }
        time.sleep(0.5)
        # latency and round trips: bars offered at a fixed rate
        before = commands_done(bus.redis)
        trips_before = {s.name: s.trips.value for s in stages}
        count = int(rate * seconds)
        offered = [zigzag_bar(backlog + i, start=SERIES_START) for i in range(count)]
        sent: dict[str, float] = {}
        t_start = time.perf_counter()
        for i, message in enumerate(offered):
            due = t_start + i / rate
            while (now := time.perf_counter()) < due:
                if due - now > 0.0005:
                    time.sleep(due - now - 0.0003)
            sent[message.correlation_id] = time.perf_counter()
            bus.publish(Stream.MARKET_DATA, message)
        arrivals.wait_for(list(sent))
        result.offered = count
        result.commands_per_bar = (commands_done(bus.redis) - before) / count
        result.trips = {s.name: (s.trips.value - trips_before[s.name]) / count for s in stages}
        result.latencies_ms = [
            (arrivals.at[c] - t) * 1000 for c, t in sent.items() if c in arrivals.at
        ]
        result.unfilled = why_unfilled(bus, [*ids, *sent], arrivals)
        result.hop_ms = hop_latencies(bus, set(sent))
    finally:
        if verbose:
            print(bus.inspect.streams()[["stream", "length", "dead_letters"]].to_string())
            for stream in Stream:
                dead = bus.inspect.dead_letters(stream, count=3)
                if len(dead):
                    print(stream.value, dead[["group", "reason", "error"]].to_string())
            events = bus.inspect.read(Stream.RISK_EVENTS, count=100_000)
            if len(events):
                print(events["payload.detail"].str.split(":").str[0].value_counts().head(5))
        reader_stop.set()
        stop.set()
        for stage in stages:
            stage.process.join(timeout=20)
            if stage.process.is_alive():
                stage.process.kill()
    return result


def wait_caught_up(bus: Bus, *, limit: float = 120.0) -> float:
    """When every consumer group of the chain has no entry left to read or settle (lag and
    pending 0 on every stream), as `time.perf_counter()`; the time of giving up after `limit`
    seconds (the figure then says it did not catch up by then). Redis's own lag per group, read
    in one XINFO per stream: `bus.inspect.groups()` counts the lag exactly by scanning the
    entries, too dear to poll every 20 ms beside the run it measures."""
    deadline = time.perf_counter() + limit
    while True:
        behind = 0
        for stream in Stream:
            try:
                groups = bus.redis.xinfo_groups(bus.stream_key(stream))
            except redis.ResponseError:  # no such stream: nothing to read
                continue
            behind += sum(int(g["pending"]) + int(g.get("lag") or 0) for g in groups)
        now = time.perf_counter()
        if not behind or now >= deadline:
            return now
        time.sleep(0.02)


#: The way from a bar to its fill, stream by stream.
HOPS = (
    Stream.MARKET_DATA,
    Stream.SIGNALS_RAW,
    Stream.SIGNALS_MODIFIED,
    Stream.INTENTS,
    Stream.FILLS_RAW,
)


def hop_latencies(bus: Bus, chains: set[str]) -> dict[str, float]:
    """Where the bars of `chains` (correlation ids) spent their time: the median of each hop's
    share, from the time Redis stamped each chain's first entry on one stream to its first entry
    on the next (whole milliseconds)."""
    added: dict[Stream, dict[str, int]] = {}
    for stream in HOPS:
        first: dict[str, int] = {}
        for entry_id, fields in bus.redis.xrange(bus.stream_key(stream), "-", "+"):
            corr = bus.decode(stream, fields).correlation_id
            if corr in chains and corr not in first:
                first[corr] = int(entry_id.split(b"-")[0])
        added[stream] = first
    shares: dict[str, float] = {}
    for before, after in itertools.pairwise(HOPS):
        gaps = sorted(
            added[after][c] - added[before][c] for c in added[after].keys() & added[before]
        )
        if gaps:
            shares[after.value] = float(gaps[len(gaps) // 2])
    return shares


def why_unfilled(bus: Bus, ids: Sequence[str], arrivals: Arrivals) -> dict[str, tuple[int, str]]:
    """Why each bar of `ids` without a fill got none, read back from the streams by correlation
    id: the rule Feasibility refused it under, the reason it skipped it, an order rejected, or
    how far down the chain it got. Reason -> (bars, one example)."""
    with arrivals.cond:
        missing = set(ids) - arrivals.at.keys()
    if not missing:
        return {}
    reached: dict[str, Stream] = {}
    found: dict[str, tuple[str, str]] = {}
    for stream in (
        Stream.SIGNALS_RAW,
        Stream.SIGNALS_MODIFIED,
        Stream.INTENTS,
        Stream.ORDERS,
        Stream.RISK_EVENTS,
        Stream.AUDIT,
    ):
        for _id, fields in bus.redis.xrange(bus.stream_key(stream), "-", "+"):
            message = bus.decode(stream, fields)
            corr = message.correlation_id
            if corr not in missing:
                continue
            p = message.payload
            if isinstance(p, RiskEvent):
                rule = p.detail.split(":", 1)[0]
                found.setdefault(corr, (f"refused: {rule}", p.detail))
            elif isinstance(p, Audit) and p.action in ("intent.skipped", "signal.filtered"):
                found.setdefault(corr, (f"{p.action}: {p.reason[:40]}", p.reason))
            elif isinstance(p, Order) and not p.filled_quantity:
                found.setdefault(corr, (f"order {p.status.value} unfilled", p.reason or ""))
            elif not isinstance(p, Audit | RiskEvent):
                reached[corr] = stream
    reasons: dict[str, tuple[int, str]] = {}
    for corr in missing:
        if corr in found:
            reason, example = found[corr]
        elif corr in reached:
            reason, example = f"last seen on {reached[corr].value}", corr
        else:
            reason, example = "no signal (the strategy's first bar, or not handled)", corr
        count, first = reasons.get(reason, (0, example))
        reasons[reason] = (count + 1, first)
    return reasons


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="bars per second offered")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the fixed-rate run")
    parser.add_argument("--backlog", type=int, default=5000, help="bars of the throughput run")
    parser.add_argument("--chain", choices=("both", "null", "real"), default="both")
    parser.add_argument("--records", default="sqlite", help="sqlite, or a PostgreSQL URL")
    parser.add_argument("--verbose", action="store_true", help="stream lengths, dead letters")
    args = parser.parse_args()
    # one scratch server holds bus, cache and flags: the benchmark measures round trips, not
    # the eviction policies that would want a server each
    warnings.simplefilter("ignore", SharedRedisServerWarning)
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        workdir = Path(tmp)
        (workdir / "redis").mkdir()
        server = start_server(workdir / "redis")
        try:
            results: list[ChainResult] = []
            if args.chain in ("both", "null"):
                hops = [h[0] for h in NULL_HOPS]
                results.append(chain("null", args, server.url, workdir, hops))
            if args.chain in ("both", "real"):
                try:
                    services = real_chain_services()
                except ImportError as e:
                    print(f"real chain skipped: the pipeline services are not importable ({e})")
                else:
                    results.append(chain("real", args, server.url, workdir, services))
            report(results, args)
        finally:
            server.stop()
    return 0


def chain(
    kind: str, args: argparse.Namespace, url: str, workdir: Path, names: Sequence[str]
) -> ChainResult:
    """Run one chain ("null" or "real") over the scratch server, in a namespace of its own."""
    from tradeos_lab.stores.records import RecordsStore

    base = url.rsplit("/", 1)[0]
    series_length = args.backlog + int(args.rate * args.seconds)
    series = [zigzag_bar(i, start=SERIES_START).payload for i in range(series_length)]
    series_bars = pd.DataFrame([b.model_dump() for b in series])
    # the feed the services are told ingestion polls: the series the driver publishes (a Signal
    # Engine far behind the cache reads bars before its first one from it)
    feed = save_bars(series_bars, workdir / f"{kind}.csv")
    records = args.records
    if records == "sqlite":
        records = f"sqlite:///{workdir / f'records-{kind}.db'}"
    settings = load_settings(
        namespace=f"bench{kind}",
        data_dir=workdir / f"lab-{kind}",
        bus_url=f"{base}/0",
        cache_url=f"{base}/1",
        flags_url=f"{base}/2",
        records_url=records,
        lake_url=f"chdb://{workdir / f'lake-{kind}'}",
        stream_maxlen=1_000_000,
        # ingestion would write each bar to the cache as it comes; the driver writes them once,
        # so they must outlive the run (the paper broker fills against the latest cached bar)
        bar_ttl_1m_seconds=3600,
        cache_bars=series_length,
        pipeline_symbols=(_SYMBOL,),
        pipeline_strategies=(STRATEGY_REF,),
        pipeline_feed=f"replay:{feed}",
    )
    if kind == "real":
        RecordsStore.open(settings, migrate=True).close()
        import tradeos_lab as tl
        from tradeos_lab import operator

        with tl.connect(settings, start=False) as lab:
            operator.arm(lab, actor="user:bench", reason="pipeline benchmark")
            allow_trading_every_bar(lab)
            # no costs: the zig-zag's round trips then neither lose nor make money, so the
            # account, and each order's size, stays the same over the whole run
            why = {"changed_by": "user:bench", "reason": "pipeline benchmark: costless fills"}
            lab.records.set_config("broker.paper.fee_bps", 0.0, **why)
            lab.records.set_config("broker.paper.slippage_bps", 0.0, **why)
            # what ingestion caches before it publishes each bar (the driver stands in for it):
            # the whole series, so every fill's arrival bar is cached as it is in a running
            # stack, and the latest price, for sizing and the paper broker
            lab.cache.write_bars(series_bars)
            lab.cache.set_price(_SYMBOL, series[-1].close)
    client = make_redis(url, role="bus", settings=settings, client_name="bench-driver")
    bus = Bus(client, keys=Keys(settings.namespace), settings=settings, producer="ingestion")

    def starter(name: str, ready: MpEvent, stop: MpEvent, trips: Any, turns: Any) -> Any:
        process = mp.get_context("spawn").Process(
            target=run_stage,
            args=(settings, name, kind == "null"),
            kwargs={"ready": ready, "stop": stop, "trips": trips, "turns": turns},
        )
        process.start()
        return process

    try:
        return run_chain(
            kind,
            names,
            starter,
            bus,
            rate=args.rate,
            seconds=args.seconds,
            backlog=args.backlog,
            verbose=args.verbose,
        )
    finally:
        client.close()


def report(results: list[ChainResult], args: argparse.Namespace) -> None:
    print(f"offered {args.rate:g} bars/s for {args.seconds:g} s; backlog {args.backlog} bars")
    for r in results:
        print(
            f"{r.name:>5} chain: throughput {r.throughput:,.0f} bars/s "
            f"({r.filled} of {args.backlog} filled; every stage caught up at "
            f"{r.caught_up:,.0f} bars/s); latency p50 {r.pct(0.5):.2f} ms, "
            f"p99 {r.pct(0.99):.2f} ms ({len(r.latencies_ms)} of {r.offered} bars filled); "
            f"server commands {r.commands_per_bar:.1f}/bar"
        )
        for name, trips in r.trips.items():
            waited, held = r.turn_ms.get(name, (0.0, 0.0))
            turn = (
                f"; records write turn: waited {waited:.2f}, held {held:.2f} ms per bar"
                if waited or held
                else ""
            )
            print(
                f"        {name:<16} {trips:.2f} Redis round trips per bar; "
                f"{r.cpu_ms.get(name, float('nan')):.2f} ms CPU per bar (throughput run){turn}"
            )
        print(f"        {'every stage':<16} {sum(r.cpu_ms.values()):.2f} ms CPU per bar")
        if r.hop_ms:
            hops = ", ".join(f"{stream} +{ms:.0f}" for stream, ms in r.hop_ms.items())
            print(f"        latency p50 by hop (ms): {hops}")
        for reason, (count, example) in sorted(r.unfilled.items(), key=lambda kv: -kv[1][0]):
            print(f"        not filled: {count} bars, {reason} (e.g. {example[:160]})")
    by_name = {r.name: r for r in results}
    if "null" in by_name and "real" in by_name:
        null, real = by_name["null"], by_name["real"]
        ratio = real.throughput / null.throughput if null.throughput else float("nan")
        print(f"throughput real/null: {ratio:.0%} (target >= 50%)")
        behind = real.caught_up / null.caught_up if null.caught_up else float("nan")
        print(f"every stage caught up, real/null: {behind:.0%}")
        # The stages share the machine's cores, so the throughput ratio tracks this one; on a
        # machine shared with other work it is the steadier of the two.
        real_cpu, null_cpu = sum(real.cpu_ms.values()), sum(null.cpu_ms.values())
        print(
            f"CPU per bar, every stage, null/real: {null_cpu / real_cpu:.0%} "
            f"({null_cpu:.2f} ms beside {real_cpu:.2f} ms)"
        )
        print(
            f"latency p50 real {real.pct(0.5):.2f} ms (target <= 2) beside null "
            f"{null.pct(0.5):.2f} ms; p99 real {real.pct(0.99):.2f} ms (target <= 10) beside "
            f"null {null.pct(0.99):.2f} ms"
        )


if __name__ == "__main__":
    sys.exit(main())
