"""Labs for the agent tests: the shared `armed_lab` (records on PostgreSQL and on SQLite, kill
switches armed); `agent` is the agent service on a clock the test moves."""

from __future__ import annotations

import pytest
from agent_support import Clock

from tradeos_lab.lab import Lab
from tradeos_lab.pipeline.service import ServiceContext
from tradeos_lab.pipeline.services.agent import Agent


@pytest.fixture
def lab(armed_lab: Lab) -> Lab:
    return armed_lab


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def agent(lab: Lab, clock: Clock) -> Agent:
    return Agent(ServiceContext(lab=lab, settings=lab.settings, instance="t", clock=clock))
