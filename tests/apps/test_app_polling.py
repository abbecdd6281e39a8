"""The polling thread lives as long as its page: it stops when the page stops beating, on
`stop()`, and never because one refresh failed."""

from __future__ import annotations

import threading

from tradeos_lab.apps.live import (
    BEAT_GRACE_S,
    FIRST_BEAT_GRACE_S,
    PageHeartbeat,
    Poller,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_a_page_is_open_while_it_beats_and_gone_when_the_beats_stop() -> None:
    clock = Clock()
    beat = PageHeartbeat(clock=clock)
    clock.now += FIRST_BEAT_GRACE_S - 1
    assert beat.page_open(), "a page still loading has its first grace"
    beat._handle_custom_msg({"beat": 1}, [])
    clock.now += BEAT_GRACE_S - 1
    assert beat.page_open() and beat.beats == 1
    clock.now += 2
    assert not beat.page_open()


def test_a_page_that_never_beats_is_gone_after_the_first_grace() -> None:
    clock = Clock()
    beat = PageHeartbeat(clock=clock)
    clock.now += FIRST_BEAT_GRACE_S + 1
    assert not beat.page_open()


def test_polling_stops_by_itself_when_the_page_is_gone() -> None:
    clock = Clock()
    beat = PageHeartbeat(clock=clock)
    ticked = threading.Event()
    poller = Poller(ticked.set, every_s=0.01, heartbeat=beat).start()
    assert ticked.wait(10)
    clock.now += FIRST_BEAT_GRACE_S + 1
    poller._thread.join(10)  # type: ignore[union-attr]
    assert not poller.running


def test_a_failing_refresh_does_not_stop_the_polling() -> None:
    calls: list[int] = []
    done = threading.Event()

    def tick() -> None:
        calls.append(1)
        if len(calls) >= 3:
            done.set()
        raise RuntimeError("a bad read")

    poller = Poller(tick, every_s=0.01).start()
    try:
        assert done.wait(10)
        assert poller.running
    finally:
        poller.stop()
    assert not poller.running
