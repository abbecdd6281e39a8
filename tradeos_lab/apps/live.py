"""What every app shares: a lab that outlives its tiers going down, a polling thread that lives
as long as its page, and readings that are either a value or the reason there is none."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import anywidget
import ipywidgets as widgets
import redis
import traitlets

from tradeos_lab.apps import views
from tradeos_lab.errors import StackNotRunning, TradeosError

if TYPE_CHECKING:
    from tradeos_lab.lab import Lab
    from tradeos_lab.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How often the page says it is still open, and how long the kernel waits for it to say so
#: (the first time: loading the page and its widgets can take a while) before its polling stops.
BEAT_EVERY_MS = 2_000
BEAT_GRACE_S = 10.0
FIRST_BEAT_GRACE_S = 120.0


@dataclass(frozen=True)
class Reading(Generic[T]):
    """A value read from the stack, or why it could not be read (`error` says it to a trader)."""

    value: T | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class LabLink:
    """The running stack, attached only (`start=False`: closing an app never stops the servers)
    and attached again after a failure, so an app keeps running while a tier or the whole stack
    is down and recovers by itself when it returns."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        connect: Callable[..., Lab] | None = None,
    ) -> None:
        import tradeos_lab as tl

        self.settings = settings
        self._connect = connect or tl.connect
        self._lab: Lab | None = None
        self._lock = threading.Lock()

    def lab(self) -> Lab:
        """The attached lab; `StackNotRunning` when no stack runs for the data directory."""
        with self._lock:
            if self._lab is None:
                self._lab = self._connect(self.settings, start=False)
            return self._lab

    def read(self, what: str, fn: Callable[[Lab], T]) -> Reading[T]:
        """`fn(lab)` as a reading; a failure becomes the reason and the next read re-attaches."""
        try:
            return Reading(fn(self.lab()))
        except StackNotRunning:
            self.reset()
            return Reading(error="the stack is not running (start it with `tradeos-lab up`)")
        except (TradeosError, redis.RedisError, OSError) as e:
            self.reset()
            return Reading(error=f"{what} unavailable ({type(e).__name__}: {e})"[:300])

    def reset(self) -> None:
        with self._lock:
            lab, self._lab = self._lab, None
        if lab is not None:
            try:
                lab.close()
            except Exception:  # a half-dead client: nothing more to release
                log.debug("closing a failed lab", exc_info=True)

    def close(self) -> None:
        self.reset()


class PageHeartbeat(anywidget.AnyWidget):
    """An invisible widget whose page sends a beat every `BEAT_EVERY_MS`: when the page is
    closed (or its browser dies) the beats stop, and so does the kernel's polling."""

    _esm = f"""
    export default {{
      render({{ model }}) {{
        const beat = () => model.send({{ beat: Date.now() }});
        beat();
        const timer = setInterval(beat, {BEAT_EVERY_MS});
        return () => clearInterval(timer);
      }}
    }};
    """
    beats = traitlets.Int(0).tag(sync=False)

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._clock = clock
        self._born = clock()
        self._last: float | None = None
        self.on_msg(self._on_msg)

    def _on_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if isinstance(content, dict) and "beat" in content:
            self._last = self._clock()
            self.beats += 1

    def page_open(self) -> bool:
        """True while the page beats (or may still be loading)."""
        if self._last is None:
            return self._clock() - self._born < FIRST_BEAT_GRACE_S
        return self._clock() - self._last < BEAT_GRACE_S


class Poller:
    """Runs `tick()` on a daemon thread until `stop()`, until the page stops beating, or until
    the kernel exits (a daemon thread dies with its process). A tick that raises is logged and
    the next one runs: an app never stops refreshing because of one bad read."""

    def __init__(
        self,
        tick: Callable[[], object],
        *,
        every_s: float,
        heartbeat: PageHeartbeat | None = None,
        name: str = "app-poller",
    ) -> None:
        self.tick = tick
        self.every_s = every_s
        self.heartbeat = heartbeat
        self.name = name
        self.ticks = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Poller:
        if not self.running:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        return self

    def pause(self, seconds: float) -> None:
        """Wait `seconds` inside a tick (after a failure), ending early on `stop()`."""
        self._stop.wait(seconds)

    def stop(self, timeout: float | None = 5.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.heartbeat is not None and not self.heartbeat.page_open():
                log.info("%s: the page is gone; polling stops", self.name)
                return
            started = time.monotonic()
            try:
                self.tick()
            except Exception:
                log.exception("%s: a refresh failed", self.name)
            self.ticks += 1
            self._stop.wait(max(0.0, self.every_s - (time.monotonic() - started)))


class PolledPanel(Generic[T]):
    """An operator panel whose state is one reading of the flags tier: shown, it is read at once
    and then by its poller while the page is open; closed, the polling and the lab stop. A
    subclass builds `widget`, `message`, `link`, `state` and `poller`, reads in `read` and draws
    in `_draw`."""

    #: The tier a failed reading names.
    reads: ClassVar[str] = "the flags tier"
    widget: widgets.VBox
    message: widgets.HTML
    link: LabLink
    state: Reading[T]
    poller: Poller

    def read(self, lab: Lab) -> T:
        raise NotImplementedError

    def show(self) -> widgets.VBox:
        self.refresh()
        self.poller.start()
        return self.widget

    def close(self) -> None:
        self.poller.stop()
        self.link.close()

    def refresh(self) -> None:
        self.state = self.link.read(self.reads, self.read)
        self._draw()

    def _say(self, text: str, tone: views.Tone) -> None:
        self.message.value = views.banner(text, tone)

    def _draw(self) -> None:
        raise NotImplementedError
