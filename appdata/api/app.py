"""The ingest API: POST events to Kinesis, GET a user's downloads and recommendations.

`create_app(settings)` builds a FastAPI app with its boto3 clients made once (by `appdata.aws`,
which imports no Dagster: the Lambda package carries none), never per request. The same app runs
under uvicorn (`appdata api`) and on AWS Lambda behind API Gateway (`lambda_handler.handler`).
Module-level `app` is built lazily on its first request, so importing this module reads no
environment and opens no connection.

Errors are JSON `{"detail": ..., "field": ...}`: every 4xx names the input at fault.
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
import os
import threading
from pathlib import Path
from typing import Any, Literal, Optional

from botocore.exceptions import BotoCoreError, ClientError
from fastapi import Depends, FastAPI, Path as PathParam, Query, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, Field, create_model
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from appdata.api.admin import add_admin
from appdata.api.dashboard import add_dashboard
from appdata.api.errors import ApiError, error_responses
from appdata.api.guard import BodyGuard, BodyTimeout, DroppedRequests, body_timeout_from_env
from appdata.api.ingest import MAX_RECORDS_PER_REQUEST, StoreUnavailable, ingest
from appdata import aws
from appdata.config import Settings, api_keys_from_env, aws_client_kwargs, parse_api_keys
from appdata.contract import layout, schema

log = logging.getLogger("appdata.api")

DEFAULT_MAX_BODY_BYTES = 1 << 20  # 1 MiB: 500 typical records are ~250 KiB
API_KEY_HEADER = "x-api-key"


def max_body_bytes_from_env() -> int:
    """`APPDATA_API_MAX_BODY_BYTES`: largest request body accepted (default 1 MiB)."""
    raw = os.environ.get("APPDATA_API_MAX_BODY_BYTES", "")
    if not raw.strip():
        return DEFAULT_MAX_BODY_BYTES
    try:
        value = int(raw)
    except ValueError as exc:
        raise ValueError(f"APPDATA_API_MAX_BODY_BYTES must be an integer, got {raw!r}") from exc
    if value <= 0:
        raise ValueError("APPDATA_API_MAX_BODY_BYTES must be positive")
    return value


def _error(status: int, detail: str, field: str | None, **extra: Any) -> JSONResponse:
    return JSONResponse({"detail": detail, "field": field, **extra}, status_code=status)


# ---------------------------------------------------------------- OpenAPI models (docs only)

def _event_model() -> type[BaseModel]:
    """A pydantic model of the event built from schema.FIELDS, so the docs never drift from it.

    It documents the body; it does not decide: records are validated by appdata.contract.schema.
    """
    fields: dict[str, Any] = {}
    for spec in schema.FIELDS:
        bounds = {k: v for k, v in (("ge", spec.minimum), ("le", spec.maximum)) if v is not None}
        if spec.kind == "int":
            kind: Any = int
        elif spec.kind == "float":
            kind = float
        elif spec.kind == "date":
            kind = dt.date
        elif spec.choices:  # an enum, or text with a closed domain (category, location, ...)
            kind = Literal[spec.choices]  # type: ignore[valid-type]
        else:
            kind = str
            bounds = {"min_length": 1, "max_length": spec.max_length}
        if spec.name == "event_id":
            fields[spec.name] = (Optional[str], Field(None, description=spec.description +
                                 " (optional: derived from the content when absent)", **bounds))
        elif not spec.required:
            fields[spec.name] = (Optional[kind], Field(None, description=spec.description, **bounds))
        else:
            fields[spec.name] = (kind, Field(..., description=spec.description, **bounds))
    return create_model("DownloadEvent", __doc__="One app-download event (see appdata/contract/schema.py).", **fields)


DownloadEvent = _event_model()


class Rejected(BaseModel):
    index: int = Field(description="Position of the record in the request (0-based)")
    field: str = Field(description="First failing field")
    reason: str = Field(description="Every failing field with its reason")


class IngestResult(BaseModel):
    accepted: int = Field(description="Records put to Kinesis")
    rejected: list[Rejected] = Field(description="Records refused, kept under rejected/api/")
    event_ids: list[str] = Field(description="event_id of each accepted record, in request order")
    request_id: str = Field(description="Deterministic id of this request body (dead-letter object name)")


class Health(BaseModel):
    status: str
    requests_dropped: dict[str, int] = Field(description="Requests dropped before their body ended, by why "
                                                         "(client_disconnected, body_timeout), since this process started")


class Download(BaseModel):
    model_config = {"extra": "allow"}
    event_id: str
    user_id: int
    app: str
    category: str
    download_date: str


class UserDownloads(BaseModel):
    user_id: int
    count: int
    downloads: list[dict[str, Any]]


class Recommendations(BaseModel):
    model_config = {"extra": "allow"}
    user_id: int
    apps: list[dict[str, Any]]
    generated_at: Optional[str] = None
    method: Optional[str] = None


# ---------------------------------------------------------------- helpers

def _download_from_item(item: dict[str, Any]) -> dict[str, Any]:
    raw = aws.from_item(item)
    out: dict[str, Any] = {}
    for spec in schema.FIELDS:
        value = raw.get(spec.name)
        if value is not None and spec.kind == "int":
            value = int(value)
        elif value is not None and spec.kind == "float":
            value = float(value)
        out[spec.name] = value
    return out


def _body_limit_error(limit: int) -> ApiError:
    return ApiError(413, f"request body is larger than the limit of {limit} bytes", "body")


async def read_body_limited(request: Request, limit: int) -> bytes:
    """The body, refused with 413 before parsing when Content-Length or the stream passes `limit`."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise ApiError(400, "Content-Length is not an integer", "content-length") from None
        if size > limit:
            raise _body_limit_error(limit)
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise _body_limit_error(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def parse_records(body: bytes) -> list[Any]:
    """One event, {"records": [...]} or a JSON list -> list of raw records (400/413/422 otherwise)."""
    if not body.strip():
        raise ApiError(400, "request body is empty; send one event, a JSON list or {\"records\": [...]}", "body")
    try:
        payload = schema.loads(body)
    except UnicodeDecodeError:
        raise ApiError(400, "request body is not UTF-8 text", "body") from None
    except schema.JsonError as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}", "body") from None
    # {"records": [...]} is the envelope; an event that merely has a field named "records"
    # (not a list, beside other fields) is one event, as the drain would read it.
    if isinstance(payload, dict) and "records" in payload and (isinstance(payload["records"], list) or len(payload) == 1):
        records = payload["records"]
        if not isinstance(records, list):
            raise ApiError(422, "records must be a JSON list of events", "records")
    elif isinstance(payload, dict):
        records = [payload]
    elif isinstance(payload, list):
        records = payload
    else:
        raise ApiError(422, "body must be an event object, a JSON list or {\"records\": [...]}", "body")
    if not records:
        raise ApiError(422, "records is empty: send at least one event", "records")
    if len(records) > MAX_RECORDS_PER_REQUEST:
        raise ApiError(413, f"too many records: {len(records)} > the limit of {MAX_RECORDS_PER_REQUEST} "
                            "per request", "records")
    return records


def _check_key(given: str | None, keys: list[str]) -> None:
    if not given:
        raise ApiError(401, f"missing {API_KEY_HEADER} header", API_KEY_HEADER)
    if not keys:
        raise ApiError(403, f"{API_KEY_HEADER} refused: the server has no API keys configured "
                            "(APPDATA_API_KEYS)", API_KEY_HEADER)
    supplied = given.encode("utf-8", "surrogateescape")
    match = False
    for key in keys:  # no early exit: every key is compared, in constant time each
        match |= hmac.compare_digest(supplied, key.encode("utf-8"))
    if not match:
        raise ApiError(403, f"{API_KEY_HEADER} is not valid", API_KEY_HEADER)


# ---------------------------------------------------------------- the app

class AwsClients:
    """The app's boto3 clients, each made once from the settings on first use and then shared.

    Made on first use rather than in create_app so building the app (and its OpenAPI document)
    costs nothing; boto3 clients are thread-safe, so request threads share them.
    """

    def __init__(self, settings: Settings):
        self._settings = settings
        self._made: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _get(self, name: str) -> Any:
        client = self._made.get(name)
        if client is None:
            with self._lock:
                client = self._made.get(name)
                if client is None:
                    client = self._made[name] = aws.client(name, **aws_client_kwargs(self._settings, name))
        return client

    @property
    def s3(self) -> Any:
        return self._get("s3")

    @property
    def kinesis(self) -> Any:
        return self._get("kinesis")

    @property
    def dynamodb(self) -> Any:
        return self._get("dynamodb")


def create_app(settings: Settings | None = None, *, api_keys: list[str] | None = None,
               max_body_bytes: int | None = None, body_timeout: float | None = None, put_attempts: int = 6,
               put_base_delay: float = 0.05) -> FastAPI:
    """Build the API with its clients; keys and limits come from the environment unless given."""
    settings = settings or Settings.from_env()
    keys = list(api_keys) if api_keys is not None else api_keys_from_env()
    limit = max_body_bytes or max_body_bytes_from_env()
    if not keys:
        log.warning("no API keys configured (APPDATA_API_KEYS): every /v1 request will be refused")
    clients = AwsClients(settings)

    app = FastAPI(
        title="appdata ingest API",
        version="1.0",
        description="App-download events in (to Kinesis), a user's downloads and recommendations out, "
                    "analytics aggregates (groups under 5 distinct users withheld). "
                    f"Every /v1 route needs the `{API_KEY_HEADER}` header. Bodies over {limit} bytes "
                    f"or {MAX_RECORDS_PER_REQUEST} records are refused with 413.",
    )
    app.state.settings = settings
    app.state.clients = clients
    app.state.max_body_bytes = limit
    dropped = DroppedRequests()
    app.add_middleware(BodyGuard, timeout=body_timeout or body_timeout_from_env(), dropped=dropped)

    api_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False,
                                  description="One of the keys in APPDATA_API_KEYS")

    def require_key(given: str | None = Security(api_key_header)) -> None:
        _check_key(given, keys)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.detail, exc.field)

    @app.exception_handler(BodyTimeout)
    async def _body_timeout(_: Request, exc: BodyTimeout) -> JSONResponse:
        response = _error(exc.status, exc.detail, exc.field)
        response.headers["connection"] = "close"  # the rest of the body is not awaited
        return response

    @app.exception_handler(ClientDisconnect)
    async def _client_gone(_: Request, __: ClientDisconnect) -> Response:
        return Response(status_code=400)  # nobody reads it; BodyGuard logged and counted the drop

    @app.exception_handler(StoreUnavailable)
    async def _store_down(request: Request, exc: StoreUnavailable) -> JSONResponse:
        log.error("store unavailable: %s", exc)
        if request.method in ("GET", "HEAD"):  # a read changed nothing: only the retry matters
            return _error(503, f"{exc}; the data is temporarily unavailable, retry shortly", None)
        return _error(503, f"{exc}; nothing was accepted, retry the request", None)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("path", "query", "header", "body")]
        field = ".".join(loc) or None
        message = f"{field}: {first.get('msg', 'invalid')}" if field else first.get("msg", "invalid request")
        return _error(422, message, field)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        field = {405: "method", 404: "path"}.get(exc.status_code)  # routing errors: the method or path
        return _error(exc.status_code, str(exc.detail), field)

    def custom_openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        event_schema = DownloadEvent.model_json_schema(ref_template="#/components/schemas/{model}")
        spec.setdefault("components", {}).setdefault("schemas", {})["DownloadEvent"] = event_schema
        app.openapi_schema = spec
        return spec

    app.openapi = custom_openapi  # type: ignore[method-assign]

    event_ref = {"$ref": "#/components/schemas/DownloadEvent"}
    batch = {"type": "array", "items": event_ref, "minItems": 1, "maxItems": MAX_RECORDS_PER_REQUEST}
    body_doc = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"anyOf": [
                event_ref, batch,
                {"type": "object", "properties": {"records": batch}, "required": ["records"]},
            ]}}},
        }
    }

    @app.get("/healthz", response_model=Health, tags=["ops"])
    def healthz() -> dict[str, Any]:
        """Liveness: the process answers (no auth, no AWS call); and how many requests it dropped."""
        return {"status": "ok", "requests_dropped": dropped.as_dict()}

    @app.post("/v1/downloads", response_model=IngestResult, tags=["downloads"], openapi_extra=body_doc,
              dependencies=[Depends(require_key)],
              responses={207: {"model": IngestResult, "description": "Some records rejected (see `rejected`)"},
                         503: {"description": "Kinesis or S3 unavailable, or records still failing after "
                                              "retries (listed in `failed`); retry the request"},
                         **error_responses(400, 401, 403, 413, 422)})
    async def post_downloads(request: Request) -> JSONResponse:
        """One event, a JSON list, or {"records": [...]} (at most 500). Valid records go to Kinesis;
        invalid ones come back with index, field and reason and are kept under rejected/api/.
        200 when all were accepted, 207 when some were rejected."""
        body = await read_body_limited(request, limit)
        records = parse_records(body)
        status, payload = await run_in_threadpool(
            ingest, records, body=body, s3_client=clients.s3, bucket=settings.bucket, kinesis_client=clients.kinesis,
            stream=settings.stream, put_attempts=put_attempts, put_base_delay=put_base_delay)
        return JSONResponse(payload, status_code=status)

    def _query_downloads(user_id: int, limit_items: int) -> list[dict[str, Any]]:
        try:
            response = clients.dynamodb.query(
                TableName=settings.table,
                KeyConditionExpression="user_id = :u AND begins_with(sk, :p)",
                ExpressionAttributeValues={":u": {"S": str(user_id)}, ":p": {"S": "DL#"}},
                ScanIndexForward=False,
                Limit=limit_items,
            )
        except (ClientError, BotoCoreError) as exc:
            raise StoreUnavailable(f"could not query DynamoDB table {settings.table}: {type(exc).__name__}") from exc
        return [_download_from_item(item) for item in response.get("Items", [])]

    @app.get("/v1/users/{user_id}/downloads", response_model=UserDownloads, tags=["users"],
             dependencies=[Depends(require_key)], responses=error_responses(401, 403, 404, 422))
    def get_downloads(user_id: int = PathParam(ge=1, le=2**53 - 1, description="The user"),
                      limit: int = Query(100, ge=1, le=1000, description="At most this many, newest first")):
        """A user's downloads from DynamoDB, newest first; 404 when the user has none."""
        downloads = _query_downloads(user_id, limit)
        if not downloads:
            raise ApiError(404, f"user {user_id} has no downloads", "user_id")
        return {"user_id": user_id, "count": len(downloads), "downloads": downloads}

    @app.get("/v1/users/{user_id}/recommendations", response_model=Recommendations, tags=["users"],
             dependencies=[Depends(require_key)], responses=error_responses(401, 403, 404, 422))
    def get_recommendations(user_id: int = PathParam(ge=1, le=2**53 - 1, description="The user")):
        """The user's recommended apps (item sk="REC"); 404 until some were computed."""
        try:
            response = clients.dynamodb.get_item(TableName=settings.table,
                                         Key={"user_id": {"S": str(user_id)}, "sk": {"S": "REC"}})
        except (ClientError, BotoCoreError) as exc:
            raise StoreUnavailable(f"could not read DynamoDB table {settings.table}: {type(exc).__name__}") from exc
        item = response.get("Item")
        if not item:
            raise ApiError(404, f"no recommendations for user {user_id} yet", "user_id")
        data = aws.from_item(item)
        return {"user_id": user_id, "apps": data.get("apps", []), "generated_at": data.get("generated_at"),
                "method": data.get("method")}

    add_dashboard(app, settings, require_key)
    add_admin(app, parse_api_keys(os.environ.get("APPDATA_ADMIN_API_KEYS")), lambda: clients.s3, settings.bucket)

    @app.get("/report", response_class=HTMLResponse, tags=["ops"], responses=error_responses(404))
    def report() -> HTMLResponse:
        """The static analytics report (aggregates only, no personal data, so no key needed):
        APPDATA_HOME/reports/appdata_report.html, else s3://<bucket>/reports/appdata_report.html.
        The interactive, filterable dashboard is /dashboard."""
        local = Path(settings.home) / layout.REPORT_KEY
        if local.is_file():
            return HTMLResponse(local.read_text(encoding="utf-8"))
        try:
            obj = clients.s3.get_object(Bucket=settings.bucket, Key=layout.REPORT_KEY)
            return HTMLResponse(obj["Body"].read().decode("utf-8"))
        except ClientError as exc:
            if not (aws.is_missing(exc) or aws.error_code(exc) == "NoSuchBucket"):
                raise StoreUnavailable(f"could not read the report from s3://{settings.bucket}: "
                                       f"{aws.error_code(exc)}") from exc
        except BotoCoreError as exc:
            raise StoreUnavailable(f"could not read the report from s3://{settings.bucket}: "
                                   f"{type(exc).__name__}") from exc
        return _error(404, f"no report built yet: looked in {local} and s3://{settings.bucket}/"
                           f"{layout.REPORT_KEY}; materialize the analytics report assets first", None)

    return app


class LazyApp:
    """ASGI app built on its first call from the environment then (not at import time)."""

    def __init__(self) -> None:
        self._app: FastAPI | None = None
        self._lock = threading.Lock()

    def get(self) -> FastAPI:
        if self._app is None:
            with self._lock:
                if self._app is None:
                    self._app = create_app()
        return self._app

    def reset(self) -> None:
        """Forget the built app (tests that change the environment)."""
        self._app = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.get()(scope, receive, send)


app = LazyApp()
