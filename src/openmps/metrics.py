"""Prometheus metrics of one running openmps, in a registry of its own (never the global one:
a test process runs several runtimes).

Levels are read from the runtime when Prometheus scrapes (connected devices, queue depths), so
the paths that push and deliver pay nothing for them. Counts that must see each event are taken
at one place each: accepted pushes in ``Runtime.submit``, vendor outcomes and the duration of
vendor calls in ``VendorDispatcher``. Every metric is described in docs/operations.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from openmps.runtime import Runtime

# Otherwise each counter and histogram also exports a ``<name>_created`` gauge holding the time
# it was made: a second series per label set that dashboards do not use. The switch is global
# to prometheus_client, which only openmps uses in this process.
disable_created_metrics()  # type: ignore[no-untyped-call]

# The text exposition format 0.0.4, which every Prometheus version reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Label values shown from the start, at 0, so that rate() sees the first push of each kind.
PUSH_KINDS = ("simple", "template", "multiple", "broadcast")
# A vendor call takes tens of milliseconds when healthy and up to the client timeout when not.
VENDOR_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class VendorMetrics:
    """What the vendor dispatcher counts as it works. Registered in no registry of its own;
    the runtime's :class:`Metrics` shows them."""

    def __init__(self) -> None:
        self.request_seconds = Histogram(
            "openmps_vendor_request_seconds",
            "Duration of one call to a vendor channel; one call may carry a batch of deliveries",
            ["vendor"],
            buckets=VENDOR_SECONDS_BUCKETS,
            registry=None,
        )
        self.deliveries = Counter(
            "openmps_deliveries",
            "Vendor-channel deliveries that reached a final status, by status",
            ["channel", "status_channel", "code"],
            registry=None,
        )


class _RuntimeCollector(Collector):
    """Levels read from the runtime at scrape time."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def collect(self) -> Iterator[Metric]:
        runtime = self._runtime
        yield _gauge(
            "openmps_connected_devices",
            "Devices connected to the gateway now",
            len(runtime.hub),
        )
        yield _gauge(
            "openmps_push_intake_queued",
            "Accepted pushes waiting for the intake writer to store them",
            runtime.pushes.queued,
        )
        yield _gauge(
            "openmps_vendor_queued",
            "Vendor deliveries waiting for a free vendor worker",
            runtime.vendor_dispatcher.queued,
        )
        yield _gauge(
            "openmps_vendor_retries_waiting",
            "Vendor deliveries waiting for the time of their next attempt",
            runtime.vendor_dispatcher.retrying,
        )
        yield CounterMetricFamily(
            "openmps_status_changes_written",
            "Status changes (acks, opens, vendor outcomes) the status writer stored",
            value=runtime.writer.written,
        )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


class Metrics:
    """The metrics of one runtime; ``render()`` is the body of ``GET /metrics``."""

    def __init__(self, runtime: Runtime) -> None:
        self.registry = CollectorRegistry()
        self.pushes_accepted = Counter(
            "openmps_pushes_accepted",
            "Pushes the API accepted (answered with a task id), by kind",
            ["kind"],
            registry=self.registry,
        )
        for kind in PUSH_KINDS:
            self.pushes_accepted.labels(kind)
        self.registry.register(_RuntimeCollector(runtime))
        vendor = runtime.vendor_dispatcher.metrics
        self.registry.register(vendor.request_seconds)
        self.registry.register(vendor.deliveries)
        ProcessCollector(registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
