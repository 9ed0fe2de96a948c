"""Errors of the API: always JSON, always naming the field and saying why.

Status codes (A1111's where it has one):
- 422: a value out of range or of the wrong type (pydantic, GenerationRequest.validate),
  an unknown schedule type, an unknown script (as A1111);
- 404: a named thing that does not exist: sampler (as A1111), checkpoint, upscaler;
- 400: image data that is not base64 or not an image;
- 413: an image too large to decode or to make;
- 401: missing or wrong credentials (with `WWW-Authenticate: Basic`);
- 500: anything else, with the error's message (the server keeps serving).

Body: {"error": kind, "detail": "<field>: <why>", "field": "<field>"} (+ "errors": the
pydantic list for 422 validation errors). "detail" is where FastAPI clients look.
"""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ApiError(StarletteHTTPException):
    def __init__(self, status_code: int, field: str | None, message: str, kind: str | None = None,
                 headers: dict | None = None):
        detail = f"{field}: {message}" if field else message
        super().__init__(status_code=status_code, detail=detail, headers=headers)
        self.field = field
        self.message = message
        self.kind = kind or {400: "BadRequest", 401: "Unauthorized", 404: "NotFound", 413: "TooLarge",
                             422: "ValidationError"}.get(status_code, "ServerError")


def _loc(loc) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


def install_handlers(app: FastAPI) -> None:
    """JSON bodies for our errors and for request validation. Only the API raises
    ApiError; validation errors are answered in this shape for every route of `app`
    (the Gradio app is mounted separately and keeps its own handlers)."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        return JSONResponse(status_code=e.status_code, headers=e.headers,
                            content={"error": e.kind, "detail": e.detail, "field": e.field})

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError):
        errors = [{"loc": [str(p) for p in err.get("loc", ())], "msg": str(err.get("msg", "")),
                   "type": str(err.get("type", ""))} for err in e.errors()]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        field = _loc(first["loc"])
        detail = "; ".join(f"{_loc(err['loc'])}: {err['msg']}" for err in errors) or "invalid request"
        return JSONResponse(status_code=422, content={"error": "ValidationError", "detail": detail, "field": field,
                                                      "errors": errors})
