"""What routes take from the application state, typed."""

from fastapi import Request

from src.config import Settings
from src.db import Database


def database(request: Request) -> Database:
    """The Database the lifespan created (a plain call: no per-request dependency cost)."""
    return request.app.state.database


def settings(request: Request) -> Settings:
    return request.app.state.settings
