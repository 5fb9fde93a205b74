"""Shared exit path for the project's commands: known failures become one line and exit 1."""

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from alembic_pg_guard import GuardError
from pydantic import ValidationError


class CommandFailure(RuntimeError):
    """A failure the user can act on: shown as one line, exit status 1."""


def settings_error_line(exc: ValidationError) -> str:
    fields = ", ".join(
        f"{'.'.join(map(str, err['loc'])).upper()} ({err['msg'].lower()})" for err in exc.errors()
    )
    return f"invalid settings: {fields}; see .env.example"


@contextmanager
def fail_on_errors() -> Iterator[None]:
    """Around a command's whole body: one line on stderr and exit 1 for what the user can fix."""
    try:
        yield
    except ValidationError as exc:
        sys.exit(f"error: {settings_error_line(exc)}")
    except (CommandFailure, GuardError) as exc:
        sys.exit(f"error: {exc}")
    except KeyboardInterrupt:
        sys.exit(130)
