"""Labs for the agent tests: the machine's Redis under this test's namespace, the records on a
fresh PostgreSQL database or a SQLite file; kill switches armed. `agent` is the agent service
on a clock the test moves."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from agent_support import Clock

import tradeos_lab as tl
from tradeos_lab import operator
from tradeos_lab.lab import Lab
from tradeos_lab.pipeline.service import ServiceContext
from tradeos_lab.pipeline.services.agent import Agent
from tradeos_lab.settings import Settings, SharedRedisServerWarning
from tradeos_lab.stores.records import RecordsStore


@pytest.fixture(params=["postgres", "sqlite"])
def lab(
    request: pytest.FixtureRequest,
    server_settings: Settings,
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
) -> Iterator[Lab]:
    settings = server_settings
    if request.param == "sqlite":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SharedRedisServerWarning)
            settings = settings_factory(
                **{
                    k: getattr(server_settings, k)
                    for k in ("namespace", "bus_url", "cache_url", "flags_url", "lake_url")
                },
                records_url=f"sqlite:///{tmp_path / 'records.db'}",
            )
        RecordsStore.open(settings, migrate=True).close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SharedRedisServerWarning)
        lab = tl.connect(settings, start=False)
    operator.arm(lab, actor="user:test", reason="agent test")
    yield lab
    lab.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def agent(lab: Lab, clock: Clock) -> Agent:
    return Agent(ServiceContext(lab=lab, settings=lab.settings, instance="t", clock=clock))
