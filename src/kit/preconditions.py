"""If-Match / If-None-Match on writes (RFC 9110 §13): a failed precondition is 412, never
304, and nothing is written. Judged inside the write's transaction, against the ETag a GET
of the same item would give, so a concurrent change cannot slip between check and write."""

from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request, status

from src.kit.responses import matches, serialize


@dataclass(frozen=True)
class Preconditions:
    if_match: str | None
    if_none_match: str | None

    @classmethod
    def of(cls, request: Request) -> "Preconditions | None":
        """The request's, or None when it sends neither header (no extra read then)."""
        found = cls(request.headers.get("if-match"), request.headers.get("if-none-match"))
        return None if found.if_match is None and found.if_none_match is None else found

    def check(self, current: Any | None) -> None:
        """Raise 412 unless they hold for `current`, the item as a GET shows it. None (no
        such item): the request's own answer (404) wins, as RFC 9110 §13.2.1 says."""
        if current is not None:
            self._judge(serialize(current)[1])

    def check_collection(self) -> None:
        """A POST's target is the collection, which exists; its ETag is not compared."""
        self._judge(None)

    def _judge(self, etag: str | None) -> None:
        if self.if_match is not None and not _strongly_named(self.if_match, etag):
            raise HTTPException(status.HTTP_412_PRECONDITION_FAILED, "If-Match does not match")
        if matches(self.if_none_match, etag):  # weak comparison, as for a GET
            raise HTTPException(status.HTTP_412_PRECONDITION_FAILED, "If-None-Match matches")


def _strongly_named(if_match: str, etag: str | None) -> bool:
    """If-Match compares strongly: a W/ tag never matches ("*" names any; None: an ETag
    never compared)."""
    return if_match.strip() == "*" or etag in [tag.strip() for tag in if_match.split(",")]
