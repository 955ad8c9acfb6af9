"""The pod's HTTP endpoints, on the standard library's threading server.

==========  ==============================================================
/healthz    200 while the process runs (liveness)
/readyz     200 only when a validated model is loaded and MQTT is
            connected, 503 otherwise (readiness)
/metrics    the pod's Prometheus registry, text format
/status     the `ModelStatus` JSON the pod also publishes, retained, on
            ``{prefix}/nodes/{node}/status``; read by the operator
==========  ==============================================================

Nothing here changes state: a GET is all there is, and no endpoint takes a
model target (those come through the operator's channel, see `targets`).
"""

from __future__ import annotations

import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Protocol

from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from vibration_core.messages import ModelStatus

logger = logging.getLogger(__name__)


class StatusSource(Protocol):
    """What the endpoints report on."""

    @property
    def registry(self) -> CollectorRegistry:
        """The Prometheus registry of the pod."""
        ...

    def is_ready(self) -> bool:
        """Whether a validated model serves and MQTT is connected."""
        ...

    def status(self) -> ModelStatus:
        """The pod's current status."""
        ...


IDLE_TIMEOUT_S = 10.0
"""How long a connection may send nothing: each holds a thread, and a probe's request takes a millisecond."""


class _Handler(BaseHTTPRequestHandler):
    source: StatusSource  # set on the subclass `HttpServer` builds
    server_version = "vibration-infer"
    timeout = IDLE_TIMEOUT_S  # socketserver closes a connection idle this long

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._send(HTTPStatus.OK, b"ok\n", "text/plain; charset=utf-8")
        elif path == "/readyz":
            ready = self.source.is_ready()
            code = HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE
            self._send(code, b"ready\n" if ready else b"not ready\n", "text/plain; charset=utf-8")
        elif path == "/metrics":
            self._send(HTTPStatus.OK, generate_latest(self.source.registry), CONTENT_TYPE_LATEST)
        elif path == "/status":
            self._send(HTTPStatus.OK, self.source.status().encode(), "application/json")
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

    def _send(self, code: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        # Probes hit these endpoints every few seconds: debug, not info.
        logger.debug("http_request", extra={"client": self.client_address[0], "request": format % args})


class HttpServer:
    """The endpoints on a daemon thread; `port` is the bound one (useful with port 0)."""

    def __init__(self, source: StatusSource, host: str, port: int) -> None:
        handler = type("Handler", (_Handler,), {"source": source})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Serve in the background."""
        self._thread.start()
        logger.info("http_listening", extra={"port": self.port})

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
