"""What the routes document in OpenAPI beyond their 200: headers, 304 and error bodies."""

from typing import Any

from src.errors import ErrorBody

ETAG_HEADER = {"ETag": {"description": "Strong validator; send it back in If-None-Match"}}
NOT_MODIFIED = {304: {"description": "Not modified: the If-None-Match ETag still matches"}}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The JSON error body for each status, plus 503 (database unavailable) everywhere."""
    return {code: {"model": ErrorBody} for code in (*codes, 503)}
