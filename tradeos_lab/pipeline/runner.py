"""The one runner of every pipeline service: consume -> handle -> publish + ack, and the upkeep.

`ServiceRunner(service_cls, ctx).run(stop)` runs one service in this process. Each input stream
gets a bus `Consumer` in the group named after the service, polled in its own thread: batches,
blocking reads, own pending drained after a restart, idle entries reclaimed, transient errors
retried in place, bad messages dead-lettered. The consumer commits the handler's outputs with the
ack of their input in one MULTI/EXEC and gives every output an id derived from the input's id, so
a re-handled input emits the same ids. Beside the consumers the runner fires the service's timers
and publishes what they return, heartbeats in the flags tier's worker registry (status, lag,
pending and counts, read by `tradeos-lab status`) and serves `/healthz` and `/metrics`.

Stopping (the `stop` event, or SIGTERM / SIGINT when `run` is on the main thread) lets every
consumer finish and settle the batch in hand, then the service is closed and the worker leaves
the registry. A notebook runs a service in its kernel with `run_in_thread()`.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import importlib.util
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import redis
from prometheus_client import Counter, Gauge, Histogram

from tradeos_lab.errors import ContractError, StoreError, TransientError, ValidationError
from tradeos_lab.observability.health import HealthServer
from tradeos_lab.observability.logs import correlation
from tradeos_lab.pipeline.registry import service_class
from tradeos_lab.pipeline.service import Service, ServiceContext, Timer
from tradeos_lab.symbols import canonical_name
from tradeos_lab.tiers.bus.consumer import BatchHandler, Consumer, Delivery, PollResult
from tradeos_lab.tiers.bus.wire import text

if TYPE_CHECKING:
    from tradeos_lab.contracts import Message
    from tradeos_lab.lab import Lab
    from tradeos_lab.settings import Settings

log = logging.getLogger(__name__)

HANDLED = Counter("tradeos_pipeline_handled", "Messages a service's handler answered", ["service"])
FAILED = Counter(
    "tradeos_pipeline_failed", "Messages a service's handler raised on", ["service", "stream"]
)
HANDLE_SECONDS = Histogram(
    "tradeos_pipeline_handle_seconds",
    "Time a service's handler spent on one message (outputs not yet committed)",
    ["service"],
    buckets=(0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.1, 0.5, 2.0),
)
TIMER_MESSAGES = Counter(
    "tradeos_pipeline_timer_messages", "Messages published by a service's timers", ["service"]
)
LAG = Gauge(
    "tradeos_pipeline_lag", "Entries of an input not yet delivered to the group", ["service"]
)
PENDING = Gauge(
    "tradeos_pipeline_pending", "Entries delivered to the group and not yet acked", ["service"]
)

#: How many entries one read fetches; a batch's outputs and acks go out in one MULTI/EXEC.
BATCH = 256
#: How much lower a background service's process runs (`nice`) where the OS has no `SCHED_IDLE`:
#: when the trading stages want the CPU they get about ten times its share.
BACKGROUND_NICENESS = 10
#: How long one blocking read waits; also the longest a stop waits for an idle consumer.
BLOCK_MS = 500
#: Allocations between two collections of the cyclic collector's young generation in a service
#: process (`freeze_startup_objects`; Python's default is 700).
YOUNG_COLLECTION_THRESHOLD = 20_000
#: How often the worker heartbeats (well inside the profile's heartbeat TTL).
HEARTBEAT_S = 1.0


@dataclass
class RunnerCounts:
    """What this runner did since it started (heartbeat and `/healthz` report it)."""

    handled: int = 0
    failed: int = 0
    dead_lettered: int = 0
    lost: int = 0
    timer_messages: int = 0
    timer_failures: int = 0

    def add(self, result: PollResult) -> None:
        self.handled += result.handled
        self.failed += result.failed
        self.dead_lettered += result.dead_lettered
        self.lost += result.lost


@dataclass
class RunningService:
    """A service running on a thread of this process (a notebook's kernel): stop it explicitly,
    or it stops when the interpreter exits."""

    runner: ServiceRunner
    thread: threading.Thread
    stop_event: threading.Event = field(repr=False)

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    @property
    def health_url(self) -> str | None:
        return self.runner.health_url

    def stop(self, timeout: float | None = 30.0) -> None:
        """Finish the batch in hand, ack it, close the service; waits up to `timeout` seconds."""
        self.stop_event.set()
        self.thread.join(timeout)

    def __repr__(self) -> str:
        state = "running" if self.alive else "stopped"
        return f"<RunningService {self.runner.service.name}@{self.runner.ctx.instance} {state}>"


class ServiceRunner:
    """Runs ONE service in this process: its consumers, timers, heartbeat and health endpoint."""

    def __init__(
        self,
        service_cls: type[Service],
        ctx: ServiceContext,
        *,
        batch: int = BATCH,
        block_ms: int = BLOCK_MS,
        heartbeat_s: float = HEARTBEAT_S,
        health_port: int = 0,
    ) -> None:
        if not (isinstance(service_cls, type) and issubclass(service_cls, Service)):
            raise ValidationError(f"a ServiceRunner runs a Service subclass, not {service_cls!r}")
        name = canonical_name(getattr(service_cls, "name", None), "service name")
        if service_cls.name != name:
            raise ValidationError(f"service name {service_cls.name!r} must be spelled {name!r}")
        self.ctx = ctx
        self.service = service_cls(ctx)
        self.heartbeat_s = heartbeat_s
        #: 0 (the default) picks a free port: every service process of a stack serves its own
        #: endpoint, found through the URL in its heartbeat (a fixed port would collide).
        self.health_port = health_port
        self.counts = RunnerCounts()
        self.consumers: list[Consumer] = [
            ctx.lab.bus.consumer(stream, name, ctx.instance, count=batch, block_ms=block_ms)
            for stream in self.service.inputs
        ]
        self.timers: tuple[Timer, ...] = tuple(self.service.timers())
        self.health: HealthServer | None = None
        self.status = "starting"
        self._counts_lock = threading.Lock()
        self._failure: BaseException | None = None
        #: Whether the bus and the flags tier answered the last heartbeat.
        self._reachable = {"bus": True, "flags": True}
        self._lag = 0
        self._pending = 0
        self._closed = False
        self._started = threading.Event()
        self._m_handled = HANDLED.labels(service=name)
        self._m_seconds = HANDLE_SECONDS.labels(service=name)
        self._m_timer = TIMER_MESSAGES.labels(service=name)
        self._m_failed = {
            c.stream: FAILED.labels(service=name, stream=c.stream.value) for c in self.consumers
        }

    def __repr__(self) -> str:
        return f"<ServiceRunner {self.service.name}@{self.ctx.instance} {self.status}>"

    @property
    def health_url(self) -> str | None:
        return self.health.url if self.health is not None else None

    # ---- handling -------------------------------------------------------------------------------

    def handle(self, delivery: Delivery) -> Sequence[Message]:
        """The service's outputs for one delivery, handled and logged under its correlation id."""
        message = delivery.message
        with correlation(message.correlation_id):
            started = time.perf_counter()
            try:
                if delivery.redelivered:
                    self.service.on_redelivery([message])
                outputs = self.service.handle(message)
            except TransientError:
                raise  # retried in place by the consumer, which logs it
            except Exception as e:
                self._m_failed[delivery.stream].inc()
                log.warning(
                    "%s could not handle %s entry %s (delivery %d): %s: %s",
                    self.service.name,
                    delivery.stream.value,
                    delivery.entry_id,
                    delivery.deliveries,
                    type(e).__name__,
                    str(e)[:300],
                    extra={"message_id": message.message_id, "schema": message.schema_name},
                )
                raise
            self._m_seconds.observe(time.perf_counter() - started)
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "%s handled %s entry %s -> %d outputs",
                    self.service.name,
                    delivery.stream.value,
                    delivery.entry_id,
                    len(outputs),
                    extra={"message_id": message.message_id},
                )
        self._m_handled.inc()
        return outputs

    @property
    def batch_handler(self) -> BatchHandler | None:
        """`handle_batch` when the service handles batches its own way, else None (one at a
        time: the default `handle_batch` would only call `handle` per message)."""
        if type(self.service).handle_batch is Service.handle_batch:
            return None
        return self.handle_batch

    def handle_batch(self, deliveries: Sequence[Delivery]) -> list[Sequence[Message]]:
        """The service's outputs for a batch of deliveries, one list per delivery, in order."""
        started = time.perf_counter()
        # a batch of one is logged under its message's correlation id, as `handle` logs it
        chain = deliveries[0].message.correlation_id if len(deliveries) == 1 else None
        try:
            with correlation(chain):
                again = [d.message for d in deliveries if d.redelivered]
                if again:
                    self.service.on_redelivery(again)
                outputs = self.service.handle_batch([d.message for d in deliveries])
        except TransientError:
            raise  # retried in place by the consumer, which logs it
        except Exception as e:
            log.info(
                "%s could not handle a batch of %d: %s: %s; one at a time instead",
                self.service.name,
                len(deliveries),
                type(e).__name__,
                str(e)[:300],
            )
            raise
        if len(outputs) != len(deliveries):
            raise ContractError(
                f"{self.service.name}.handle_batch returned {len(outputs)} output lists "
                f"for {len(deliveries)} messages"
            )
        elapsed = (time.perf_counter() - started) / len(deliveries)
        for _ in deliveries:
            self._m_seconds.observe(elapsed)
        self._m_handled.inc(len(deliveries))
        return outputs

    def _record(self, result: PollResult) -> None:
        with self._counts_lock:
            self.counts.add(result)

    def run_once(self, max_messages: int | None = None, *, block_ms: int = 0) -> PollResult:
        """One batch from each input, handled and settled on this thread (tests, notebooks)."""
        total = PollResult()
        for consumer in self.consumers:
            if max_messages is not None and total.fetched >= max_messages:
                break
            result = consumer.poll(self.handle, block_ms=block_ms, batch_handler=self.batch_handler)
            self._record(result)
            total.add(result)
        return total

    def drain(self, *, idle_rounds: int = 1, max_messages: int | None = None) -> PollResult:
        """Handle every input until a round of reads finds nothing (tests, notebooks)."""
        total = PollResult()
        quiet = 0
        while quiet < idle_rounds:
            result = self.run_once()
            total.add(result)
            quiet = 0 if result.fetched else quiet + 1
            if max_messages is not None and total.fetched >= max_messages:
                break
        return total

    # ---- timers ---------------------------------------------------------------------------------

    def fire(self, timer: Timer) -> int:
        """Fire `timer` once and publish its messages, each on its contract's stream, in order."""
        messages = list(timer.fire())
        run: list[Message] = []
        for message in messages:
            if run and message.STREAM != run[0].STREAM:
                self.ctx.lab.bus.publish_many(run[0].STREAM, run)
                run = []
            run.append(message)
        if run:
            self.ctx.lab.bus.publish_many(run[0].STREAM, run)
        self._m_timer.inc(len(messages))
        with self._counts_lock:
            self.counts.timer_messages += len(messages)
        return len(messages)

    def fire_timers(self) -> int:
        """Fire every timer once (tests, notebooks); the number of messages published."""
        return sum(self.fire(t) for t in self.timers)

    def _run_timers(self, stop: threading.Event) -> None:
        """Fire each timer every `every_s` seconds (first at start) until `stop`."""
        due = dict.fromkeys(range(len(self.timers)), time.monotonic())
        while not stop.is_set():
            now = time.monotonic()
            for i, timer in enumerate(self.timers):
                if now < due[i]:
                    continue
                due[i] = now + timer.every_s
                try:
                    self.fire(timer)
                except (TransientError, redis.RedisError) as e:
                    self._timer_failed(timer, e, logging.WARNING)
                except Exception as e:
                    self._timer_failed(timer, e, logging.ERROR)
            stop.wait(max(0.0, min(due.values()) - time.monotonic()))

    def _timer_failed(self, timer: Timer, error: BaseException, level: int) -> None:
        with self._counts_lock:
            self.counts.timer_failures += 1
        log.log(
            level,
            "%s timer %s failed; it fires again in %.2fs: %s: %s",
            self.service.name,
            timer.name,
            timer.every_s,
            type(error).__name__,
            str(error)[:300],
            exc_info=level >= logging.ERROR,
        )

    # ---- heartbeat and health -------------------------------------------------------------------

    def _measure(self) -> None:
        """Lag and pending of the service's group, summed over its inputs (one read per input)."""
        lag = pending = 0
        bus = self.ctx.lab.bus
        for consumer in self.consumers:
            try:
                groups = bus.redis.xinfo_groups(bus.stream_key(consumer.stream))
            except redis.ResponseError:  # the stream does not exist yet: nothing behind
                continue
            for g in groups:
                name = g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
                if name != consumer.group:
                    continue
                pending += int(g["pending"])
                if g.get("lag") is not None:
                    lag += int(g["lag"])
                else:  # Redis 6.2 reports no lag: count what follows the last delivered id
                    lag += bus.inspect.group_info(consumer.stream, consumer.group).lag
        self._lag, self._pending = lag, pending
        LAG.labels(service=self.service.name).set(lag)
        PENDING.labels(service=self.service.name).set(pending)

    def _counted(self) -> dict[str, int]:
        """The counts the heartbeat and `/healthz` report, read together."""
        with self._counts_lock:
            return {
                "handled": self.counts.handled,
                "failed": self.counts.failed,
                "dead_lettered": self.counts.dead_lettered,
                "timer_messages": self.counts.timer_messages,
            }

    def heartbeat(self) -> None:
        """Tell the worker registry this worker lives, with its status, lag, pending and counts.

        Lag and pending come from the bus; a bus that does not answer leaves the last figures
        (and marks the bus degraded) but the heartbeat still goes out. The counts are taken
        before the bus is asked, so a batch they count as handled is committed by then and not
        also reported pending.
        """
        counts = self._counted()
        try:
            self._measure()
            self._reachable["bus"] = True
        except (TransientError, redis.RedisError) as e:
            self._reachable["bus"] = False
            log.warning("%s could not read its lag: %s: %s", self.service.name, type(e).__name__, e)
        info: dict[str, str | int | float] = {
            "status": self.status,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "inputs": ",".join(s.value for s in self.service.inputs),
            "lag": self._lag,
            "pending": self._pending,
            **counts,
        }
        if self.health is not None:
            info["health_url"] = self.health.url
        try:
            self.ctx.lab.flags.workers.heartbeat(self.service.name, self.ctx.instance, info)
            self._reachable["flags"] = True
        except (TransientError, redis.RedisError) as e:
            self._reachable["flags"] = False
            log.warning("%s heartbeat failed: %s: %s", self.service.name, type(e).__name__, e)

    def check(self) -> dict[str, dict[str, Any]]:
        """The `/healthz` parts: the service, and the bus and flags tier as it last found them
        (degraded, not down, when one does not answer: the service retries and goes on)."""
        counts = self._counted()
        state = "down" if self._failure is not None or self.status == "stopped" else "up"
        service = {
            "state": state,
            "status": self.status,
            "instance": self.ctx.instance,
            "lag": self._lag,
            "pending": self._pending,
            **counts,
        }
        if self._failure is not None:
            service["error"] = f"{type(self._failure).__name__}: {self._failure}"
        parts: dict[str, dict[str, Any]] = {"service": service}
        for tier, ok in self._reachable.items():
            parts[tier] = {"state": "up" if ok else "degraded"}
        return parts

    # ---- running --------------------------------------------------------------------------------

    def adopt_orphans(self) -> int:
        """Take over the pending entries of group members that left the worker registry.

        A process killed mid-batch leaves its entries pending under its own consumer name; its
        successor runs under a new instance name and would wait `claim_idle_ms` for the bus's
        idle reclaim. A member missing from the registry (deregistered by the supervisor that saw
        it die, or silent for the heartbeat TTL) is dead: its entries are claimed at once without
        counting a delivery (XCLAIM JUSTID) and handled first, like this consumer's own pending.
        Returns how many entries were taken over.
        """
        bus = self.ctx.lab.bus
        live = {
            w.instance
            for w in self.ctx.lab.flags.workers.live_workers()
            if w.service == self.service.name
        }
        adopted = 0
        for consumer in self.consumers:
            key = bus.stream_key(consumer.stream)
            try:
                members = bus.redis.xinfo_consumers(key, consumer.group)
            except redis.ResponseError:  # no stream or group yet: nobody to take over from
                continue
            for member in members:
                name = text(member["name"])
                pending = int(member["pending"])
                if name == consumer.name or not pending or _registry_name(name) in live:
                    continue
                rows = bus.redis.xpending_range(
                    key, consumer.group, "-", "+", pending, consumername=name
                )
                ids: list[Any] = [row["message_id"] for row in rows]
                if ids:
                    bus.redis.xclaim(key, consumer.group, consumer.name, 0, ids, justid=True)
                    adopted += len(ids)
                    log.info(
                        "%s took over %d pending %s entries of the departed member %s",
                        self.service.name,
                        len(ids),
                        consumer.stream.value,
                        name,
                    )
            consumer.restart()  # drain own pending (the adopted entries included) first
        return adopted

    def _consume(self, consumer: Consumer, stop: threading.Event) -> None:
        """One input's loop: poll until `stop`, settling each batch before looking at `stop`,
        and lingering after a batch that did not fill as the service asks (`linger_s`)."""
        try:
            while not stop.is_set():
                result = consumer.run(
                    self.handle, stop=stop, max_messages=1, batch_handler=self.batch_handler
                )
                self._record(result)
                if result.fetched < consumer.count:
                    linger = self.service.linger_s(consumer.stream)
                    if linger > 0:
                        stop.wait(linger)
        except BaseException as e:
            self._failure = e
            log.exception("%s consumer of %s died", self.service.name, consumer.stream.value)
            stop.set()

    def run(self, stop: threading.Event | None = None, *, handle_signals: bool = True) -> None:
        """Run until `stop` is set (or SIGTERM / SIGINT on the main thread), then shut down.

        Shutdown lets each consumer settle the batch in hand (outputs and acks committed), fires
        no more timers, closes the service and removes the worker from the registry. Raises what
        killed a consumer, so a supervisor sees the failure and restarts the process.
        """
        stop = stop if stop is not None else threading.Event()
        restore = self._install_signals(stop) if handle_signals else {}
        try:
            self.health = HealthServer(
                self.service.name,
                self.check,
                host=self.ctx.settings.health_host,
                port=self.health_port,
            ).start()
            self.status = "running"
            self.heartbeat()
            self._adopt()
            self._retire()
            self._started.set()
            threads = [
                threading.Thread(
                    target=self._consume,
                    args=(c, stop),
                    name=f"{self.service.name}-{c.stream.value}",
                    daemon=True,
                )
                for c in self.consumers
            ]
            if self.timers:
                threads.append(
                    threading.Thread(
                        target=self._run_timers,
                        args=(stop,),
                        name=f"{self.service.name}-timers",
                        daemon=True,
                    )
                )
            for t in threads:
                t.start()
            log.info(
                "%s running as %s: inputs %s, %d timers, health %s",
                self.service.name,
                self.ctx.instance,
                ",".join(s.value for s in self.service.inputs) or "none",
                len(self.timers),
                self.health_url,
            )
            while not stop.wait(self.heartbeat_s):
                self.heartbeat()
            self.status = "stopping"
            log.info("%s stopping: finishing the batch in hand", self.service.name)
            for t in threads:
                t.join()
        finally:
            for signum, handler in restore.items():
                signal.signal(signum, handler)
            self.close()
        if self._failure is not None:
            raise self._failure

    def _adopt(self) -> None:
        try:
            self.adopt_orphans()
        except (TransientError, redis.RedisError) as e:  # the idle reclaim still gets them later
            log.warning(
                "%s could not take over departed members' entries: %s", self.service.name, e
            )

    def _retire(self) -> None:
        """Drop this service's groups on the streams it no longer reads (`retired_inputs`)."""
        for stream in self.service.retired_inputs:
            try:
                if self.ctx.lab.bus.drop_group(stream, self.service.name):
                    log.info(
                        "%s no longer reads %s: its group there is dropped",
                        self.service.name,
                        stream.value,
                    )
            except (TransientError, StoreError) as e:  # tried again at the next start
                log.warning(
                    "%s could not drop its group on %s: %s", self.service.name, stream.value, e
                )

    def _install_signals(self, stop: threading.Event) -> dict[int, Any]:
        """SIGTERM and SIGINT set `stop` (only possible on the main thread)."""
        if threading.current_thread() is not threading.main_thread():
            return {}

        def on_signal(signum: int, frame: FrameType | None) -> None:
            log.info("%s got signal %d", self.service.name, signum)
            stop.set()

        previous: dict[int, Any] = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.getsignal(signum)
            signal.signal(signum, on_signal)
        return previous

    def close(self) -> None:
        """Close the service, stop the health endpoint, leave the worker registry (once)."""
        if self._closed:
            return
        self._closed = True
        self.status = "stopped"
        try:
            self.service.close()
        finally:
            if self.health is not None:
                self.health.stop()
            with contextlib.suppress(TransientError, redis.RedisError):
                self.ctx.lab.flags.workers.deregister(self.service.name, self.ctx.instance)
        log.info(
            "%s stopped: %d handled, %d dead-lettered",
            self.service.name,
            self.counts.handled,
            self.counts.dead_lettered,
        )

    def run_in_thread(self) -> RunningService:
        """Run on a daemon thread of this process (a notebook's kernel), returning once it runs;
        stopped by the returned handle's `stop()` or when the interpreter exits."""
        stop = threading.Event()
        failed: list[BaseException] = []

        def target() -> None:
            try:
                self.run(stop, handle_signals=False)
            except BaseException as e:
                failed.append(e)
                if self._started.is_set():  # a failure while running: the thread's report
                    raise

        thread = threading.Thread(target=target, name=f"{self.service.name}-runner", daemon=True)
        running = RunningService(self, thread, stop)
        thread.start()
        while not self._started.wait(0.05) and thread.is_alive():
            pass  # returns once it serves /healthz and has heartbeated
        if not self._started.is_set() and failed:
            raise failed[0]  # it could not start (a port in use, a store down): say so here
        atexit.register(running.stop, 10.0)
        return running


# ---- one service as a process -------------------------------------------------------------


def resolve_service(ref: str) -> type[Service]:
    """A registered service name, `module:Class` or `path.py:Class` -> the Service subclass."""
    if not isinstance(ref, str) or not ref.strip():
        raise ValidationError(f"service reference must be a non-empty string, got {ref!r}")
    if ":" not in ref:
        return service_class(ref)
    where, _, class_name = ref.rpartition(":")
    if where.endswith(".py"):
        path = Path(where).resolve()
        if not path.is_file():
            raise ValidationError(f"service file {where!r} does not exist")
        module_name = "tradeos_service_" + re.sub(r"\W", "_", str(path))
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ValidationError(f"service file {where!r} cannot be imported")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as e:
            raise ValidationError(f"cannot import service module {where!r}: {e}") from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Service)) or cls is Service:
        raise ValidationError(f"{ref!r} does not name a Service subclass")
    return cls


def _registry_name(instance: str) -> str:
    """An instance name as the worker registry spells it (canonical), or itself if it has none."""
    try:
        return canonical_name(instance, "instance")
    except ValidationError:
        return instance


def default_instance() -> str:
    """This process's worker-instance name: host and pid."""
    return canonical_name(f"{socket.gethostname()}-{os.getpid()}", "instance")


def run_service(
    ref: str | type[Service],
    settings: Settings,
    *,
    instance: str | None = None,
    stop: threading.Event | None = None,
    batch: int = BATCH,
) -> None:
    """Run one service in this process until SIGTERM / SIGINT (or `stop`); what `tradeos-lab
    service NAME` and each supervised process run."""
    import tradeos_lab as tl

    cls = resolve_service(ref) if isinstance(ref, str) else ref
    with tl.connect(settings, start=False) as lab:
        ctx = ServiceContext(lab, settings, instance or default_instance())
        runner = ServiceRunner(cls, ctx, batch=batch)
        if cls.background:
            yield_to_trading(lab)
        freeze_startup_objects()
        runner.run(stop)


def yield_to_trading(lab: Lab) -> None:
    """Make this process a background service's (`Service.background`): a lower CPU priority
    and the records' write turn after the trading stages. For a process of its own only: an
    unprivileged process cannot raise its priority again.

    On Linux the process runs under `SCHED_IDLE`: a trading stage that wakes (its read
    answered) takes a CPU from it at once, where under `nice` alone it could wait out the
    background service's time slice. It still gets a CPU nothing else wants, so it catches up
    between bursts. Elsewhere it runs `BACKGROUND_NICENESS` lower."""
    os.nice(BACKGROUND_NICENESS)
    if hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except OSError as e:  # a sandbox that forbids it: nice alone
            log.warning("background service stays under nice %d: %s", BACKGROUND_NICENESS, e)
    lab.records.write_in_background()


def freeze_startup_objects() -> None:
    """Put what a service process made at start (modules, schemas, mappers, the service) out of
    the cyclic collector's reach. A service makes thousands of short-lived objects a batch, and
    every full collection they trigger would otherwise walk the hundreds of thousands made at
    start again. For a process of its own only: what is frozen is never collected.

    The young generation is collected every `YOUNG_COLLECTION_THRESHOLD` allocations instead of
    every 700: at the default a stage ran a collection every few messages, each walking the
    batch's live objects again (about 4% of Execution's, Feasibility's and TCA's CPU in the
    pipeline benchmark; under 1% at this threshold)."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, older, oldest)
