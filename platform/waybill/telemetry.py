"""OpenTelemetry: one order is one trace, from the HTTP request through every consumer.

The trace context travels in the envelope's ``traceparent`` (W3C), written when a message
is recorded in the outbox, so it crosses the outbox table and the broker: the relay's
publish span and every consumer's span join the trace of the change that caused them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, StatusCode

__all__ = ["SpanKind", "StatusCode", "configure", "current_traceparent", "instrument", "span_entered", "span_for_message",
           "span_started", "tracing"]

tracer = trace.get_tracer("waybill")


def configure(*, service_name: str, exporter: str, console_path: str = "") -> None:
    """Install a tracer provider and the Django, Celery and psycopg instrumentation.

    ``exporter``: "console" (to ``console_path`` if given, else standard output), "otlp"
    (configured by the standard OTEL_EXPORTER_OTLP_* variables) or "none"."""
    if exporter == "none":
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    if exporter == "console":
        # Line-buffered, and kept open for the life of the process, like stdout.
        out = open(console_path, "a", buffering=1) if console_path else None  # noqa: SIM115
        span_exporter = ConsoleSpanExporter(out=out) if out else ConsoleSpanExporter()
    elif exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        span_exporter = OTLPSpanExporter()
    else:
        raise ValueError(f"WAYBILL_OTEL_EXPORTER must be none, console or otlp, not {exporter!r}")
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(span_exporter))
    trace.set_tracer_provider(provider)
    instrument()


def instrument() -> None:
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

    for instrumentor in (DjangoInstrumentor(), CeleryInstrumentor(), PsycopgInstrumentor()):
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument()


def current_traceparent() -> str | None:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


def tracing() -> bool:
    """Whether spans are recorded: a tracer provider was installed (``configure``, or a
    test's). Until then every span is a no-op, so a hot path may leave it out."""
    return not isinstance(trace.get_tracer_provider(), (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


@contextlib.contextmanager
def span_for_message(name: str, *, traceparent: str | None, kind: SpanKind, **attributes) -> Iterator[None]:
    """A span that continues the trace a message carries; nothing at all while spans are
    not recorded (``tracing``): a no-op span per message cost about as much as building
    the message in the relay's profile, and the trace id travels on in the envelopes anyway
    (``outbox_record`` falls back to the cause's traceparent)."""
    span = span_started(name, traceparent=traceparent, kind=kind, **attributes)
    if span is None:
        yield
        return
    with trace.use_span(span, end_on_exit=True):  # records an exception, as start_as_current_span does
        yield


def span_started(name: str, *, traceparent: str | None, kind: SpanKind, **attributes) -> trace.Span | None:
    """``span_for_message``'s span, started but not made current, for work on several
    messages at once: each message's part runs inside its own span (``span_entered``), and
    the caller ends them all. None while spans are not recorded."""
    if not tracing():
        return None
    parent = propagate.extract({"traceparent": traceparent}) if traceparent else None
    return tracer.start_span(name, context=parent, kind=kind, attributes=attributes)


@contextlib.contextmanager
def span_entered(span: trace.Span | None) -> Iterator[None]:
    """``span`` as the current span meanwhile, left open (see ``span_started``)."""
    if span is None:
        yield
        return
    with trace.use_span(span, end_on_exit=False):
        yield
