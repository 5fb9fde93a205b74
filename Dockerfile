# syntax=docker/dockerfile:1
# The API image. It also carries alembic/ and alembic.ini, so the same image runs the
# one-shot `migrate` service (python -m src.migrate, the project's locked runner).

# Must match [requires] python_version in the Pipfile (a test checks it).
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIPENV_VENV_IN_PROJECT=1
WORKDIR /app
RUN pip install --no-cache-dir pipenv==2026.10.3
COPY Pipfile Pipfile.lock ./
# --deploy: fail the build if Pipfile.lock is out of date with the Pipfile.
RUN pipenv install --deploy

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin app
WORKDIR /app
COPY --from=build /app/.venv /app/.venv
COPY alembic.ini ./
COPY alembic ./alembic
COPY src ./src
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER app
EXPOSE 8765
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8765/health', timeout=2)"]
CMD ["uvicorn", "src.main:app", "--host", "0.0.0.0", "--port", "8765"]
