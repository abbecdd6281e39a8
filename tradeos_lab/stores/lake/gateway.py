"""The lake gateway: other processes use the embedded lake through the process that owns it.

chdb lets only one process open a lake directory, yet a notebook must read (and write) the lake
while `tradeos-lab up` owns it. The owner serves this small HTTP API on loopback; `GatewayBackend`
speaks it, so `Lake.over_gateway(url, token)` behaves exactly like the embedded `Lake`: the same
`Lake` code runs on the client and only the three backend primitives cross the wire.

    POST /v1/query    {"sql", "params"}    -> Arrow IPC stream of the rows
    POST /v1/command  {"sql", "params"}    -> {"ok": true}
    POST /v1/insert?table=NAME[&unique=1]  Arrow IPC stream body -> {"rows": n}
    GET  /v1/health                        -> {"status": "ok", "backend": "..."}

Every request needs `Authorization: Bearer <token>`. Errors come back as JSON
`{"error": <class name in tradeos_lab.errors>, "message": ...}` and are raised again as that class.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import logging
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pyarrow as pa

from tradeos_lab import errors
from tradeos_lab.errors import (
    DependencyUnavailable,
    StackError,
    StoreError,
    TradeosError,
    TransientError,
    ValidationError,
)
from tradeos_lab.secrets import register_secret
from tradeos_lab.stores.lake.backend import (
    WireParams,
    arrow_to_ipc,
    check_table,
    ipc_to_arrow,
    to_wire,
)

if TYPE_CHECKING:
    from tradeos_lab.stores.lake.lake import Lake

log = logging.getLogger(__name__)

ARROW_STREAM = "application/vnd.apache.arrow.stream"
_MAX_JSON_BODY = 16 * 1024 * 1024
_MAX_INSERT_BODY = 1024 * 1024 * 1024


class _GatewayHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], lake: Lake, token: str) -> None:
        super().__init__(address, _Handler)
        self.lake = lake
        self.token = token.encode()
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    def close_connections(self) -> None:
        """End keep-alive connections too: a stopped gateway must not answer anyone."""
        with self.connections_lock:
            for conn in list(self.connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _GatewayHTTPServer
    # An idle keep-alive connection is dropped after this long, so shutdown never waits on it.
    timeout = 60
    # Buffer each response so headers and body leave together (handle_one_request flushes).
    wbufsize = 64 * 1024

    def setup(self) -> None:
        super().setup()
        # Small request/response pairs on loopback: without this, Nagle's algorithm meets the
        # peer's delayed ACK and every round trip costs ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("lake gateway: " + format, *args)

    # ---- plumbing --------------------------------------------------------------------------

    def _authorised(self) -> bool:
        header = self.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), self.server.token
        ):
            return True
        self._fail(
            HTTPStatus.UNAUTHORIZED,
            StackError("the lake gateway refused the request: missing or wrong bearer token"),
        )
        return False

    def _body(self, limit: int) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None:
            raise ValidationError("the request needs a Content-Length")
        try:
            size = int(length)
        except ValueError:
            raise ValidationError("Content-Length is not a number") from None
        if size < 0 or size > limit:
            raise ValidationError(f"the request body of {size} bytes exceeds {limit} bytes")
        return self.rfile.read(size)

    def _json(self) -> tuple[str, WireParams]:
        try:
            request = json.loads(self._body(_MAX_JSON_BODY))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValidationError(f"the request body is not JSON: {e}") from e
        if not isinstance(request, dict) or not isinstance(request.get("sql"), str):
            raise ValidationError('the request body must be {"sql": str, "params": {...}}')
        return request["sql"], to_wire(request.get("params") or {})

    def _send(self, status: int, body: bytes, content_type: str, *, close: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")  # also ends this connection here
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, status: int, payload: dict[str, Any], *, close: bool = False) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", close=close)

    def _fail(self, status: int, error: BaseException) -> None:
        message = str(error.args[0]) if error.args else str(error)
        # The request body may be unread: a fresh connection keeps the next request in step.
        self._send_json(status, {"error": type(error).__name__, "message": message}, close=True)

    # ---- routes ----------------------------------------------------------------------------

    def do_GET(self) -> None:
        if not self._authorised():
            return
        if urlsplit(self.path).path != "/v1/health":
            self._fail(HTTPStatus.NOT_FOUND, ValidationError(f"no such endpoint: {self.path}"))
            return
        backend = self.server.lake.backend
        self._send_json(HTTPStatus.OK, {"status": "ok", "backend": backend.name})

    def do_POST(self) -> None:
        if not self._authorised():
            return
        route = urlsplit(self.path)
        backend = self.server.lake.backend
        try:
            if route.path == "/v1/query":
                sql_text, params = self._json()
                table = backend.query_arrow(sql_text, params)
                self._send(HTTPStatus.OK, arrow_to_ipc(table), ARROW_STREAM)
            elif route.path == "/v1/command":
                sql_text, params = self._json()
                backend.command(sql_text, params)
                self._send_json(HTTPStatus.OK, {"ok": True})
            elif route.path == "/v1/insert":
                names = parse_qs(route.query).get("table", [])
                if len(names) != 1:
                    raise ValidationError("insert needs exactly one ?table=NAME")
                table_name = check_table(names[0])
                unique = parse_qs(route.query).get("unique", ["0"]) == ["1"]
                data = ipc_to_arrow(self._body(_MAX_INSERT_BODY))
                rows = backend.insert_arrow(table_name, data, unique=unique)
                self._send_json(HTTPStatus.OK, {"rows": rows})
            else:
                self._fail(HTTPStatus.NOT_FOUND, ValidationError(f"no such endpoint: {route.path}"))
        except ValidationError as e:
            self._fail(HTTPStatus.BAD_REQUEST, e)
        except TransientError as e:
            self._fail(HTTPStatus.SERVICE_UNAVAILABLE, e)
        except TradeosError as e:
            self._fail(HTTPStatus.INTERNAL_SERVER_ERROR, e)
        except Exception as e:
            log.exception("lake gateway: unexpected error")
            self._fail(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                StoreError(f"the lake owner failed: {type(e).__name__}: {e}"),
            )


class LakeGatewayServer:
    """A running lake gateway; `url` is what clients pass to `Lake.over_gateway`."""

    def __init__(self, httpd: _GatewayHTTPServer, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread
        host, port = httpd.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else str(host)
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}"

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def shutdown(self) -> None:
        """Stop accepting requests and close the listening socket; the lake stays open."""
        self._httpd.shutdown()
        self._httpd.close_connections()
        self._httpd.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> LakeGatewayServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"LakeGatewayServer({self.url!r})"


def serve_gateway(
    lake: Lake, token: str, host: str = "127.0.0.1", port: int = 0
) -> LakeGatewayServer:
    """Serve `lake` to other processes on a loopback port (0 picks a free one).

    The stack owner calls this after opening the embedded lake and publishes `url` and `token`
    in its runtime file; the token never appears in logs.
    """
    if not isinstance(token, str) or len(token) < 16:
        raise StackError("the lake gateway token must be a string of at least 16 characters")
    if not _is_loopback(host):
        raise StackError(f"the lake gateway listens on loopback only, not {host!r}")
    register_secret(token)
    try:
        httpd = _GatewayHTTPServer((host, port), lake, token)
    except OSError as e:
        raise errors.PortInUseError(f"the lake gateway cannot listen on {host}:{port}: {e}") from e
    thread = threading.Thread(
        target=httpd.serve_forever, name="lake-gateway", kwargs={"poll_interval": 0.2}, daemon=True
    )
    thread.start()
    return LakeGatewayServer(httpd, thread)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class GatewayBackend:
    """The lake of another process, through its gateway (a `LakeBackend`)."""

    name = "gateway"

    def __init__(self, url: str, token: str, *, timeout: float = 300.0) -> None:
        register_secret(token)
        self.url = url.rstrip("/")
        self._client = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout, connect=5.0),
        )
        try:
            health = self._request("GET", "/v1/health").json()
        except BaseException:
            self._client.close()
            raise
        self.owner_backend = str(health.get("backend", "?"))

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.TransportError as e:
            raise DependencyUnavailable(
                f"the lake gateway at {self.url} does not answer ({type(e).__name__}); "
                "is the stack that owns the lake still running?"
            ) from e
        if response.status_code >= 400:
            raise _error_from(response)
        return response

    def query_arrow(self, sql: str, params: WireParams) -> pa.Table:
        response = self._request("POST", "/v1/query", json={"sql": sql, "params": params})
        return ipc_to_arrow(response.content)

    def command(self, sql: str, params: WireParams) -> None:
        self._request("POST", "/v1/command", json={"sql": sql, "params": params})

    def insert_arrow(self, table: str, data: pa.Table, *, unique: bool = False) -> int:
        check_table(table)
        if data.num_rows == 0:
            return 0
        response = self._request(
            "POST",
            "/v1/insert",
            params={"table": table, "unique": "1" if unique else "0"},
            content=arrow_to_ipc(data),
            headers={"Content-Type": ARROW_STREAM},
        )
        return int(response.json()["rows"])

    def close(self) -> None:
        self._client.close()

    def __repr__(self) -> str:
        return f"GatewayBackend({self.url!r})"


def _error_from(response: httpx.Response) -> TradeosError:
    """The owner's exception, raised again here as the same class with the same message."""
    try:
        payload = response.json()
        name, message = str(payload["error"]), str(payload["message"])
    except (ValueError, KeyError, TypeError):
        return StoreError(f"the lake gateway answered HTTP {response.status_code}")
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, TradeosError):
        try:
            return cls(message)
        except TypeError:
            pass
    return StoreError(message)
