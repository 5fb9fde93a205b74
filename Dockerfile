# syntax=docker/dockerfile:1
# The API image. It also carries alembic/, alembic.ini and the migration guard, so the same
# image runs the one-shot migration (python -m alembic_pg_guard migrate, the project's
# locked runner): the compose `migrate` service, or a Kubernetes Job / initContainer.
# /app mirrors the repository layout (src/, alembic/, alembic.ini, alembic-pg-guard/), so
# src.config's PROJECT_ROOT is /app. Settings come from the environment only: .env never reaches
# the build context (.dockerignore).

# One tested version: CI's (.ci/run), and one the Pipfile's [requires] python_version
# allows (tests/docker/test_static.py checks both).
ARG PYTHON_VERSION=3.11

# --- build: the locked runtime dependencies in /app/.venv (no dev packages) ----------
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIPENV_VENV_IN_PROJECT=1 \
    PIPENV_NOSPIN=1
WORKDIR /app
# The same pipenv as .ci/run.
RUN pip install --no-cache-dir pipenv==2026.10.3
COPY Pipfile Pipfile.lock ./
# The guard is installed from its path (editable: the venv points at /app/alembic-pg-guard,
# which the runtime stage copies to the same place); its tests stay out.
COPY alembic-pg-guard/pyproject.toml alembic-pg-guard/README.md ./alembic-pg-guard/
COPY alembic-pg-guard/alembic_pg_guard ./alembic-pg-guard/alembic_pg_guard
# --deploy: fail the build if Pipfile.lock is out of date with the Pipfile.
RUN pipenv install --deploy

# --- runtime: no pipenv, no build tools, not root --------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin app
WORKDIR /app
# Owned by root and read-only for the app user: the service cannot rewrite its own code.
COPY --from=build /app/.venv /app/.venv
COPY alembic-pg-guard/pyproject.toml alembic-pg-guard/README.md ./alembic-pg-guard/
COPY alembic-pg-guard/alembic_pg_guard ./alembic-pg-guard/alembic_pg_guard
COPY alembic.ini ./
COPY alembic ./alembic
COPY src ./src
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    API_HOST=0.0.0.0 \
    API_PORT=8765
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
EXPOSE 8765
# Liveness only (never the database): see src/routes/health.py.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8765/health', timeout=2)"]
# The project's one server entry point: uvicorn with the HTTP edge's limits from settings
# (header size, read/keep-alive timeouts, concurrency; docs/edge.md), no banner.
CMD ["python", "-m", "src.serve"]
