"""Deploying a strategy from a notebook: a Signal Engine worker of its own, inside the kernel.

    lab = tl.connect()
    handle = lab.pipeline.deploy(MyStrategy)        # a class, an instance, or "module:Class"
    handle                                          # <Deployment my_strategy running ...>
    handle.stop()                                   # or let the kernel exit

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
from typing import TYPE_CHECKING, Any

from tradeos_lab.errors import ValidationError
from tradeos_lab.keys import Stream
from tradeos_lab.pipeline.service import ServiceContext
from tradeos_lab.pipeline.services.signal_engine import SignalEngine
from tradeos_lab.strategies import Strategy, get_strategy, register

if TYPE_CHECKING:
    from tradeos_lab.lab import Lab

#: How long `stop()` waits for the worker to finish its batch and ack it.
STOP_TIMEOUT_S = 30.0


def deployed_engine(strategy: Strategy[Any]) -> type[SignalEngine]:
    """The Signal Engine class running only `strategy`, under the service (and consumer group)
    name `signal_engine.<strategy name>`."""
    name = f"{SignalEngine.name}.{strategy.name}"
    return type(
        f"SignalEngine[{strategy.name}]",
        (SignalEngine,),
        {"name": name, "given_strategies": (strategy,), "__module__": __name__},
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

    def __init__(self, lab: Lab, strategy: Strategy[Any]) -> None:
        from tradeos_lab.pipeline.runner import ServiceRunner

        self.strategy = strategy
        self.service = deployed_engine(strategy)
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
        self.deployments: dict[str, Deployment] = {}

    def deploy(self, strategy: Strategy[Any] | type[Strategy[Any]] | str) -> Deployment:
        """Run `strategy` as a Signal Engine worker of its own in this process (see the module
        docstring); a strategy already deployed here is stopped and replaced."""
        chosen = resolve_strategy(strategy)
        name = deployed_engine(chosen).name
        previous = self.deployments.pop(name, None)
        if previous is not None:
            previous.stop()
        deployment = Deployment(self.lab, chosen)
        self.deployments[name] = deployment
        return deployment

    def stop(self) -> None:
        """Stop every strategy deployed from this lab."""
        while self.deployments:
            _, deployment = self.deployments.popitem()
            deployment.stop()

    def __repr__(self) -> str:
        names = ", ".join(self.deployments) or "none"
        return f"<Pipeline deployments: {names}>"
