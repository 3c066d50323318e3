"""Prometheus metrics of one running openmps, in a registry of its own (never the global one:
a test process runs several runtimes).

Levels are read from the runtime when Prometheus scrapes (connected devices, queue depths), so
the paths that push and deliver pay nothing for them. Scaled out, :meth:`Metrics.scrape` also
asks Redis, in two round trips bounded by ``CLUSTER_READ_TIMEOUT_S``, for the dispatch stream's
depth and the presence counts; a level Redis does not give in time is left out of that scrape.
Counts that must see each event are taken at one place each: accepted pushes in
``Runtime.submit``, vendor outcomes and the duration of vendor calls in ``VendorDispatcher``,
own-channel acks in ``StatusWriter.flush`` (once per delivery, when its ack is first written).
Every metric is described in docs/operations.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

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
from redis.exceptions import RedisError

from openmps.cluster.bus import StreamDepth
from openmps.cluster.presence import Census
from openmps.statuses import ACKED
from openmps.vendors import ROUTE_OWN

if TYPE_CHECKING:
    from openmps.runtime import Runtime
    from openmps.scaleout.node import ClusterNode

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

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
# Longest wait for Redis during a scrape (each of the two reads); well below Prometheus's
# default scrape timeout of 10 s, so a slow Redis costs its levels, not the whole scrape.
CLUSTER_READ_TIMEOUT_S = 1.0
# The labels of an own-channel delivery acked by its device: the route, then the stored status.
OWN_ACKED_LABELS = (ROUTE_OWN, ACKED.channel.value, str(ACKED.code))


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
            "Deliveries that reached a final status, by channel and status",
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


class _ClusterCollector(Collector):
    """Levels of the scaled-out deployment, read from Redis by :meth:`read` before each scrape.

    The dispatch stream and the live node count are the deployment's, the same on every node;
    the presence device count is this gateway node's own."""

    def __init__(self, node: ClusterNode, *, gateway: bool, timeout_s: float) -> None:
        self._node = node
        self._gateway = gateway  # this node holds devices: count its presence set
        self._timeout_s = timeout_s  # per Redis read
        self._depth: StreamDepth | None = None  # None: not read in time, left out
        self._census: Census | None = None

    async def read(self) -> None:
        """Ask Redis for the levels (two reads side by side, each within the timeout)."""
        node = self._node
        self._depth, self._census = await asyncio.gather(
            self._bounded("dispatch stream depth", node.stream.depth),
            self._bounded(
                "presence counts",
                lambda: node.presence.census(node.node_id if self._gateway else None),
            ),
        )

    async def _bounded(self, what: str, read: Callable[[], Coroutine[None, None, _T]]) -> _T | None:
        # A task of its own, waited for with asyncio.wait: the scrape goes on after the timeout
        # even if the read does not end at once when cancelled (on Python 3.11 redis-py's
        # wait_for around a socket write can swallow the cancel; the read then ends by itself,
        # at the latest at the client's socket timeout).
        task = asyncio.ensure_future(read())
        done, _ = await asyncio.wait({task}, timeout=self._timeout_s)
        if not done:
            task.cancel()
            task.add_done_callback(_forget)
            logger.warning("metrics: Redis gave no %s within %g s", what, self._timeout_s)
            return None
        try:
            return task.result()
        except (RedisError, OSError) as exc:
            logger.warning("metrics: Redis gave no %s: %s", what, exc)
        except Exception:  # a surprise costs the level, not the scrape
            logger.exception("metrics: reading the %s failed", what)
        return None

    def collect(self) -> Iterator[Metric]:
        depth, census = self._depth, self._census
        if depth is not None:
            yield _gauge(
                "openmps_dispatch_stream_length",
                "Entries in the dispatch stream: published and not yet done (deployment-wide)",
                depth.length,
            )
            yield _gauge(
                "openmps_dispatch_stream_pending",
                "Dispatch stream entries a worker received and has not acked (deployment-wide)",
                depth.pending,
            )
        if census is not None:
            yield _gauge(
                "openmps_cluster_live_nodes",
                "Nodes whose heartbeat has not run out (deployment-wide)",
                census.live_nodes,
            )
            if census.devices is not None:
                yield _gauge(
                    "openmps_presence_devices",
                    "Devices this gateway node holds in presence",
                    census.devices,
                )


def _forget(task: asyncio.Future[Any]) -> None:
    # Retrieve the outcome of a read given up on, so that asyncio does not log it as lost.
    if not task.cancelled():
        task.exception()


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


class Metrics:
    """The metrics of one runtime; ``await scrape()`` is the body of ``GET /metrics``."""

    def __init__(
        self, runtime: Runtime, *, cluster_timeout_s: float = CLUSTER_READ_TIMEOUT_S
    ) -> None:
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
        self._cluster: _ClusterCollector | None = None
        if runtime.cluster is not None:
            self._cluster = _ClusterCollector(
                runtime.cluster, gateway="gateway" in runtime.roles, timeout_s=cluster_timeout_s
            )
            self.registry.register(self._cluster)
        vendor = runtime.vendor_dispatcher.metrics
        self.registry.register(vendor.request_seconds)
        self.registry.register(vendor.deliveries)
        # Own-channel acks join the vendor outcomes, shown from the start where devices connect.
        self._deliveries = vendor.deliveries
        if "gateway" in runtime.roles:
            self._deliveries.labels(*OWN_ACKED_LABELS)
        ProcessCollector(registry=self.registry)

    def count_own_acked(self, count: int) -> None:
        """``count`` own-channel deliveries were acked (the status writer wrote their acks)."""
        self._deliveries.labels(*OWN_ACKED_LABELS).inc(count)

    def count_expired(self, counts: Mapping[tuple[str, str, int], int]) -> None:
        """Deliveries the expiry sweep made final, by (route, status channel, code)."""
        for (route, status_channel, code), count in counts.items():
            self._deliveries.labels(route, status_channel, str(code)).inc(count)

    async def scrape(self) -> bytes:
        """The body of ``GET /metrics``: scaled out, Redis is asked for its levels first."""
        if self._cluster is not None:
            await self._cluster.read()
        return self.render()

    def render(self) -> bytes:
        """The registry as it stands (scaled out, with the Redis levels of the last scrape)."""
        return generate_latest(self.registry)
