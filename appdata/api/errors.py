"""How the API says no: one error shape (detail + the field at fault) for every route."""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, Field


class ApiError(Exception):
    """A client-facing error: status, message, and the field (header, param, record key) at fault."""

    def __init__(self, status: int, detail: str, field: str | None):
        super().__init__(detail)
        self.status, self.detail, self.field = status, detail, field


class ErrorBody(BaseModel):
    detail: str
    field: Optional[str] = Field(description="The header, parameter or record field at fault")


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` documenting these status codes with the error shape."""
    return {code: {"model": ErrorBody} for code in codes}
