"""A local HTTP server standing in for news sources (RSS 2.0, Atom 1.0 and Reddit's OAuth and
listing JSON, in their documented formats), and labs on the machine's Redis with PostgreSQL or
SQLite records."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from news_support import NewsServer

import tradeos_lab as tl
from tradeos_lab.lab import Lab
from tradeos_lab.settings import Settings, SharedRedisServerWarning
from tradeos_lab.stores.records import RecordsStore


@pytest.fixture
def news_server() -> Iterator[NewsServer]:
    server_state = NewsServer(url="")
    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            """Quiet: the tests look at `requests`."""

        def _answer(self) -> None:
            path = self.path.split("?", 1)[0]
            server_state.requests.append((self.command, self.path, dict(self.headers)))
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            route = server_state.routes.get(path)
            if route is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if route.delay_s:
                stop.wait(route.delay_s)
            try:
                self.send_response(route.status)
                self.send_header("Content-Type", route.content_type)
                self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                self.wfile.write(route.body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test)

        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self._answer()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    server_state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield server_state
    stop.set()
    httpd.shutdown()
    httpd.server_close()


# ---- labs ---------------------------------------------------------------------------------------


@pytest.fixture(params=["postgresql", "sqlite"])
def news_lab(
    request: pytest.FixtureRequest,
    server_settings: Settings,
    tmp_path: Path,
) -> Iterator[Lab]:
    """A lab on the machine's Redis (this test's namespace) with PostgreSQL or SQLite records."""
    settings = server_settings
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'records.db'}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SharedRedisServerWarning)
            settings = settings.model_copy(
                update={"records_url": Settings(records_url=url).records_url}
            )
        RecordsStore.open(settings, migrate=True).close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SharedRedisServerWarning)
        lab = tl.connect(settings, start=False)
    yield lab
    lab.close()
