"""`tl.connect()`: one object holding every part of the workbench for a notebook or a service.

With no URLs set the parts are embedded: the stack already running for the data directory is used
(found through its runtime file), or one is started for this process and stopped with it.
"""

from __future__ import annotations

import atexit
import time
from typing import TYPE_CHECKING, Any

from tradeos_lab.errors import StackAlreadyRunning, StackError
from tradeos_lab.keys import Keys
from tradeos_lab.settings import RedisRole, Settings, load_settings
from tradeos_lab.stack.clients import make_redis, ping
from tradeos_lab.stack.embedded import EmbeddedStack
from tradeos_lab.stack.runtime import RuntimeInfo, read_runtime, stack_password

if TYPE_CHECKING:
    import redis

    from tradeos_lab.marketdata import BarReader
    from tradeos_lab.providers import BarProvider
    from tradeos_lab.stores.lake import Lake
    from tradeos_lab.stores.records import RecordsStore
    from tradeos_lab.tiers.bus import Bus
    from tradeos_lab.tiers.cache import Cache
    from tradeos_lab.tiers.flags import Flags, KillSwitches

ATTACH_WAIT_S = 30.0


class Lab:
    """The bus, cache and flags tiers, the records database and the lake, wired to one stack."""

    def __init__(
        self,
        settings: Settings,
        *,
        redis_urls: dict[str, str],
        stack: EmbeddedStack | None,
        runtime: RuntimeInfo | None,
        password: str | None,
    ) -> None:
        from tradeos_lab.operator import audit_sink
        from tradeos_lab.stores.lake import Lake
        from tradeos_lab.stores.records import RecordsStore
        from tradeos_lab.tiers.bus import Bus
        from tradeos_lab.tiers.cache import Cache
        from tradeos_lab.tiers.flags import Flags, KillSource, KillSwitches

        self.settings = settings
        self.keys = Keys(settings.namespace)
        self.stack = stack
        self.runtime = runtime
        self._clients: list[redis.Redis] = []
        self._closed = False

        def client(role: RedisRole, *, tracking: bool = False) -> redis.Redis:
            c = make_redis(
                redis_urls[role],
                role=role,
                settings=settings,
                client_name=settings.service_name,
                tracking=tracking,
            )
            ping(c, role)
            self._clients.append(c)
            return c

        self.bus: Bus = Bus(client("bus"), keys=self.keys, settings=settings)
        # Bar reads go through a near cache on its own RESP3 connection (setting
        # cache_near_entries; 0 = every read is a round trip).
        near = client("cache", tracking=True) if settings.cache_near_entries > 0 else None
        self.cache: Cache = Cache(
            client("cache"), keys=self.keys, settings=settings, near_client=near
        )
        self.flags: Flags = Flags(client("flags"), keys=self.keys, settings=settings)
        # The services' and the agent's kill switches: agent source only, every change audited.
        self.kill_switches: KillSwitches = KillSwitches(
            self.flags.redis,
            keys=self.keys,
            source=KillSource.AGENT,
            audit=audit_sink(self.bus, producer=settings.service_name),
        )
        self.records: RecordsStore = RecordsStore.open(settings)
        if stack is not None and stack.lake is not None:
            self.lake: Lake = stack.lake
        elif settings.lake_url is None and runtime is not None and runtime.lake_gateway:
            self.lake = Lake.over_gateway(runtime.lake_gateway, token=password or "")
        else:
            self.lake = Lake.open(settings)
        self._owns_lake = self.lake is not (stack.lake if stack else None)

    def bars(self, provider: BarProvider | None = None) -> BarReader:
        """Three-tier bar reads (cache -> lake -> `provider`), writing back down on a miss."""
        from tradeos_lab.marketdata import BarReader

        return BarReader.from_lab(self, provider)

    @property
    def owns_stack(self) -> bool:
        """True when this process started the embedded stack (it stops with `close()`)."""
        return self.stack is not None

    def close(self) -> None:
        """Release every client; stop the embedded stack if this process started it."""
        if self._closed:
            return
        self._closed = True
        for c in self._clients:
            c.close()
        self.records.close()
        if self._owns_lake:
            self.lake.close()
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
            f"embedded={','.join(self.settings.embedded_parts) or 'none'}; closed={self._closed}>"
        )


def connect(settings: Settings | None = None, **overrides: Any) -> Lab:
    """Connect to the running stack, or start an embedded one owned by this process.

    Keyword arguments override settings (`tl.connect(profile="prod", data_dir="/srv/lab")`).
    """
    settings = settings or load_settings(**overrides)
    stack: EmbeddedStack | None = None
    runtime: RuntimeInfo | None = None
    password: str | None = None
    redis_urls = {
        role: url.get_secret_value()
        for role in ("bus", "cache", "flags")
        if (url := settings.redis_url(role)) is not None
    }
    if settings.embedded_parts:
        data_dir = settings.data_dir.expanduser().resolve()
        runtime = read_runtime(data_dir)
        if runtime is None:
            try:
                stack = EmbeddedStack(settings, owner_kind="process")
                runtime = stack.start()
            except StackAlreadyRunning:
                stack = None
                runtime = _wait_for_runtime(settings)
        password = stack.password if stack else stack_password(data_dir)
        for role in ("bus", "cache", "flags"):
            if role not in redis_urls:
                redis_urls[role] = runtime.redis_url(role, password)
    try:
        lab = Lab(settings, redis_urls=redis_urls, stack=stack, runtime=runtime, password=password)
    except BaseException:
        if stack is not None:
            stack.stop()
        raise
    if stack is not None:
        atexit.register(lab.close)
    return lab


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
