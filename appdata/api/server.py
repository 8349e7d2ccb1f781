"""The uvicorn options every local server of the API runs with (`appdata api`, so `appdata up`).

- `limit_concurrency` (`APPDATA_API_MAX_CONNECTIONS`, default 1,000): past that many open
  connections or requests in progress, uvicorn answers 503 at once instead of queueing, so the
  process stays far from its open-file limit and /healthz keeps answering;
- `timeout_keep_alive` 5 s: an idle keep-alive connection is closed;
- `h11_max_incomplete_event_size` 16 KiB: request headers larger than that are refused.
The request body's own deadline is the app's (`appdata.api.guard`, `APPDATA_API_BODY_TIMEOUT`).
"""

from __future__ import annotations

import os
from typing import Any

DEFAULT_MAX_CONNECTIONS = 1_000


def max_connections_from_env() -> int:
    raw = os.environ.get("APPDATA_API_MAX_CONNECTIONS", "").strip()
    if not raw:
        return DEFAULT_MAX_CONNECTIONS
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"APPDATA_API_MAX_CONNECTIONS must be an integer, got {raw!r}") from None
    if value <= 0:
        raise ValueError("APPDATA_API_MAX_CONNECTIONS must be positive")
    return value


def server_options() -> dict[str, Any]:
    """Keyword arguments of uvicorn.run / uvicorn.Config bounding what clients can hold."""
    return {"limit_concurrency": max_connections_from_env(), "timeout_keep_alive": 5,
            "h11_max_incomplete_event_size": 16 * 1024}
