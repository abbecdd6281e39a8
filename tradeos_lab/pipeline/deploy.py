"""The pipeline from a notebook: its services and deployed strategies, inside the kernel.

    lab = tl.connect()
    lab.pipeline.start()                            # the services, as threads of this kernel
    handle = lab.pipeline.deploy(MyStrategy)        # a class, an instance, or "module:Class"
    handle                                          # <Deployment my_strategy running ...>
    handle.stop()                                   # or let the kernel exit
    lab.pipeline.stop()                             # every service and deployment started here

`start` runs the same services `tradeos-lab up` supervises as processes, on the same runner, for
a notebook whose lab owns its stack (or attaches to one whose `up` runs `--no-pipeline`).

The worker is the Signal Engine with one strategy, run by the same `ServiceRunner` as every
service, in a thread of this process: its own consumer group `signal_engine.<strategy name>` on
`market_data` (so it sees every bar beside the pipeline's own engine), its own heartbeat (it shows
in `status` like any service), its signals on `signals.raw` for the rest of the pipeline. A new
deployment starts with the bars published after it; deploying the same strategy again continues
its group where it stopped. It stops with `handle.stop()` or when the kernel exits. A strategy in
a file runs the same way from the command line: `--strategy module:Class` (or `path.py:Class`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from uuid import UUID

from tradeos_lab.errors import ValidationError
from tradeos_lab.keys import Stream
from tradeos_lab.pipeline.service import ServiceContext
from tradeos_lab.pipeline.services.signal_engine import SignalEngine
from tradeos_lab.strategies import Strategy, get_strategy, register

if TYPE_CHECKING:
    from tradeos_lab.lab import Lab
    from tradeos_lab.pipeline.runner import RunningService
    from tradeos_lab.settings import Settings

#: How long `stop()` waits for the worker to finish its batch and ack it.
STOP_TIMEOUT_S = 30.0


def deployed_engine(strategy: Strategy[Any], run_id: UUID | None = None) -> type[SignalEngine]:
    """The Signal Engine class running only `strategy`, under the service (and consumer group)
    name `signal_engine.<strategy name>`; its signals carry `run_id`, the backtest run the
    strategy was promoted from, if any."""
    name = f"{SignalEngine.name}.{strategy.name}"
    return type(
        f"SignalEngine[{strategy.name}]",
        (SignalEngine,),
        {"name": name, "given_strategies": (strategy,), "run_id": run_id, "__module__": __name__},
    )


def resolve_strategy(strategy: Strategy[Any] | type[Strategy[Any]] | str) -> Strategy[Any]:
    """A strategy instance from an instance, a class (default parameters) or a reference
    (registered name, `module:Class`, `path.py:Class`); its class is registered, so its saved
    live state can be read back by name."""
    if isinstance(strategy, str):
        strategy = get_strategy(strategy)
    if isinstance(strategy, type) and issubclass(strategy, Strategy):
        strategy = strategy()
    if not isinstance(strategy, Strategy):
        raise ValidationError(
            f"deploy takes a Strategy instance, a Strategy class or a strategy reference, "
            f"got {type(strategy).__name__}"
        )
    register(type(strategy))
    return strategy


class Deployment:
    """One deployed strategy: its worker (a thread of this process), and how to stop it."""

    def __init__(self, lab: Lab, strategy: Strategy[Any], run_id: UUID | None = None) -> None:
        from tradeos_lab.pipeline.runner import ServiceRunner

        self.strategy = strategy
        self.run_id = run_id
        self.service = deployed_engine(strategy, run_id)
        self.name = self.service.name
        self.instance = f"kernel-{os.getpid()}"
        # New bars only: a strategy deployed today does not answer yesterday's bars.
        lab.bus.ensure_group(Stream.MARKET_DATA, self.name, start_id="$")
        ctx = ServiceContext(lab=lab, settings=lab.settings, instance=self.instance)
        self.runner = ServiceRunner(self.service, ctx)
        self.worker = self.runner.run_in_thread()  # stopped at interpreter exit too

    @property
    def running(self) -> bool:
        return self.worker.alive

    @property
    def health_url(self) -> str | None:
        """The worker's `/healthz` (its `/metrics` beside it), as for every service."""
        return self.worker.health_url

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Finish the batch in hand, ack it and stop the worker (it leaves the registry)."""
        self.worker.stop(timeout)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Deployment {self.strategy!r} as {self.name} ({self.instance}) {state}>"


class Pipeline:
    """`lab.pipeline`: the notebook's handle on the paper-trading pipeline."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.services: dict[str, RunningService] = {}
        self.deployments: dict[str, Deployment] = {}

    def start(
        self,
        services: Iterable[str] | None = None,
        *,
        without: Iterable[str] = (),
        settings: Settings | None = None,
    ) -> dict[str, RunningService]:
        """Run the pipeline's services in this kernel, one thread each, in pipeline order:
        `services` (default: the `pipeline_services` setting) less `without`, under `settings`
        (default: the lab's; a copy changes what they run: feed, symbols, strategies, pace). A
        service already started here is left running. Returns the running services by name."""
        from tradeos_lab.pipeline.registry import PIPELINE_ORDER, service_class
        from tradeos_lab.pipeline.runner import ServiceRunner

        settings = settings or self.lab.settings
        chosen = settings.pipeline_services if services is None else services
        if isinstance(chosen, str) or isinstance(without, str):
            raise ValidationError("start takes service names as a list, not one string")
        skipped = {service_class(name) for name in without}  # an unknown name: a clear error
        order = {name: i for i, name in enumerate(PIPELINE_ORDER)}
        wanted = sorted(
            {service_class(name) for name in chosen} - skipped,
            key=lambda cls: order.get(cls.name, len(order)),
        )
        instance = f"kernel-{os.getpid()}"
        for cls in wanted:
            if cls.name in self.services and self.services[cls.name].alive:
                continue
            ctx = ServiceContext(lab=self.lab, settings=settings, instance=instance)
            self.services[cls.name] = ServiceRunner(cls, ctx).run_in_thread()
        return dict(self.services)

    def deploy(
        self, strategy: Strategy[Any] | type[Strategy[Any]] | str, *, run_id: UUID | None = None
    ) -> Deployment:
        """Run `strategy` as a Signal Engine worker of its own in this process (see the module
        docstring); a strategy already deployed here is stopped and replaced. `run_id`: the
        backtest run it is promoted from (`lab.research.promote`), stamped on its signals."""
        chosen = resolve_strategy(strategy)
        name = deployed_engine(chosen).name
        previous = self.deployments.pop(name, None)
        if previous is not None:
            previous.stop()
        deployment = Deployment(self.lab, chosen, run_id)
        self.deployments[name] = deployment
        return deployment

    def stop(self) -> None:
        """Stop every strategy deployed and every service started from this lab, the deployed
        strategies first, then the services from the first stage to the last (each finishes and
        acks the batch in hand)."""
        while self.deployments:
            _, deployment = self.deployments.popitem()
            deployment.stop()
        for name in list(self.services):
            self.services.pop(name).stop()

    def __repr__(self) -> str:
        services = ", ".join(n for n, s in self.services.items() if s.alive) or "none"
        deployments = ", ".join(self.deployments) or "none"
        return f"<Pipeline services: {services}; deployments: {deployments}>"
