"""orjson bodies straight from the rows (no second validation through a response_model),
with a strong ETag of the exact bytes sent and If-None-Match → 304."""

import hashlib
from typing import Any

import orjson
from fastapi import Request, Response

JSON = "application/json"


def etag_for(body: bytes) -> str:
    # SHA-256: hardware-accelerated on current CPUs; 128 bits tell versions apart.
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def matches(if_none_match: str | None, etag: str | None) -> bool:
    """Whether an If-None-Match value (None: no such header) names `etag` (weak
    comparison, RFC 9110 §13.1.2; None: an ETag never compared, which only "*" names)."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    candidates = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return etag in candidates


def serialize(content: Any) -> tuple[bytes, str]:
    """The JSON body and its ETag: what a response (or src.cache) keeps."""
    body = orjson.dumps(content)
    return body, etag_for(body)


def ok(body: bytes, etag: str, headers: dict[str, str] | None = None) -> Response:
    return Response(body, media_type=JSON, headers=_headers(etag, headers))


def not_modified(etag: str, headers: dict[str, str] | None = None) -> Response:
    return Response(status_code=304, headers=_headers(etag, headers))


def _headers(etag: str, headers: dict[str, str] | None) -> dict[str, str]:
    return {"ETag": etag, "Cache-Control": "no-cache", **(headers or {})}


def respond(
    request: Request, body: bytes, etag: str, headers: dict[str, str] | None = None
) -> Response:
    """`body` with its ETag, or 304 when If-None-Match names it."""
    if matches(request.headers.get("if-none-match"), etag):
        return not_modified(etag, headers)
    return ok(body, etag, headers)


def created(content: Any, location: str) -> Response:
    """201 with the new item and its ETag: an unsafe method's answer is never a 304."""
    body, etag = serialize(content)
    return Response(body, 201, headers=_headers(etag, {"Location": location}), media_type=JSON)


def json_with_etag(
    request: Request, content: Any, headers: dict[str, str] | None = None
) -> Response:
    return respond(request, *serialize(content), headers)
