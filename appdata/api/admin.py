"""Admin routes, behind keys of their own: erasure requests filed and followed.

POST /v1/admin/erasure-requests answers 202 with the request's id as soon as the user is on the
forgotten list (every door drops their events from then on); the pipeline's `forget_users` job
carries it out, and GET /v1/admin/erasure-requests/{id} says where it stands. The keys are
`APPDATA_ADMIN_API_KEYS` (comma separated), never the ingest keys.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from fastapi import Depends, FastAPI, Request, Security
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, Field

from appdata.api.errors import ApiError, error_responses
from appdata.contract.schema import MAX_SAFE_INTEGER

ADMIN_KEY_HEADER = "x-admin-key"


class ErasureBody(BaseModel):
    user_id: int = Field(ge=1, le=MAX_SAFE_INTEGER, description="The user to forget")


def _user_id(body: bytes) -> int:
    """`{"user_id": N}` with N a whole number 1 .. 2^53-1, or a 4xx naming what is wrong."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the body is not JSON: send {\"user_id\": <id>}", "body") from None
    value = data.get("user_id") if isinstance(data, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SAFE_INTEGER:
        raise ApiError(422, f"user_id must be a whole number from 1 to {MAX_SAFE_INTEGER}", "user_id")
    return value


def add_admin(app: FastAPI, admin_keys: list[str], s3: Any, bucket: str) -> None:
    """Mount the admin routes; `s3()` gives the S3 client of the lake bucket."""
    header = APIKeyHeader(name=ADMIN_KEY_HEADER, scheme_name="AdminKey", auto_error=False,
                          description="One of APPDATA_ADMIN_API_KEYS")

    def require_admin(given: str | None = Security(header)) -> str:
        if not admin_keys:
            raise ApiError(403, "admin routes are off: no admin keys configured (APPDATA_ADMIN_API_KEYS)",
                           ADMIN_KEY_HEADER)
        if not given:
            raise ApiError(401, f"missing {ADMIN_KEY_HEADER} header", ADMIN_KEY_HEADER)
        supplied, match = given.encode("utf-8", "surrogateescape"), False
        for key in admin_keys:  # every key compared, in constant time each
            match |= hmac.compare_digest(supplied, key.encode("utf-8"))
        if not match:
            raise ApiError(403, f"{ADMIN_KEY_HEADER} is not valid", ADMIN_KEY_HEADER)
        return "admin-key:" + hashlib.sha256(supplied).hexdigest()[:8]  # who filed it, without the key

    @app.post("/v1/admin/erasure-requests", status_code=202, tags=["admin"],
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": ErasureBody.model_json_schema()}}}},
              responses=error_responses(400, 401, 403, 422))
    async def file_erasure(request: Request, filed_by: str = Depends(require_admin)) -> dict[str, Any]:
        """Forget a user: refused at every door from now on, erased everywhere by the pipeline."""
        from appdata.privacy import log

        user_id = _user_id(await request.body())
        filed = log.file_request(s3(), bucket, user_id, filed_by)
        return {"request_id": filed.request_id, "status": filed.status, "requested_at": filed.requested_at}

    @app.get("/v1/admin/erasure-requests/{request_id}", tags=["admin"], responses=error_responses(401, 403, 404))
    def erasure_status(request_id: str, _: str = Depends(require_admin)) -> dict[str, Any]:
        """Where a request stands: pending, or done with the rows removed per place."""
        from dataclasses import asdict

        from appdata.privacy import log

        if not request_id.isalnum() or len(request_id) > 64:
            raise ApiError(404, "no such erasure request", "request_id")
        try:
            return asdict(log.load(s3(), bucket, request_id))
        except Exception as exc:  # noqa: BLE001 - a missing object is the only expected failure
            if "NoSuchKey" in type(exc).__name__ or "NoSuchKey" in str(exc):
                raise ApiError(404, "no such erasure request", "request_id") from exc
            raise
