"""OpenTelemetry traces and metrics (FastAPI's and SQLAlchemy's maintained instrumentations),
off unless the OTEL_* settings name an exporter or an endpoint (docs/production.md): then
nothing is imported or wrapped, and requests pay nothing."""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from src.config import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider
    from sqlalchemy.ext.asyncio import AsyncEngine

    from src.db import Database

logger = logging.getLogger(__name__)
# The request ID (src/logs.py) as the server span's http.response.header.x_request_id.
REQUEST_ID_HEADER = "x-request-id"
Signal = Literal["traces", "metrics"]


def exporters(settings: Settings, signal: Signal) -> list[str]:
    """The exporters `signal` goes to. None unless some setting names a destination (an
    exporter other than none, an OTLP endpoint); then, as the spec says, each signal
    defaults to otlp. OTEL_SDK_DISABLED=true turns everything off."""
    chosen = {
        name: _names(getattr(settings, f"otel_{name}_exporter")) for name in ("traces", "metrics")
    }
    endpoints = (
        settings.otel_exporter_otlp_endpoint,
        settings.otel_exporter_otlp_traces_endpoint,
        settings.otel_exporter_otlp_metrics_endpoint,
    )
    named = any(names and names != ["none"] for names in chosen.values())
    if settings.otel_sdk_disabled or not (named or any(endpoints)):
        return []
    return [name for name in chosen[signal] or ["otlp"] if name != "none"]


def _names(value: str | None) -> list[str]:
    """OTEL_*_EXPORTER's comma-separated list, in order, without repeats."""
    return list(dict.fromkeys(name.strip() for name in value.split(","))) if value else []


@dataclass(frozen=True)
class Telemetry:
    """Where spans and metrics go; tests give in-memory ones, `from_settings` the real."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def instrument_app(self, app: FastAPI) -> None:
        """Before the first request: the server span wraps the whole middleware stack."""
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
        from opentelemetry.util.http import (
            OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE,
            get_custom_headers,
        )

        captured = get_custom_headers(OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE)
        FastAPIInstrumentor.instrument_app(
            app,
            tracer_provider=self.tracer_provider,
            meter_provider=self.meter_provider,
            http_capture_headers_server_response=[REQUEST_ID_HEADER, *captured],
            exclude_spans=["receive", "send"],  # one span per ASGI message is noise
        )

    def instrument_database(self, database: Database) -> None:
        """SQL spans (children of the current request's span): the reads' and writes' own
        (they run on the driver), SQLAlchemy's events for /ready's probe, with pool usage."""
        from opentelemetry.trace import SpanKind

        tracer = self.tracer_provider.get_tracer(__name__)
        name = database.autocommit.url.database

        def sql_span(sql: str) -> AbstractContextManager[object]:
            return tracer.start_as_current_span(
                f"{sql.split(None, 1)[0]} {name}",
                kind=SpanKind.CLIENT,
                attributes={"db.system": "postgresql", "db.name": name, "db.statement": sql},
            )

        database.sql_span = sql_span
        self._instrument_engine(database.autocommit)

    def _instrument_engine(self, engine: AsyncEngine) -> None:
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        # skip_dep_check: the package still declares sqlalchemy<2.1, but uses only the
        # engine events (before/after_cursor_execute), unchanged in 2.1 (tests/test_telemetry.py).
        traced = SQLAlchemyInstrumentor().instrument(
            engine=engine.sync_engine,
            tracer_provider=self.tracer_provider,
            meter_provider=self.meter_provider,
            skip_dep_check=True,
        )
        if traced is None:
            logger.warning("SQLAlchemy was already instrumented: no SQL spans for this app")

    def shutdown(self, app: FastAPI) -> None:
        """After the pool is closed: remove what was wrapped, export what is pending (the
        exporters retry an unreachable collector within OTEL_EXPORTER_OTLP_TIMEOUT)."""
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        SQLAlchemyInstrumentor().uninstrument()
        FastAPIInstrumentor.uninstrument_app(app)
        for provider in (self.tracer_provider, self.meter_provider):
            if shutdown := getattr(provider, "shutdown", None):  # the no-op ones have none
                shutdown()


def from_settings(settings: Settings) -> Telemetry | None:
    """The SDK's providers with the configured exporters, or None when telemetry is off."""
    traces, metrics = exporters(settings, "traces"), exporters(settings, "metrics")
    if not traces and not metrics:
        return None
    from opentelemetry import metrics as metrics_api
    from opentelemetry import trace as trace_api
    from opentelemetry.sdk.resources import Resource

    shown = {
        signal: ", ".join(names) or "none"
        for signal, names in (("traces", traces), ("metrics", metrics))
    }
    logger.info("telemetry on: traces to %(traces)s, metrics to %(metrics)s", shown)
    resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    tracing = _tracer_provider(traces, settings, resource) if traces else None
    metering = _meter_provider(metrics, settings, resource) if metrics else None
    return Telemetry(
        tracer_provider=tracing or trace_api.NoOpTracerProvider(),
        meter_provider=metering or metrics_api.NoOpMeterProvider(),
    )


def otlp_endpoint(settings: Settings, signal: Signal) -> str | None:
    """The spec's rule: the signal's own endpoint as given, else the shared one + /v1/<signal>;
    None leaves it to the exporter (its default, localhost:4318). Passed explicitly, so the
    settings that turned telemetry on (also read from .env) are the ones it sends to."""
    if own := getattr(settings, f"otel_exporter_otlp_{signal}_endpoint"):
        return own
    shared = settings.otel_exporter_otlp_endpoint
    return f"{shared.rstrip('/')}/v1/{signal}" if shared else None


def _tracer_provider(names: list[str], settings: Settings, resource) -> TracerProvider:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    made = {
        "otlp": lambda: OTLPSpanExporter(endpoint=otlp_endpoint(settings, "traces")),
        "console": ConsoleSpanExporter,
    }
    provider = TracerProvider(resource=resource)  # OTEL_TRACES_SAMPLER, span limits
    for name in names:
        provider.add_span_processor(BatchSpanProcessor(made[name]()))  # OTEL_BSP_*
    return provider


def _meter_provider(names: list[str], settings: Settings, resource) -> MeterProvider:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        ConsoleMetricExporter,
        PeriodicExportingMetricReader,
    )

    made = {
        "otlp": lambda: OTLPMetricExporter(endpoint=otlp_endpoint(settings, "metrics")),
        "console": ConsoleMetricExporter,
    }
    # OTEL_METRIC_EXPORT_INTERVAL / _TIMEOUT
    readers = [PeriodicExportingMetricReader(made[name]()) for name in names]
    return MeterProvider(resource=resource, metric_readers=readers)
