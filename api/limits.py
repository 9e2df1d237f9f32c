"""Protection: a per-key token-bucket rate limit and a request body size limit (pure ASGI)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class TokenBucket:
    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate = rate_per_s
        self.burst = burst
        self._state: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """0 if allowed, else seconds until a token is available."""
        now = time.monotonic()
        with self._lock:
            tokens, at = self._state.get(key, (float(self.burst), now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens >= 1:
                self._state[key] = (tokens - 1, now)
                return 0.0
            self._state[key] = (tokens, now)
            return (1 - tokens) / self.rate


async def _problem(send: Send, status: int, title: str, detail: str, headers: list[tuple[bytes, bytes]]) -> None:
    body = orjson.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail})
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/problem+json"),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


class ProtectionMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, rate_per_s: float, burst: int) -> None:
        self.app = app
        self.max_body = max_body_bytes
        self.bucket = TokenBucket(rate_per_s, burst)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        # Keyed by the credential's public prefix (or the client address without one).
        auth = headers.get(b"authorization", b"").decode("latin-1")
        key = auth.split(".", 1)[0][-11:] if auth else (scope.get("client") or ("?",))[0]
        wait = self.bucket.take(key)
        if wait > 0:
            await _problem(send, 429, "Too many requests", "rate limit exceeded for this key",
                           [(b"retry-after", str(math.ceil(wait)).encode())])
            return
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await _problem(send, 413, "Payload too large", f"request bodies are limited to {self.max_body} bytes", [])
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except BodyTooLarge:
            await _problem(send, 413, "Payload too large", f"request bodies are limited to {self.max_body} bytes", [])


class BodyTooLarge(Exception):
    pass
