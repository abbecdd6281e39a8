"""chdb: the ClickHouse engine inside this process (the embedded lake).

chdb lets one process open a data directory (ClickHouse holds an flock on `<dir>/status`) and one
data directory per process. This module makes both rules explicit: a directory owned by another
process raises `LakeInUse` telling the user to go through the running stack's lake gateway, and
several `ChdbBackend`s on the same directory in one process share one session.
"""

from __future__ import annotations

import fcntl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from tradeos_lab.errors import DataDirError, LakeInUse, StackError, StoreError
from tradeos_lab.stores.lake.backend import (
    WireParams,
    check_table,
    clickhouse_text,
    quote_columns,
    translate_engine_error,
)


@dataclass
class _Shared:
    session: Any
    lock: threading.RLock = field(default_factory=threading.RLock)
    refs: int = 0


_registry_lock = threading.Lock()
_open: dict[Path, _Shared] = {}


def lake_owner(path: str | Path) -> int | None:
    """The pid of the process holding the chdb lock on `path`, or None when nobody holds it.

    Probes the same flock ClickHouse takes on `<path>/status`, so a crashed owner (whose lock the
    kernel released) is never mistaken for a live one.
    """
    status = Path(path) / "status"
    try:
        fh = status.open("rb")
    except (FileNotFoundError, NotADirectoryError):
        return None
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return _status_pid(fh.read(256)) or -1
        fcntl.flock(fh, fcntl.LOCK_UN)
    return None


def _status_pid(text: bytes) -> int | None:
    for line in text.decode(errors="replace").splitlines():
        if line.startswith("PID:"):
            try:
                return int(line.split(":", 1)[1])
            except ValueError:
                return None
    return None


def _in_use(path: Path, pid: int) -> LakeInUse:
    who = f"process {pid}" if pid > 0 else "another process"
    return LakeInUse(
        f"the embedded lake at {path} is open in {who}; chdb lets only one process open a lake "
        "directory, so this process must use the running stack's lake gateway instead of "
        "opening it directly"
    )


class ChdbBackend:
    """The lake on chdb; statements are serialised because one session serves many threads."""

    name = "chdb"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser().resolve()
        self._closed = False
        with _registry_lock:
            shared = _open.get(self.path)
            if shared is None:
                shared = self._open_session()
                _open[self.path] = shared
            shared.refs += 1
        self._shared = shared

    def _open_session(self) -> _Shared:
        if _open:
            other = next(iter(_open))
            raise StackError(
                f"this process already has the chdb lake at {other} open; chdb allows one data "
                f"directory per process, so {self.path} cannot be opened too"
            )
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DataDirError(f"cannot create the lake directory {self.path}: {e}") from e
        owner = lake_owner(self.path)
        if owner is not None:
            raise _in_use(self.path, owner)
        from chdb import session as chdb_session

        try:
            session = chdb_session.Session(str(self.path))  # type: ignore[no-untyped-call]
        except Exception as e:
            owner = lake_owner(self.path)
            if owner is not None:
                raise _in_use(self.path, owner) from e
            raise StoreError(f"chdb could not open the lake at {self.path}: {e}") from e
        return _Shared(session)

    @property
    def session(self) -> Any:
        """The raw `chdb.session.Session` (benchmarks compare against it)."""
        self._check_open()
        return self._shared.session

    @property
    def lock(self) -> threading.RLock:
        return self._shared.lock

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the lake at {self.path} is closed")

    def _run(self, sql: str, fmt: str, params: WireParams, what: str) -> Any:
        self._check_open()
        text = clickhouse_text(params)
        with self._shared.lock:
            try:
                return self._shared.session.query(sql, fmt, params=text)
            except Exception as e:
                raise translate_engine_error(e, what) from e

    def query_arrow(self, sql: str, params: WireParams) -> pa.Table:
        result = self._run(sql, "ArrowStream", params, "lake query failed")
        if result is None or len(result) == 0:
            return pa.table({})
        return pa.ipc.open_stream(result.bytes()).read_all()

    def command(self, sql: str, params: WireParams) -> None:
        self._run(sql, "CSV", params, "lake command failed")

    def insert_arrow(self, table: str, data: pa.Table, *, unique: bool = False) -> int:
        check_table(table)
        if data.num_rows == 0:
            return 0
        columns = quote_columns(data.column_names)
        settings = " SETTINGS optimize_on_insert = 0" if unique else ""
        # chdb's Python() table function reads the Arrow table from this frame by name: no copy,
        # no serialisation, the fastest ingest path chdb offers.
        lake_rows = data
        assert lake_rows is data
        self._run(
            f"INSERT INTO {table} ({columns}){settings} SELECT {columns} FROM Python(lake_rows)",
            "CSV",
            {},
            f"insert into {table} failed",
        )
        return int(data.num_rows)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with _registry_lock:
            self._shared.refs -= 1
            if self._shared.refs <= 0:
                _open.pop(self.path, None)
                with self._shared.lock:
                    self._shared.session.close()

    def __repr__(self) -> str:
        return f"ChdbBackend({str(self.path)!r})"
