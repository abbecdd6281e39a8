"""HTTP `/healthz` (status of the process and its dependencies) and Prometheus `/metrics`.

Every long-running process serves one `HealthServer`; `tradeos-lab status` reads them.
"""

from __future__ import annotations

import errno
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from tradeos_lab.errors import PortInUseError

HealthCheck = Callable[[], dict[str, Any]]


def overall(parts: dict[str, dict[str, Any]]) -> str:
    """`up` when every part is up, `down` when any is down, else `degraded`."""
    states = {p.get("state") for p in parts.values()}
    if not states or states == {"up"}:
        return "up"
    return "down" if "down" in states else "degraded"


class HealthServer:
    """Serves `/healthz` and `/metrics` on a background thread."""

    def __init__(
        self,
        service: str,
        check: HealthCheck,
        host: str = "127.0.0.1",
        port: int = 0,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self.service = service
        self.check = check
        self.registry = registry
        self.started = time.time()
        handler = _handler_for(self)
        try:
            self.httpd = ThreadingHTTPServer((host, port), handler)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise PortInUseError(f"health port {host}:{port} is already in use") from e
            raise
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name=f"{service}-health", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def report(self) -> dict[str, Any]:
        parts = self.check()
        return {
            "service": self.service,
            "status": overall(parts),
            "uptime_s": round(time.time() - self.started, 1),
            "dependencies": parts,
        }


def _handler_for(server: HealthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/healthz") or self.path.startswith("/health"):
                report = server.report()
                body = json.dumps(report, default=str).encode()
                code = 200 if report["status"] != "down" else 503
                self._send(code, "application/json", body)
            elif self.path.startswith("/metrics"):
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(server.registry))
            else:
                self._send(404, "text/plain", b"not found\n")

        def _send(self, code: int, ctype: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Requests are not logged: scrapes every few seconds would drown the log."""

    return Handler
