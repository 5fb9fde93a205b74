"""Fixtures of the Docker tests: docker-compose.yml, parsed once per session."""

import pytest
import yaml

from tests.docker.compose import COMPOSE_FILE


@pytest.fixture(scope="session")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="session")
def services(compose: dict) -> dict:
    return compose["services"]
