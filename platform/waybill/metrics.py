"""Metrics for machines: what this process sees of the platform, as Prometheus figures
(prometheus_client), every name prefixed ``waybill_``.

Two kinds:

- counted as it happens, in this process: messages consumed by outcome and the time their
  handlers took (``waybill.consumer``), messages published (``waybill.relay``);
- measured at scrape time, by collectors that read the databases: the backlog, parked rows
  and oldest unsent row of each outbox this process relays, and the dead letters of the
  consumers sharing its database (``opsreport.outbox_figures``, the numbers the operations
  report sends); and whatever the hosted contexts' manifests contribute (``metrics``:
  orders' sagas by state and payment breaker, readmodels' live connections).

A figure read from a database is the same whichever process reports it: a context's relay
and the backstop of its workers both report its outbox, so a dashboard takes ``max`` of
them, not ``sum``. Counters are per process and are summed.

Scrape-time figures never fail the scrape: a database that does not answer leaves its
figures out (and says so in the log), the rest is served.

Exposed two ways, neither public: the ``/metrics`` page of a web process, to staff
(``config.metrics``), and, in any process, prometheus_client's own HTTP server on
``WAYBILL_METRICS_ADDR`` (``serve_configured``), a separate address meant for loopback or
a private network. Celery runs the consumers as threads of the worker's main process
(``waybill.worker``, ``--pool threads``), so one server per process sees every count and
prometheus_client's multiprocess mode is not needed.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from django.conf import settings
from django.db import connections
from django.utils import timezone
from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer, choose_encoder, start_http_server

from . import contexts
from .manifest import resolve
from .opsreport import outbox_figures

log = logging.getLogger(__name__)

# The type label of a message this consumer refused before it knew what it was (unreadable,
# invalid, or of a type it has no handler for): the type is the sender's word, and a label
# value per made-up type would grow without bound.
UNREAD_TYPE = "unread"

MESSAGES_CONSUMED = Counter(
    "waybill_messages_consumed", "Messages a consumer settled, by outcome (waybill.consumer.Outcome): "
    "each delivery from the bus and each retry from the inbox.", ("consumer", "type", "outcome"))
HANDLER_SECONDS = Histogram(
    "waybill_handler_seconds", "Time a handler took to apply one message (a run applied together "
    "counts an equal share for each of its messages).", ("consumer", "type"),
    # From a projection's row update (sub-millisecond) to a payment provider's call (its
    # timeout is seconds).
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
MESSAGES_PUBLISHED = Counter(
    "waybill_messages_published", "Outbox rows the relay published and marked sent.", ("context",))


# --- counted as it happens -----------------------------------------------------------------
def consumed(context: contexts.BoundedContext, message_type: str, outcome: str) -> None:
    """``message_type``: one ``context`` handles, or ``UNREAD_TYPE`` (the caller knows which)."""
    MESSAGES_CONSUMED.labels(context.name, message_type, str(outcome)).inc()


class HandlerClock:
    """The time handlers spend on some messages, observed once when ``observe`` is called:
    a message applied in two parts (an external call, then its record) is one observation.
    Several messages applied together (a batched run) each observe an equal share."""

    def __init__(self, consumer: str, *message_types: str):
        self.consumer = consumer
        self.message_types = message_types
        self.spent: float | None = None

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.spent = (self.spent or 0.0) + time.perf_counter() - started

    def observe(self) -> None:
        if self.spent is None or not self.message_types:
            return  # no handler ran (a duplicate found before it)
        share = self.spent / len(self.message_types)
        for message_type in self.message_types:
            HANDLER_SECONDS.labels(self.consumer, message_type).observe(share)
        self.spent = None


@contextlib.contextmanager
def handler_timed(consumer: str, *message_types: str) -> Iterator[None]:
    """Time one handler call (with every message it applied); observed even if it raised:
    a handler that fails slowly is what latency should show."""
    clock = HandlerClock(consumer, *message_types)
    try:
        with clock.running():
            yield
    finally:
        clock.observe()


def published(context: contexts.BoundedContext, count: int) -> None:
    if count:
        MESSAGES_PUBLISHED.labels(context.name).inc(count)


# --- measured at scrape time ---------------------------------------------------------------
_relayed: dict[str, contexts.BoundedContext] = {}
_relayed_lock = threading.Lock()


def outbox_watch(context: contexts.BoundedContext) -> None:
    """This process relays ``context``'s outbox (a relay was made for it): its figures are
    measured at every scrape from now on."""
    if context.relay:
        with _relayed_lock:
            _relayed[context.name] = context


class OutboxCollector:
    """Outbox backlog, parked rows and oldest unsent age per relayed context, and its
    database's dead letters per consumer, read at each scrape."""

    @staticmethod
    def _families() -> dict[str, GaugeMetricFamily]:
        return {
            "backlog": GaugeMetricFamily("waybill_outbox_backlog", "Unsent outbox rows the relay will "
                                         "still try (parked ones not included).", labels=("context",)),
            "parked": GaugeMetricFamily("waybill_outbox_parked", "Unsent outbox rows parked after "
                                        "WAYBILL_RELAY_MAX_ATTEMPTS failed publishes: they wait for an operator.",
                                        labels=("context",)),
            "age": GaugeMetricFamily("waybill_outbox_oldest_unsent_age_seconds", "Age of the oldest unsent row "
                                     "the relay will still try; 0 when there is none.", labels=("context",)),
            "dead": GaugeMetricFamily("waybill_dead_letters", "Dead letters not replayed, per consumer.",
                                      labels=("context", "consumer")),
        }

    def describe(self) -> Iterable[Metric]:
        # The names without reading a database (the registry asks at registration).
        return list(self._families().values())

    def collect(self) -> Iterable[Metric]:
        families = self._families()
        with _relayed_lock:
            relayed = sorted(_relayed.values(), key=lambda c: c.name)
        for context in relayed:
            try:
                figures = outbox_figures(context, timezone.now())
            except Exception as error:  # noqa: BLE001 - one database down must not take the scrape with it
                # One line, no traceback: it repeats at every scrape while the database is down.
                log.warning("metrics: the outbox of %s could not be measured (database %s), left out of "
                            "this scrape: %r", context.name, context.database, error)
                continue
            families["backlog"].add_metric([context.name], figures.pending)
            families["parked"].add_metric([context.name], figures.parked)
            families["age"].add_metric([context.name], figures.oldest_pending_age_s or 0.0)
            for consumer, count in sorted(figures.dead_letters.items()):
                families["dead"].add_metric([context.name, consumer], count)
        return list(families.values())


class ContributedCollector:
    """The collectors named by the manifests of the contexts this process hosts
    (``Context.metrics``): a context's figures exist only where the context is hosted.
    Resolved at the first scrape, once Django is set up and the contexts' code loaded. Each
    is kept to itself: one that raises (its database is down) is left out of that scrape,
    and the rest is served."""

    def __init__(self):
        self._lock = threading.Lock()
        self._collectors: list[tuple[str, object]] | None = None

    def _resolved(self) -> list[tuple[str, object]]:
        with self._lock:
            if self._collectors is None:
                self._collectors = [
                    (f"{reference}[{index}]", collector)
                    for name in settings.WAYBILL_CONTEXTS
                    if (reference := settings.WAYBILL_MANIFESTS[name].metrics)
                    for index, collector in enumerate(resolve(reference))
                ]
            return self._collectors

    def describe(self) -> Iterable[Metric]:
        # Nothing, rather than the registry collecting to learn the names when this
        # registers (at import, before the contexts' code may load). The one cost: the
        # server's ``?name[]=`` filter does not see these.
        return []

    def collect(self) -> Iterable[Metric]:
        for name, collector in self._resolved():
            try:
                families = list(collector.collect())
            except Exception as error:  # noqa: BLE001 - see the class docstring
                log.warning("metrics: %s could not be collected, left out of this scrape: %r", name, error)
                continue
            yield from families


REGISTRY.register(OutboxCollector())
REGISTRY.register(ContributedCollector())


# --- exposition --------------------------------------------------------------------------
def exposition(accept: str | None = None) -> tuple[bytes, str]:
    """This process's figures in the format ``accept`` asks for (Prometheus text, or
    OpenMetrics), and its content type."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(REGISTRY), content_type


class _ScrapeThread:
    """The registry as the metrics server's threads read it: each scrape runs in a thread
    of its own, so the database connections it opened are closed after it (as Django closes
    a request's), not left to the thread's end."""

    def __init__(self, registry):
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        try:
            yield from self._registry.collect()
        finally:
            connections.close_all()

    def restricted_registry(self, names) -> _ScrapeThread:  # ?name[]=... on the server
        return _ScrapeThread(self._registry.restricted_registry(names))


@dataclass
class MetricsServer:
    """prometheus_client's HTTP server, serving this process's figures on its own address."""

    server: ThreadingWSGIServer
    thread: threading.Thread

    @property
    def address(self) -> tuple[str, int]:
        return self.server.server_address[:2]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:9100`` for IPv6) as (host, port)."""
    host, separator, port = address.strip().rpartition(":")
    if not separator or not host or not port.isdigit():
        raise ValueError(f"WAYBILL_METRICS_ADDR must be host:port, e.g. 127.0.0.1:9100, not {address!r}")
    return host.strip("[]"), int(port)


def serve(address: str) -> MetricsServer:
    """Serve the figures on ``address`` (``host:port``; port 0 picks a free one) until stopped."""
    host, port = parse_address(address)
    server, thread = start_http_server(port, addr=host, registry=_ScrapeThread(REGISTRY))
    thread.name = "metrics-server"
    served = MetricsServer(server, thread)
    log.info("metrics served on http://%s:%d/metrics", *served.address)
    return served


_served: MetricsServer | None = None
_served_lock = threading.Lock()


def serve_configured() -> MetricsServer | None:
    """Where ``WAYBILL_METRICS_ADDR`` is set, serve this process's figures there, once per
    process (a web process and the runtime beside it in ``runplatform`` both ask). Called by
    every long-running process at its start: web (``config.asgi``), worker, relay, translator."""
    global _served
    if not settings.WAYBILL_METRICS_ADDR:
        return None
    with _served_lock:
        if _served is None:
            _served = serve(settings.WAYBILL_METRICS_ADDR)
        return _served
