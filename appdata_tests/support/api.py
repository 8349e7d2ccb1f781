"""The API seen from outside: the real app served on a free port, posting to it, the DynamoDB item
it should lead to (the table contract), and API Gateway proxy events for the Lambda handler."""

from __future__ import annotations

import base64
import threading
import time
from typing import Any

import httpx


class LocalApi:
    """The real ingest API (create_app) served by uvicorn in a thread, on a free loopback port."""

    def __init__(self, settings, key: str):
        import uvicorn

        from appdata.api.app import create_app
        from appdata.local.emulator import free_port

        self.key = key
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        # log_config=None: uvicorn's loggers propagate to the root, so tests see every line it logs.
        config = uvicorn.Config(create_app(settings, api_keys=[key]), host="127.0.0.1", port=port,
                                log_config=None, log_level="debug", access_log=True)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="local-api", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "local API did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def post(api: LocalApi, records: list[dict], client: httpx.Client | None = None) -> tuple[int, dict]:
    """POST /v1/downloads with the API's key: (status, body)."""
    own = client or httpx.Client(timeout=60)
    try:
        response = own.post(f"{api.url}/v1/downloads", json=records, headers={"x-api-key": api.key})
        return response.status_code, response.json()
    finally:
        if client is None:
            own.close()


def download_item(record: dict[str, Any]) -> dict[str, Any]:
    """The DynamoDB item the drain writes for a typed event (the table contract)."""
    item: dict[str, Any] = {
        "user_id": {"S": str(record["user_id"])},
        "sk": {"S": f"DL#{record['download_date']}#{record['event_id']}"},
    }
    for key, value in record.items():
        if key == "user_id" or value is None:
            continue
        item[key] = {"N": str(value)} if isinstance(value, (int, float)) else {"S": str(value)}
    return item


def proxy_event(method: str, path: str, *, headers: dict[str, str] | None = None, body: str | bytes | None = None,
                query: dict[str, str] | None = None, base64_body: bool = False) -> dict[str, Any]:
    """An API Gateway REST (v1) proxy integration event, as Lambda receives it."""
    headers = {"Host": "abc123.execute-api.us-east-1.amazonaws.com", "X-Forwarded-Proto": "https",
               "X-Forwarded-Port": "443", **(headers or {})}
    if isinstance(body, bytes):
        body = base64.b64encode(body).decode() if base64_body else body.decode()
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} if query else None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/{proxy+}", "httpMethod": method, "path": f"/prod{path}", "stage": "prod",
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef", "accountId": "123456789012",
            "identity": {"sourceIp": "203.0.113.7", "userAgent": "pytest"},
        },
        "body": body,
        "isBase64Encoded": base64_body,
    }
