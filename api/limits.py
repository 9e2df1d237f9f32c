"""Protection: rate limits and a request body size limit.

- A verified key has its own budget (`RateLimits.keys`), counted after verification in
  `api.deps.get_principal`.
- Credentials that fail verification count against the client address
  (`RateLimits.unverified`); an address out of that budget is refused before verifying.
- Requests without credentials (sign-in, health, docs) are limited per client address here,
  in the middleware, which also bounds request bodies.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import orjson

from wattline.accounts import FailureBudget

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class TokenBucket(FailureBudget):
    """A token bucket per key with bounded memory; `take` spends a token when there is one."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        super().__init__(burst, rate_per_s)

    def take(self, key: str) -> float:
        """0 if allowed (a token spent), else seconds until a token is available."""
        return self.wait_s(key, take=True)


@dataclass
class RateLimits:
    """The budgets of one API process."""

    keys: TokenBucket
    unverified: FailureBudget


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
        # With credentials, the key's budget is counted once they are verified (api.deps).
        if b"authorization" not in headers:
            wait = self.bucket.take((scope.get("client") or ("unknown",))[0])
            if wait > 0:
                await _problem(send, 429, "Too many requests", "rate limit exceeded for this address",
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
