"""The gateway's HTTP side: Prometheus metrics on /metrics, readiness on /health."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve_http(port: int, ready: Callable[[], dict[str, Any] | None]) -> WSGIServer:
    """`ready()` returns a status dict when the gateway is subscribed, else None (503)."""
    import orjson

    metrics = make_wsgi_app()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/health":
            status = ready()
            body = orjson.dumps(status or {"status": "starting"})
            start_response("200 OK" if status else "503 Service Unavailable",
                           [("Content-Type", "application/json")])
            return [body]
        return metrics(environ, start_response)  # type: ignore[no-any-return]

    server = make_server("127.0.0.1", port, app, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="gateway-http", daemon=True).start()
    return server
