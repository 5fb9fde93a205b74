"""src/telemetry.py: a real request through the app on the real database gives a server
span (route template, status, request ID) with its SQL spans as children, and the HTTP
duration histogram; with no OTEL_* set nothing is exported, nothing is even imported."""

import json
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from asgi_lifespan import LifespanManager
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import Engine

from devtools.embedded_pg import free_port
from src.config import PROJECT_ROOT, Settings
from src.main import create_app
from src.telemetry import Telemetry, exporters, from_settings, otlp_endpoint
from tests.helpers import (
    API_KEY,
    asgi_client,
    child_env,
    one_line_failure,
    run_python,
    unreachable_url,
    wait_for,
)

OFF = {
    "otel_sdk_disabled": False,
    "otel_traces_exporter": None,
    "otel_metrics_exporter": None,
    "otel_exporter_otlp_endpoint": None,
    "otel_exporter_otlp_traces_endpoint": None,
    "otel_exporter_otlp_metrics_endpoint": None,
}
REQUEST_ID_ATTRIBUTE = "http.response.header.x_request_id"


@dataclass
class Traced:
    client: httpx.AsyncClient
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader

    def server_span(self, request_id: str) -> ReadableSpan:
        found = [
            span
            for span in self.spans.get_finished_spans()
            if span.kind == SpanKind.SERVER
            and (span.attributes or {}).get(REQUEST_ID_ATTRIBUTE) == (request_id,)
        ]
        assert len(found) == 1, [(s.name, s.attributes) for s in self.spans.get_finished_spans()]
        return found[0]

    def sql_children(self, parent: ReadableSpan) -> list[ReadableSpan]:
        assert parent.context is not None
        return [
            span
            for span in self.spans.get_finished_spans()
            if span.parent is not None
            and span.parent.span_id == parent.context.span_id
            and db_system(span) == "postgresql"
        ]


def db_system(span: ReadableSpan) -> object:
    """Old (default) or stable (OTEL_SEMCONV_STABILITY_OPT_IN=database) attribute names."""
    attributes = span.attributes or {}
    return attributes.get("db.system.name", attributes.get("db.system"))


def statement(span: ReadableSpan) -> str:
    attributes = span.attributes or {}
    return str(attributes.get("db.query.text", attributes.get("db.statement")))


def off(settings: Settings) -> Settings:
    return settings.model_copy(update=OFF)


def without_otel(env: dict[str, str], **extra: str) -> dict[str, str]:
    """A child's environment with none of the developer's own OTEL_* variables."""
    return {**{k: v for k, v in env.items() if not k.startswith("OTEL_")}, **extra}


@pytest.fixture
async def traced(settings: Settings, db: Engine) -> AsyncIterator[Traced]:
    """The app with in-memory exporters, as OTEL_* settings would give it real ones."""
    spans, metrics = InMemorySpanExporter(), InMemoryMetricReader()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    telemetry = Telemetry(tracer_provider, MeterProvider(metric_readers=[metrics]))
    app = create_app(off(settings), telemetry=telemetry)
    async with LifespanManager(app) as manager:
        async with asgi_client(manager.app) as client:
            yield Traced(client, spans, metrics)


def status_of(span: ReadableSpan) -> object:
    attributes = span.attributes or {}
    return attributes.get("http.response.status_code", attributes.get("http.status_code"))


async def test_a_read_is_a_server_span_with_its_sql_as_children(traced: Traced):
    response = await traced.client.get("/country/GB", headers={"X-Request-ID": "trace-me-1"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "trace-me-1"

    server = traced.server_span("trace-me-1")
    assert server.name == "GET /country/{code}"
    assert (server.attributes or {}).get("http.route") == "/country/{code}"
    assert status_of(server) == 200
    sql = traced.sql_children(server)
    assert sql, "no SQL span under the request's span"
    assert all(span.kind == SpanKind.CLIENT for span in sql)
    assert all(span.context.trace_id == server.context.trace_id for span in sql)
    assert any("FROM country" in statement(span) for span in sql)


async def test_a_generated_request_id_and_a_write_are_traced_too(traced: Traced):
    """No X-Request-ID sent: the one the app made is on the span; the write's SQL runs on
    the transactional view of the same engine and is traced as well."""
    body = {"alpha2": "XT", "alpha3": "XTT", "name": "Traceland"}
    response = await traced.client.post("/country", json=body, headers={"X-API-Key": API_KEY})
    assert response.status_code == 201, response.text
    server = traced.server_span(response.headers["x-request-id"])
    assert server.name == "POST /country"
    assert status_of(server) == 201
    statements = [statement(span) for span in traced.sql_children(server)]
    assert any(text.startswith("INSERT INTO country") for text in statements), statements


async def test_errors_keep_their_status_on_the_span(traced: Traced):
    response = await traced.client.get("/country/ZZ", headers={"X-Request-ID": "missing-1"})
    assert response.status_code == 404
    server = traced.server_span("missing-1")
    assert status_of(server) == 404
    assert traced.sql_children(server), "the lookup that found nothing is traced"


async def test_metrics_have_the_http_server_duration_histogram(traced: Traced):
    for _ in range(3):
        assert (await traced.client.get("/country/FR")).status_code == 200
    data = traced.metrics.get_metrics_data()
    assert data is not None
    metrics = {
        metric.name: metric
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    # The stable names (OTEL_SEMCONV_STABILITY_OPT_IN=http), else the old (the default):
    # either way the route template, never the raw path, so the series stay bounded.
    if "http.server.request.duration" in metrics:
        duration, route = metrics["http.server.request.duration"], "http.route"
    else:
        duration, route = metrics["http.server.duration"], "http.target"
    points = [
        point
        for point in duration.data.data_points
        if (point.attributes or {}).get(route) == "/country/{code}"
    ]
    assert sum(point.count for point in points) == 3, duration.data.data_points


async def test_off_without_otel_settings_and_the_app_works(settings: Settings, db: Engine):
    assert from_settings(off(settings)) is None
    app = create_app(off(settings))
    async with LifespanManager(app) as manager:
        async with asgi_client(manager.app) as client:
            assert (await client.get("/country/GB")).status_code == 200
    assert not getattr(app, "_is_instrumented_by_opentelemetry", False)


def test_off_imports_no_instrumentation_or_sdk(database_url: str, migrated: Engine):
    """A fresh interpreter, with no OTEL_* set, as `uvicorn src.main:app` starts: the app
    serves a request, and neither the SDK nor an instrumentation was ever loaded."""
    script = """
import asyncio, json, sys
import httpx
from asgi_lifespan import LifespanManager
from src.main import app_from_environment

async def main():
    async with LifespanManager(app_from_environment()) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            status = (await client.get("/country/GB")).status_code
    prefixes = ("opentelemetry.sdk", "opentelemetry.instrumentation")
    loaded = [name for name in sys.modules if name.startswith(prefixes)]
    print(json.dumps({"status": status, "loaded": loaded}))

asyncio.run(main())
"""
    result = run_python("-c", script, cwd=PROJECT_ROOT, env=without_otel(child_env(database_url)))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {"status": 200, "loaded": []}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OTEL_TRACES_EXPORTER", "zipkin"),
        ("OTEL_METRICS_EXPORTER", "otlp,prometheus"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
    ],
)
def test_an_exporter_that_is_not_installed_stops_the_app_in_one_line(name: str, value: str):
    env = without_otel(child_env(unreachable_url()), **{name: value})
    result = run_python("-c", "from src.main import app", cwd=PROJECT_ROOT, env=env)
    assert name in one_line_failure(result)


@pytest.mark.parametrize(
    ("given", "traces", "metrics"),
    [
        ({}, [], []),
        ({"otel_exporter_otlp_endpoint": "http://collector:4318"}, ["otlp"], ["otlp"]),
        ({"otel_exporter_otlp_traces_endpoint": "http://c:4318/v1/traces"}, ["otlp"], ["otlp"]),
        ({"otel_traces_exporter": "console", "otel_metrics_exporter": "none"}, ["console"], []),
        ({"otel_traces_exporter": "otlp,console"}, ["otlp", "console"], ["otlp"]),
        ({"otel_traces_exporter": "none", "otel_metrics_exporter": "none"}, [], []),
        ({"otel_traces_exporter": "none"}, [], []),  # names no destination: stays off
        ({"otel_metrics_exporter": "console"}, ["otlp"], ["console"]),
        ({"otel_traces_exporter": "none", "otel_exporter_otlp_endpoint": "http://c"}, [], ["otlp"]),
        ({"otel_exporter_otlp_endpoint": "http://c:4318", "otel_sdk_disabled": True}, [], []),
    ],
)
def test_the_switch_follows_the_spec(settings: Settings, given: dict, traces, metrics):
    chosen = off(settings).model_copy(update=given)
    assert exporters(chosen, "traces") == traces
    assert exporters(chosen, "metrics") == metrics


@pytest.mark.parametrize(
    ("value", "disabled"), [("true", True), ("TRUE", True), ("false", False), ("1", False)]
)
def test_only_true_disables_the_sdk(value: str, disabled: bool):
    assert Settings(_env_file=None, otel_sdk_disabled=value).otel_sdk_disabled is disabled


class Collector(ThreadingHTTPServer):
    """A stand-in OTLP/HTTP collector on a free loopback port: keeps what it is sent."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes]] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                collector.received.append((self.path, body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    def spans(self) -> list:
        requests = [
            ExportTraceServiceRequest.FromString(body)
            for path, body in self.received
            if path == "/v1/traces"
        ]
        return [
            (resource.resource, span)
            for request in requests
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]

    def metric_names(self) -> set[str]:
        return {
            metric.name
            for path, body in self.received
            if path == "/v1/metrics"
            for resource in ExportMetricsServiceRequest.FromString(body).resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
        }


def attributes_of(item) -> dict[str, object]:
    def value(any_value):
        kind = any_value.WhichOneof("value")
        if kind == "array_value":
            return tuple(value(v) for v in any_value.array_value.values)
        return getattr(any_value, kind)

    return {kv.key: value(kv.value) for kv in item.attributes}


@pytest.mark.slow
def test_otlp_endpoint_in_the_environment_exports_to_it(database_url: str, migrated: Engine):
    """`OTEL_EXPORTER_OTLP_ENDPOINT=...` on a real uvicorn process: the spans
    and metrics of a real request reach the collector, named by OTEL_SERVICE_NAME."""
    with Collector() as collector:
        threading.Thread(target=collector.serve_forever, daemon=True).start()
        env = without_otel(
            child_env(database_url),
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{collector.server_address[1]}",
            OTEL_SERVICE_NAME="country-api-under-test",
        )
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "src.main:app", "--port", str(port)],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(f"http://127.0.0.1:{port}/health", proc)
            headers = {"X-Request-ID": "exported-1"}
            response = httpx.get(f"http://127.0.0.1:{port}/country/GB", headers=headers)
            assert response.status_code == 200
        finally:
            proc.send_signal(signal.SIGTERM)  # lifespan shutdown: exports what is pending
            proc.wait(timeout=30)
        collector.shutdown()

    spans = collector.spans()
    servers = [
        (resource, span)
        for resource, span in spans
        if attributes_of(span).get(REQUEST_ID_ATTRIBUTE) == ("exported-1",)
    ]
    assert len(servers) == 1, [span.name for _, span in spans]
    resource, server = servers[0]
    assert attributes_of(resource)["service.name"] == "country-api-under-test"
    assert server.name == "GET /country/{code}"
    children = [span for _, span in spans if span.parent_span_id == server.span_id]
    assert any(attributes_of(span).get("db.system") == "postgresql" for span in children)
    assert {"http.server.duration", "http.server.request.duration"} & collector.metric_names()


@pytest.mark.parametrize(
    ("given", "traces", "metrics"),
    [
        ({}, None, None),
        ({"otel_exporter_otlp_endpoint": "http://c:4318"}, "http://c:4318/v1/traces", None),
        ({"otel_exporter_otlp_endpoint": "http://c:4318/"}, "http://c:4318/v1/traces", None),
        (
            {
                "otel_exporter_otlp_endpoint": "http://c:4318/base",
                "otel_exporter_otlp_metrics_endpoint": "http://m:9000/own",
            },
            "http://c:4318/base/v1/traces",
            "http://m:9000/own",
        ),
    ],
)
def test_otlp_endpoints_follow_the_spec(settings: Settings, given: dict, traces, metrics):
    """The shared endpoint gets /v1/<signal>; a signal's own endpoint is used as given."""
    chosen = off(settings).model_copy(update=given)
    assert otlp_endpoint(chosen, "traces") == traces
    expected = metrics or (traces and traces.replace("/v1/traces", "/v1/metrics"))
    assert otlp_endpoint(chosen, "metrics") == expected
