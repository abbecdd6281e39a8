"""SQLite's one writer at a time: the turn handed over at once, trading stages first.

SQLite lets one connection write at a time. A writer that finds the database locked waits in
SQLite's busy handler, which sleeps 1, 2, 5, ... 100 ms between tries: with the pipeline's stages
writing from several processes, a stage slept up to most of a second for a lock that was free
again within a millisecond. Here a write transaction first takes its turn on an OS file lock
beside the database (`flock`), and keeps it until its connection goes back to the pool: the
kernel wakes the next writer the moment the turn is given back.

A background writer (TCA, the audit trail: services off the way from a bar to its fill) queues
only when no trading writer is waiting, so a burst of bars reaches its fills first and the
background catches up after it. A trading writer holds a shared lock on a second file while it
waits for the turn; a background writer must get that file exclusively (and lets go at once)
before it queues.

A writer waits for its turn as long as the writer before it takes (a writer that dies gives its
turn back with its file descriptors). A thread that already holds a turn and opens a second write
transaction takes no second turn (it would wait for itself): SQLite's busy timeout decides, as
for a writer outside the store (the `sqlite3` shell).
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
import weakref
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

#: Suffixes of the lock files beside the database file.
TURN_SUFFIX = "-write-turn"
TRADING_WAITS_SUFFIX = "-trading-waits"

# Keys of a pooled connection's `info`: its lock files (opened by this process) and, while it
# holds the turn, the turns of the thread that took it.
_FILES = "tradeos_write_turn_files"
_HOLDS = "tradeos_write_turn_holds"
_TAKEN_AT = "tradeos_write_turn_taken_at"

_TURNS: weakref.WeakKeyDictionary[Engine, WriteTurns] = weakref.WeakKeyDictionary()
# The turns each thread holds, by lock file, over every engine of the process.
_HELD = threading.local()


def _held() -> dict[str, int]:
    held: dict[str, int] | None = getattr(_HELD, "turns", None)
    if held is None:
        held = _HELD.turns = {}
    return held


class WriteTurns:
    """The write turns of one SQLite database, for the connections of one engine."""

    def __init__(self, database: str) -> None:
        self.turn_path = database + TURN_SUFFIX
        self.trading_waits_path = database + TRADING_WAITS_SUFFIX
        #: Whether this process writes in the background (see the module docstring).
        self.background = False
        #: Seconds this process's writers waited for the turn and held it: where the one
        #: writer's time goes (the pipeline benchmark prints them per stage).
        self.waited_s = 0.0
        self.held_s = 0.0
        self._unusable = False  # the lock files cannot be opened: SQLite's own waiting only

    @classmethod
    def attach(cls, engine: Engine, database: str) -> WriteTurns:
        """The turns of `engine`'s connections: whoever begins a write transaction calls `take`
        first; the turn goes back when the connection returns to the pool (or is closed)."""
        turns = cls(database)
        event.listen(engine, "checkin", turns._on_checkin)
        event.listen(engine, "close", turns._on_close)
        _TURNS[engine] = turns
        return turns

    @staticmethod
    def of(engine: Engine) -> WriteTurns | None:
        """The turns `attach` gave `engine` (None for PostgreSQL, which locks rows)."""
        return _TURNS.get(engine)

    # ---- taking and giving back ---------------------------------------------------------------

    def take(self, info: dict[str, Any]) -> None:
        """Wait for the turn for the pooled connection whose `info` this is (once per checkout)."""
        held = _held()
        if _HOLDS in info or held.get(self.turn_path) or self._unusable:
            return
        files = self._files(info)
        if files is None:
            return
        turn, trading_waits = files
        asked = time.perf_counter()
        if self.background:
            try:
                fcntl.flock(trading_waits, fcntl.LOCK_EX)  # no trading writer waits now
            finally:
                fcntl.flock(trading_waits, fcntl.LOCK_UN)
            fcntl.flock(turn, fcntl.LOCK_EX)
        else:
            fcntl.flock(trading_waits, fcntl.LOCK_SH)
            try:
                fcntl.flock(turn, fcntl.LOCK_EX)
            finally:
                fcntl.flock(trading_waits, fcntl.LOCK_UN)
        info[_HOLDS] = held  # the taking thread's, wherever the turn is given back
        info[_TAKEN_AT] = now = time.perf_counter()
        self.waited_s += now - asked
        held[self.turn_path] = held.get(self.turn_path, 0) + 1

    def give_back(self, info: dict[str, Any]) -> None:
        """Give the connection's turn back, if it holds one."""
        held: dict[str, int] | None = info.pop(_HOLDS, None)
        if held is None:
            return
        files = info.get(_FILES)
        if files is not None:
            fcntl.flock(files[1][0], fcntl.LOCK_UN)
        self.held_s += time.perf_counter() - info.pop(_TAKEN_AT, time.perf_counter())
        held[self.turn_path] = max(0, held.get(self.turn_path, 1) - 1)

    def _files(self, info: dict[str, Any]) -> tuple[int, int] | None:
        """The connection's descriptors of the two lock files, opened once per process (a
        forked child opens its own: a descriptor it inherited shares its parent's locks)."""
        kept = info.get(_FILES)
        if kept is not None and kept[0] == os.getpid():
            turn, trading_waits = kept[1]
            return turn, trading_waits
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
        try:
            turn = os.open(self.turn_path, flags, 0o600)
        except OSError as e:
            self._give_up(e)
            return None
        try:
            trading_waits = os.open(self.trading_waits_path, flags, 0o600)
        except OSError as e:
            os.close(turn)
            self._give_up(e)
            return None
        info[_FILES] = (os.getpid(), (turn, trading_waits))
        return turn, trading_waits

    def _give_up(self, error: OSError) -> None:
        self._unusable = True
        log.warning(
            "records writers wait on SQLite's busy handler: cannot open %s: %s",
            self.turn_path,
            error,
        )

    def _close(self, info: dict[str, Any]) -> None:
        self.give_back(info)
        kept = info.pop(_FILES, None)
        if kept is not None and kept[0] == os.getpid():
            for fd in kept[1]:
                os.close(fd)

    # ---- SQLAlchemy events ----------------------------------------------------------------------

    def _on_checkin(self, _dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            self.give_back(record.info)

    def _on_close(self, _dbapi_connection: Any, record: Any) -> None:
        self._close(record.info)
