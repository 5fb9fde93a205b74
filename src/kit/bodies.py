"""Request bodies as strict JSON: an object that names a key twice is refused (422), not
read as its last value, which another parser of the same bytes may not agree with. Every
resource route reads its body this way (src/kit/route.py)."""

import json
from typing import Any

from fastapi import Request


class DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise DuplicateKey(key)
        found[key] = value
    return found


class StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = json.loads(body, object_pairs_hook=_unique_keys)
            except DuplicateKey as exc:
                # FastAPI answers its JSON decode errors with a 422 (RequestValidationError).
                text = body.decode("utf-8", "replace")
                raise json.JSONDecodeError(f"duplicate key {exc.args[0]!r}", text, 0) from None
        return self._json
