"""`tl.connect()`: one object holding the parts of the workbench a notebook or a service uses.

With no URLs set the parts are embedded: the stack already running for the data directory is used
(found through its runtime file), or, unless `start=False`, one is started for this process and
stopped with it. `start=False` attaches only: a dashboard kernel or a CLI command never becomes the
owner of the servers a pipeline runs on (culling the kernel would stop them).

Parts open when first used, so a lab never touches a part it does not use: `lab.flags` works while
the lake or the records database is down. `parts=(...)` limits the lab to the named parts and opens
them at once (a failure there closes what was already opened); any other part then raises
`PartNotConnected` instead of opening.
"""

from __future__ import annotations

import atexit
import functools
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

from tradeos_lab.errors import (
    DependencyUnavailable,
    PartNotConnected,
    StackAlreadyRunning,
    StackError,
    StackNotRunning,
    ValidationError,
)
from tradeos_lab.keys import Keys
from tradeos_lab.settings import RedisRole, Settings, load_settings
from tradeos_lab.stack.clients import make_redis, ping
from tradeos_lab.stack.embedded import EmbeddedStack
from tradeos_lab.stack.runtime import RuntimeInfo, read_runtime, stack_password

if TYPE_CHECKING:
    import redis

    from tradeos_lab.marketdata import BarReader
    from tradeos_lab.pipeline.deploy import Pipeline
    from tradeos_lab.providers import BarProvider
    from tradeos_lab.research.lab import Research
    from tradeos_lab.stores.lake import Lake
    from tradeos_lab.stores.records import RecordsStore
    from tradeos_lab.tiers.bus import Bus
    from tradeos_lab.tiers.cache import Cache
    from tradeos_lab.tiers.flags import Flags, KillSwitches

Part = Literal["bus", "cache", "flags", "records", "lake"]
#: Every part, in the order `connect(parts=...)` opens them.
PARTS: tuple[Part, ...] = get_args(Part)

ATTACH_WAIT_S = 30.0


class Lab:
    """The bus, cache and flags tiers, the records database and the lake, wired to one stack.

    Each part opens on first access. Built by `connect()`, which decides which parts are allowed
    and whether this process owns the embedded stack.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        parts: Iterable[Part] = PARTS,
        stack: EmbeddedStack | None = None,
        runtime: RuntimeInfo | None = None,
    ) -> None:
        self.settings = settings
        self.keys = Keys(settings.namespace)
        self.parts: frozenset[Part] = frozenset(parts)
        self.stack = stack
        self.runtime = runtime
        self._opened: dict[Part, Any] = {}
        self._clients: list[redis.Redis] = []
        self._owned_lake: Lake | None = None
        self._kill_switches: KillSwitches | None = None
        self._lock = threading.RLock()
        self._closed = False

    # ---- parts, each opened on first access -----------------------------------------------

    @property
    def bus(self) -> Bus:
        return cast("Bus", self._part("bus"))

    @property
    def cache(self) -> Cache:
        return cast("Cache", self._part("cache"))

    @property
    def flags(self) -> Flags:
        return cast("Flags", self._part("flags"))

    @property
    def records(self) -> RecordsStore:
        return cast("RecordsStore", self._part("records"))

    @property
    def lake(self) -> Lake:
        return cast("Lake", self._part("lake"))

    @property
    def kill_switches(self) -> KillSwitches:
        """The kill switches of the services and the agent: agent source only, so they can never
        clear an operator's halt; every change is audited on the bus."""
        built = self._kill_switches
        if built is not None:  # asked for every order: once built, no import and no lock
            return built
        from tradeos_lab.operator import audit_sink
        from tradeos_lab.tiers.flags import KillSource, KillSwitches

        with self._lock:
            if self._kill_switches is None:
                self._kill_switches = KillSwitches(
                    self.flags.redis,
                    keys=self.keys,
                    source=KillSource.AGENT,
                    audit=audit_sink(self.bus, producer=self.settings.service_name),
                )
            return self._kill_switches

    @functools.cached_property
    def pipeline(self) -> Pipeline:
        """The paper-trading pipeline from a notebook: `lab.pipeline.start()`,
        `lab.pipeline.deploy(strategy)`; what it started stops when the lab closes."""
        from tradeos_lab.pipeline.deploy import Pipeline

        return Pipeline(self)

    @functools.cached_property
    def research(self) -> Research:
        """Backtests, sweeps and walk-forwards kept in the records: `lab.research.runs()`."""
        from tradeos_lab.research.lab import Research

        return Research(lambda: self.records, self.settings, self)

    def bars(self, provider: BarProvider | None = None) -> BarReader:
        """Three-tier bar reads (cache -> lake -> `provider`), writing back down on a miss."""
        from tradeos_lab.marketdata import BarReader

        return BarReader.from_lab(self, provider)

    def _part(self, name: Part) -> Any:
        with self._lock:
            if name in self._opened:
                return self._opened[name]
            if self._closed:
                raise StackError(f"this lab is closed; connect again to use its {name}")
            if name not in self.parts:
                allowed = ", ".join(p for p in PARTS if p in self.parts)
                raise PartNotConnected(
                    f"this lab was connected with parts=({allowed}); it has no {name}"
                )
            opener: Callable[[], Any] = getattr(self, f"_open_{name}")
            self._opened[name] = opener()
            return self._opened[name]

    def _redis(self, role: RedisRole, *, tracking: bool = False) -> redis.Redis:
        url = self.settings.redis_url(role)
        if url is not None:
            address = url.get_secret_value()
        else:
            runtime = self._embedded_runtime(role)
            address = runtime.redis_url(role, self._password())
        client = make_redis(
            address,
            role=role,
            settings=self.settings,
            client_name=self.settings.service_name,
            tracking=tracking,
        )
        try:
            ping(client, role)
        except BaseException:
            client.close()
            raise
        self._clients.append(client)
        return client

    def _open_bus(self) -> Bus:
        from tradeos_lab.tiers.bus import Bus

        return Bus(self._redis("bus"), keys=self.keys, settings=self.settings)

    def _open_cache(self) -> Cache:
        from tradeos_lab.tiers.cache import Cache

        # Bar reads go through a near cache on its own RESP3 connection (setting
        # cache_near_entries; 0 = every read is a round trip).
        near = self._redis("cache", tracking=True) if self.settings.cache_near_entries else None
        return Cache(self._redis("cache"), keys=self.keys, settings=self.settings, near_client=near)

    def _open_flags(self) -> Flags:
        from tradeos_lab.tiers.flags import Flags

        return Flags(self._redis("flags"), keys=self.keys, settings=self.settings)

    def _open_records(self) -> RecordsStore:
        import sqlalchemy.exc

        from tradeos_lab.stores.records import RecordsStore

        if self.settings.records_url is None:
            self._embedded_runtime("records")
        store = RecordsStore.open(self.settings)
        try:
            with store.engine.connect():
                pass
        except sqlalchemy.exc.SQLAlchemyError as e:
            store.close()
            raise DependencyUnavailable(
                f"the records database does not answer: {type(e).__name__}"
            ) from e
        return store

    def _open_lake(self) -> Lake:
        """The stack's lake when this process owns the stack; the embedded lake through the
        running stack's gateway; a `chdb://` lake through the gateway of a stack that serves
        that directory, else opened here (chdb lets one process open it); a server's lake."""
        from tradeos_lab.stores.lake import Lake

        if self.stack is not None and self.stack.lake is not None:
            return cast("Lake", self.stack.lake)  # stopped with the stack
        if self.settings.lake_url is None:
            runtime = self._embedded_runtime("lake")
            if not runtime.lake_gateway:
                raise StackError(f"the stack in {runtime.data_dir} serves no lake")
            lake = Lake.over_gateway(runtime.lake_gateway, token=self._password())
        elif gateway := self._serving_gateway():
            lake = Lake.over_gateway(gateway, token=self._password())
        else:
            lake = Lake.open(self.settings)
        self._owned_lake = lake
        return lake

    def _serving_gateway(self) -> str | None:
        """The gateway of a running stack that serves this lake's chdb directory, if any."""
        path = self.settings.chdb_lake_path
        if path is None:
            return None
        runtime = read_runtime(self.settings.data_dir.expanduser().resolve())
        return None if runtime is None else runtime.lake_gateway_for(path)

    def _embedded_runtime(self, part: str) -> RuntimeInfo:
        """The runtime of the stack serving an embedded `part`, re-read unless this lab owns it
        (the owner may have restarted since `connect`)."""
        if self.stack is not None and self.runtime is not None:
            return self.runtime
        data_dir = self.settings.data_dir.expanduser().resolve()
        runtime = read_runtime(data_dir)
        if runtime is None:
            raise StackNotRunning(f"no stack is running for {data_dir}, which serves the {part}")
        self.runtime = runtime
        return runtime

    def _password(self) -> str:
        if self.stack is not None:
            return self.stack.password
        return stack_password(self.settings.data_dir.expanduser().resolve())

    # ---- lifecycle -------------------------------------------------------------------------

    @property
    def owns_stack(self) -> bool:
        """True when this process started the embedded stack (it stops with `close()`)."""
        return self.stack is not None

    def close(self) -> None:
        """Stop the services and strategies started from this lab, release every client it
        opened, and stop the embedded stack if it started it."""
        if "pipeline" in self.__dict__:  # only if a notebook used it: stop before the clients go
            self.pipeline.stop()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            records: RecordsStore | None = self._opened.get("records")
            self._opened.clear()
        for client in self._clients:
            client.close()
        if records is not None:
            records.close()
        if self._owned_lake is not None:
            self._owned_lake.close()
        if self.stack is not None:
            self.stack.stop()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        where = (
            "embedded, owned by this process"
            if self.owns_stack
            else f"attached to pid {self.runtime.owner_pid}"
            if self.runtime
            else "servers"
        )
        return (
            f"<Lab {where}; data_dir={self.settings.data_dir}; "
            f"parts={','.join(p for p in PARTS if p in self.parts)}; "
            f"embedded={','.join(self.settings.embedded_parts) or 'none'}; closed={self._closed}>"
        )


def connect(
    settings: Settings | None = None,
    *,
    parts: Iterable[Part] | None = None,
    start: bool = True,
    **overrides: Any,
) -> Lab:
    """Connect to the running stack, or (with `start=True`) start an embedded one owned by this
    process.

    `start=False` never starts or owns a stack: it raises `StackNotRunning` when a part it needs is
    embedded and no stack runs for the data directory. `parts=("flags", "bus")` opens those parts
    now and no other; without `parts` every part opens on first use. Keyword arguments override
    settings (`tl.connect(profile="prod", data_dir="/srv/lab")`).
    """
    settings = settings or load_settings(**overrides)
    wanted = PARTS if parts is None else _check_parts(parts)
    embedded = [p for p in wanted if p in settings.embedded_parts]
    stack: EmbeddedStack | None = None
    runtime: RuntimeInfo | None = None
    if embedded:
        data_dir = settings.data_dir.expanduser().resolve()
        runtime = read_runtime(data_dir)
        if runtime is None and not start:
            raise StackNotRunning(
                f"no stack is running for {data_dir} (needed for the {', '.join(embedded)}); "
                "nothing was started"
            )
        if runtime is None:
            try:
                stack = EmbeddedStack(settings, owner_kind="process")
                runtime = stack.start()
            except StackAlreadyRunning:
                stack = None
                runtime = _wait_for_runtime(settings)
    lab = Lab(settings, parts=wanted, stack=stack, runtime=runtime)
    try:
        if parts is not None:
            for part in wanted:
                lab._part(part)
    except BaseException:
        lab.close()
        raise
    if stack is not None:
        atexit.register(lab.close)
    return lab


def _check_parts(parts: Iterable[str]) -> tuple[Part, ...]:
    """The named parts in opening order; an unknown or missing name is a `ValidationError`."""
    if isinstance(parts, str):
        parts = (parts,)
    named = set(parts)
    unknown = sorted(named.difference(PARTS))
    if unknown:
        raise ValidationError(
            f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}"
        )
    if not named:
        raise ValidationError(f"parts is empty; name at least one of {', '.join(PARTS)}")
    return tuple(p for p in PARTS if p in named)


def _wait_for_runtime(settings: Settings) -> RuntimeInfo:
    """Another process is starting the stack right now: wait for its runtime file."""
    data_dir = settings.data_dir.expanduser().resolve()
    deadline = time.monotonic() + ATTACH_WAIT_S
    while time.monotonic() < deadline:
        info = read_runtime(data_dir)
        if info is not None:
            return info
        time.sleep(0.1)
    raise StackError(f"the stack in {data_dir} is locked by a process that never finished starting")
