"""What one slow or vanishing client may cost the API: a request body must arrive within
`body_timeout` seconds (else 408 and the connection is closed), and a client that disconnects
before its body ends costs one short log line. Both are counted; GET /healthz shows the counts
(per process: each uvicorn worker keeps its own).

The bound is on the body only: once it has arrived, waiting on the client (a streamed response
listening for its disconnect) is not limited. Connections in total are bounded by the server's
options (`appdata.api.server`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import asdict, dataclass
from typing import Any

from appdata.api.errors import ApiError

log = logging.getLogger("appdata.api")

DEFAULT_BODY_TIMEOUT = 30.0  # seconds: 1 MiB at ~35 KB/s


def body_timeout_from_env() -> float:
    """`APPDATA_API_BODY_TIMEOUT`: seconds a request body may take to arrive (default 30)."""
    raw = os.environ.get("APPDATA_API_BODY_TIMEOUT", "").strip()
    if not raw:
        return DEFAULT_BODY_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"APPDATA_API_BODY_TIMEOUT must be a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise ValueError("APPDATA_API_BODY_TIMEOUT must be positive")
    return value


@dataclass
class DroppedRequests:
    """Requests dropped before their body ended, by why."""

    client_disconnected: int = 0
    body_timeout: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class BodyTimeout(ApiError):
    def __init__(self, seconds: float):
        super().__init__(408, f"request body did not arrive within {seconds:g} s", "body")


class BodyGuard:
    """ASGI middleware: the body deadline and the disconnect count, for every HTTP request."""

    def __init__(self, app: Any, *, timeout: float, dropped: DroppedRequests):
        self.app = app
        self.timeout = timeout
        self.dropped = dropped

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        received = 0
        body_ended = False

        def where() -> str:
            client = scope.get("client") or ("?", 0)
            # the path as a quoted literal: a decoded %0A would otherwise forge a log line
            return f"{scope['method']} {scope['path']!r} from {client[0]}, {received} bytes in"

        async def bounded_receive() -> dict:
            nonlocal received, body_ended
            if body_ended:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0))
            except asyncio.TimeoutError:
                body_ended = True
                self.dropped.body_timeout += 1
                log.warning("request dropped: body not received within %g s (%s)", self.timeout, where())
                raise BodyTimeout(self.timeout) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_ended = not message.get("more_body", False)
            elif message["type"] == "http.disconnect":
                body_ended = True
                self.dropped.client_disconnected += 1
                log.warning("request dropped: client disconnected before its body ended (%s)", where())
            return message

        await self.app(scope, bounded_receive, send)
