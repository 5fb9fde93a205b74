"""Every status an operation can answer, the edge's included (400, 408, 431, 503): clients
and the schemathesis tests hold the API to this list."""

from typing import Any

from src.errors import ErrorBody

ETAG_HEADER = {"ETag": {"description": "Strong validator; send it back in If-None-Match"}}
NOT_MODIFIED = {304: {"description": "Not modified: the If-None-Match ETag still matches"}}
RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before retrying",
        "schema": {"type": "integer", "minimum": 0},
    }
}

# What each status means here; the body is ErrorBody unless said otherwise.
MEANINGS = {
    400: "The JSON body is nested too deeply to parse (malformed JSON is a 422)",
    401: "Missing or wrong X-API-Key (or writes are disabled: no API_KEY)",
    404: "No such item",
    409: "Another item already has this key",
    412: "If-Match or If-None-Match does not hold for the item as it is now: nothing changed",
    413: "The body is over MAX_BODY_BYTES (declared or streamed)",
    415: "The body is not sent as JSON (Content-Type: application/json)",
    422: "A parameter or the body does not validate: `errors` names each field and why",
    500: "A bug: logged with its traceback; the body says nothing more",
    503: "The database is unavailable, or the server is at its connection limit: retry after "
    "Retry-After seconds",
}
# Answered by the server (src/serve.py) before any route. 400 is uvicorn's plain text;
# 408 and 431 carry the JSON error body (a body still arriving at the timeout is closed).
EDGE = {
    400: "The request is not valid HTTP (answered by the server, not as JSON)",
    408: "The headers did not arrive within the read timeout",
    431: "The request headers are over the server's limit",
}


def _error(code: int, meanings: dict[int, str]) -> dict[str, Any]:
    response: dict[str, Any] = {"model": ErrorBody, "description": meanings[code]}
    if code == 400:
        response["description"] += f". {EDGE[400]}"
    if code == 503:
        response["headers"] = RETRY_AFTER
    return response


def errors(*codes: int, words: dict[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """The error body for each of `codes` and for what any operation can answer (500, 503,
    the edge's 400, 408, 431); `words`: a resource's own meaning of a status."""
    meanings = MEANINGS | (words or {})
    documented: dict[int | str, dict[str, Any]] = {400: {"description": EDGE[400]}}
    documented.update(
        {code: {"model": ErrorBody, "description": EDGE[code]} for code in (408, 431)}
    )
    documented.update({code: _error(code, meanings) for code in (*codes, 500, 503)})
    return dict(sorted(documented.items(), key=lambda item: str(item[0])))


def read_responses(
    model: Any, *codes: int, words: dict[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """A GET's responses: `model` with its ETag, the 304, and errors(*codes)."""
    return {
        200: {"model": model, "headers": ETAG_HEADER},
        **NOT_MODIFIED,
        **errors(*codes, words=words),
    }
