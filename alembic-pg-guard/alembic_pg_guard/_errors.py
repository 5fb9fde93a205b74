"""One failure type for everything the guard refuses: shown as one line, exit status 1."""

import sys
from collections.abc import Iterator
from contextlib import contextmanager


class GuardError(RuntimeError):
    """A failure the user can act on: one line, never a traceback."""


@contextmanager
def fail_on_errors() -> Iterator[None]:
    """Around a command's body: `error: <line>` on stderr and exit 1; Ctrl-C exits 130."""
    try:
        yield
    except GuardError as exc:
        sys.exit(f"error: {exc}")
    except KeyboardInterrupt:
        sys.exit(130)
