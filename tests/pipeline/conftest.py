"""Labs for pipeline tests: on the machine's servers (the default) and on the embedded stack.

`pipeline_lab`: the machine's Redis 7 (bus db 0, cache db 1, flags db 2, all under this test's own
namespace) and a fresh PostgreSQL records database, migrated; the kill switches are armed, so
services may trade until a test engages one. `pipeline_settings` are its settings, for starting
services in subprocesses. `embedded_pipeline_lab`: the same on an embedded stack this test owns
(SQLite records, redis-servers from the wheel), for what only the default setup shows.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator

import pytest

import tradeos_lab as tl
from tradeos_lab import operator
from tradeos_lab.lab import Lab
from tradeos_lab.settings import Settings, SharedRedisServerWarning


@pytest.fixture
def pipeline_settings(server_settings: Settings) -> Settings:
    """Settings for the machine's servers under this test's namespace; records migrated."""
    return server_settings


@pytest.fixture
def pipeline_lab(pipeline_settings: Settings) -> Iterator[Lab]:
    """A lab on the machine's servers with the kill switches armed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SharedRedisServerWarning)
        lab = tl.connect(pipeline_settings, start=False)
    operator.arm(lab, actor="user:test", reason="pipeline test")
    yield lab
    lab.close()


@pytest.fixture
def embedded_pipeline_lab(settings_factory: Callable[..., Settings]) -> Iterator[Lab]:
    """A lab on an embedded stack owned by this test (stopped at teardown), switches armed."""
    lab = tl.connect(settings_factory(), start=True)
    operator.arm(lab, actor="user:test", reason="pipeline test")
    yield lab
    lab.close()
