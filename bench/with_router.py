"""The real app with another /country router: what the floor and the web ceiling share."""

from fastapi import APIRouter, FastAPI

from src.config import Settings
from src.country.routes import resource as country
from src.main import app_from_environment, create_app


def app_with_country_router(router: APIRouter, settings: Settings | None = None) -> FastAPI:
    """`src.main.create_app` with `router` where the real /country router goes; without
    settings, from the environment (as uvicorn's `module:app`)."""
    real_router, country.router = country.router, router
    try:
        return create_app(settings) if settings is not None else app_from_environment()
    finally:
        country.router = real_router
