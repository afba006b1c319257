"""What readmodels shows machines (Prometheus, through the kernel's ``waybill.metrics``):
the live connections this web process holds (the manifest names ``COLLECTORS``)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily, Metric

from .live.connections import live_connections


class LiveConnectionsCollector:
    """``waybill_live_connections``: WebSockets and SSE streams open on this process, the
    count its limits are checked against (``WAYBILL_LIVE_CONNECTIONS_PER_PROCESS``). Per
    process, unlike the figures read from a database: a dashboard sums them."""

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily("waybill_live_connections",
                                 "Live connections (WebSocket and SSE) open on this process.")

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        family.add_metric([], live_connections.total)
        return [family]


COLLECTORS = (LiveConnectionsCollector(),)
