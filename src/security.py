"""API-key protection for writes. Reads stay public."""

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader

from src.kit.deps import settings

# Declared as an OpenAPI security scheme, so Swagger UI's Authorize button works.
api_key_header = APIKeyHeader(
    name="X-API-Key",
    description="Required for POST, PATCH and DELETE (API_KEY in the settings).",
    auto_error=False,
)


async def require_api_key(
    request: Request, key: Annotated[str | None, Depends(api_key_header)]
) -> None:
    expected = settings(request).api_key
    # compare_digest: the time taken does not reveal how much of the key matched.
    if (
        expected is None
        or key is None
        or not secrets.compare_digest(key.encode(), expected.get_secret_value().encode())
    ):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing or wrong X-API-Key header" if expected else "writes are disabled: no API_KEY",
            headers={"WWW-Authenticate": "ApiKey"},
        )


WriteAccess = Depends(require_api_key)
