"""The running service in one object: the store and every part built on it, started and
stopped in order. Both front doors and the gateway reach the service layer through it.

In one process (the default) every part runs here and talks through memory. Scaled out
(``settings.scaled``), the process runs only its roles, and the parts talk through Redis
(:mod:`openmps.scaleout`, ``docs/scale-out.md``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from openmps.analytics import Analytics
from openmps.apps import AppCredentials, KeyRing, count_apps, create_app
from openmps.cluster.nonces import LocalNonces, NonceStore, RedisNonceCache
from openmps.devices import Devices
from openmps.dispatch import Dispatch, Dispatcher
from openmps.errors import ConfigError
from openmps.gateway.hub import Hub
from openmps.gateway.server import Gateway
from openmps.metrics import Metrics
from openmps.mps.signature import NonceCache
from openmps.push import BroadcastRequest, Pushes, PushRequest
from openmps.review import Reviews
from openmps.scaleout.dispatch import ClusterDispatcher
from openmps.scaleout.gateway import GatewayNode
from openmps.scaleout.node import ClusterNode
from openmps.scaleout.recovery import RecoverySweep
from openmps.scaleout.worker import StreamWorker
from openmps.scheduler import Scheduler
from openmps.settings import ROLES, Settings
from openmps.statuswriter import StatusWriter
from openmps.store import Store
from openmps.templates import Templates
from openmps.vendor_dispatch import VendorDispatcher
from openmps.vendors import VendorSettings

logger = logging.getLogger(__name__)

EXPIRY_SWEEP_S = 1.0


def check_scaled(settings: Settings, *, sqlite: bool) -> None:
    """Refuse settings the scaled-out mode cannot run with (ConfigError)."""
    if not settings.scaled:
        return
    if settings.redis_url is None:
        raise ConfigError(
            f"--role {settings.role} runs part of openmps, which needs Redis to reach the other "
            "parts: set redis_url (--redis-url / OPENMPS_REDIS_URL, for example "
            "redis://127.0.0.1:6379/0), or leave --role out to run everything in this process"
        )
    if sqlite:
        raise ConfigError(
            "the scaled-out mode (--role, or redis_url set) needs PostgreSQL, shared by every "
            "process: set database_url (--database-url / OPENMPS_DATABASE_URL, for example "
            "postgresql+asyncpg://openmps@db-host/openmps). SQLite serves one process only"
        )


class Runtime:
    def __init__(
        self, settings: Settings, store: Store, cluster: ClusterNode | None = None
    ) -> None:
        self.settings = settings
        self.store = store
        self.cluster = cluster  # scaled out: this node's Redis link; None in one process
        self.roles = settings.roles if cluster is not None else frozenset(ROLES)
        self.keys = KeyRing(store)
        self.nonces: NonceStore = LocalNonces(NonceCache(window_s=2 * settings.signature_window_s))
        self.hub = Hub()
        self.vendor_settings = VendorSettings(store)
        self.writer = StatusWriter(
            store,
            flush_interval_s=settings.status_flush_interval_s,
            flush_max=settings.status_flush_max,
        )
        self.stream_worker: StreamWorker | None = None
        if cluster is not None and "worker" in self.roles:
            self.stream_worker = StreamWorker(
                cluster,
                store=store,
                writer=self.writer,
                lease_s=settings.presence_ttl_s,
                reclaim_idle_s=settings.dispatch_reclaim_idle_s,
                drain_timeout_s=settings.drain_timeout_s,
            )
        self.vendor_dispatcher = VendorDispatcher(
            self.writer,
            self.vendor_settings.load,
            concurrency=settings.vendor_concurrency,
            max_attempts=settings.vendor_max_attempts,
            backoff_base_s=settings.vendor_backoff_base_s,
            backoff_max_s=settings.vendor_backoff_max_s,
            guard=self.stream_worker.guard if self.stream_worker else None,
            on_record=self.stream_worker.recorded if self.stream_worker else None,
        )
        self.dispatcher: Dispatch
        self.gateway_node: GatewayNode | None = None
        self.recovery: RecoverySweep | None = None
        if cluster is None:
            self.dispatcher = Dispatcher(self.hub, self.vendor_dispatcher)
        else:
            cluster_dispatcher = ClusterDispatcher(cluster)
            self.dispatcher = cluster_dispatcher
            self.nonces = RedisNonceCache(
                cluster.client,
                window_s=2 * settings.signature_window_s,
                prefix=settings.redis_prefix,
            )
            if self.stream_worker is not None:
                self.stream_worker.vendors = self.vendor_dispatcher
            if "gateway" in self.roles:
                self.gateway_node = GatewayNode(
                    cluster, hub=self.hub, store=store, writer=self.writer
                )
            if "scheduler" in self.roles:
                self.recovery = RecoverySweep(
                    cluster,
                    store=store,
                    dispatcher=cluster_dispatcher,
                    after_s=settings.recovery_after_s,
                )
        self.devices = Devices(store, self.hub, self.dispatcher)
        self.pushes = Pushes(
            store,
            self.dispatcher,
            self.vendor_settings,
            max_expired_seconds=settings.max_expired_seconds,
        )
        self.reviews = Reviews(store, self.pushes)
        self.scheduler = Scheduler(
            store,
            self.pushes,
            default_zone=settings.schedule_time_zone,
            max_expired_seconds=settings.max_expired_seconds,
        )
        self.templates = Templates(store)
        self.analytics = Analytics(store, time_zone=settings.schedule_time_zone)
        self.gateway = Gateway(
            hub=self.hub,
            devices=self.devices,
            pushes=self.pushes,
            writer=self.writer,
            heartbeat_interval_s=settings.heartbeat_interval_s,
            heartbeat_timeout_s=settings.heartbeat_timeout_s,
            max_frame_bytes=settings.device_max_frame_bytes,
            rate_per_s=settings.device_rate_per_s,
            rate_burst=settings.device_rate_burst,
            events=self.gateway_node,
        )
        if self.gateway_node is not None:
            self.gateway_node.drop = self.gateway.drop
        self._tasks: set[asyncio.Task[Any]] = set()
        self.gateway_port: int | None = None
        self.started = False  # start() finished: intake running, gateway listening
        self.stopping = False  # a stop was asked for (signal or stop()); /readyz answers 503
        self.metrics = Metrics(self)
        self.writer.on_own_acked = self.metrics.count_own_acked

    @classmethod
    async def open(cls, settings: Settings) -> Runtime:
        check_scaled(settings, sqlite=settings.sqlalchemy_url.startswith("sqlite"))
        cluster = await ClusterNode.open(settings) if settings.scaled else None
        try:
            store = await Store.open(settings.sqlalchemy_url)
        except BaseException:
            if cluster is not None:
                await cluster.close()
            raise
        try:
            return cls(settings, store, cluster)
        except Exception:
            await store.close()
            if cluster is not None:
                await cluster.close()
            raise

    @property
    def node_id(self) -> str | None:
        """This process's node id when scaled out."""
        return self.cluster.node_id if self.cluster is not None else None

    async def submit(self, app_pk: int, request: PushRequest | BroadcastRequest) -> str:
        """Accept a push from either front door; returns what ``PushResult.Data`` carries:
        the task id of an immediate push, the job id of a scheduled or cyclic one."""
        if request.strategy_type not in (None, 0):
            return await self.scheduler.schedule(app_pk, request)
        if isinstance(request, BroadcastRequest):
            answer, kind = await self.pushes.broadcast(app_pk, request), "broadcast"
        else:
            answer, kind = await self.pushes.push(app_pk, request), request.kind
        self.metrics.pushes_accepted.labels(kind).inc()
        return str(answer)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def first_app(self) -> AppCredentials | None:
        """On an empty store, create the default app and return its credentials once."""
        if await count_apps(self.store):
            return None
        return await create_app(self.store, "default")

    async def start(self) -> None:
        """Resume what was left, then open the gateway."""
        if self.cluster is not None:
            await self._start_scaled()
            self.started = True
            return
        # Resume: deliveries that outlived their message while we were down become final;
        # every other pending delivery goes out when its device connects (pending on hello).
        await self.expire()
        self.writer.start()
        self.vendor_dispatcher.start()
        resumed = await self.pushes.vendor_pending()
        self.vendor_dispatcher.submit(resumed)
        if resumed:
            logger.info("resumed %d vendor deliveries", len(resumed))
        self.pushes.start()
        await self.scheduler.start()
        self.spawn(self._sweep(), "expiry-sweeper")
        self.gateway_port = await self.gateway.start(
            self.settings.gateway_host, self.settings.gateway_port
        )
        self.started = True

    async def _start_scaled(self) -> None:
        # Each role starts what it runs; nothing is resumed here: the scheduler role's
        # recovery sweep finds deliveries left pending by processes that are gone.
        assert self.cluster is not None
        await self.cluster.start()
        self.writer.start()
        self.pushes.start()
        if self.stream_worker is not None:
            self.vendor_dispatcher.start()
            self.stream_worker.start()
        if "scheduler" in self.roles:
            await self.expire()
            await self.scheduler.start()
            self.spawn(self._sweep(), "expiry-sweeper")
            if self.recovery is not None:
                self.spawn(self.recovery.run(), "recovery-sweeper")
        if self.gateway_node is not None:
            # Subscribed before the first device can connect, or its frames could be missed.
            await self.gateway_node.start()
            self.gateway_port = await self.gateway.start(
                self.settings.gateway_host, self.settings.gateway_port
            )

    async def _stop_scaled(self) -> None:
        # Stop taking work in (devices, stream entries, due jobs), let what is under way end
        # within drain_timeout_s, write every status, then leave Redis and close the store.
        assert self.cluster is not None
        if "scheduler" in self.roles:
            await self.scheduler.stop()
        if self.gateway_node is not None:
            await self.gateway.stop()
            await self.gateway_node.stop()
        await self.pushes.stop()
        if self.stream_worker is not None:
            await self.stream_worker.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.writer.stop()
        await self.cluster.close()
        await self.store.close()
        logger.info(
            "stopped: node=%s roles=%s status changes written=%d",
            self.cluster.node_id,
            ",".join(sorted(self.roles)),
            self.writer.written,
        )

    async def stop(self) -> None:
        if self.cluster is not None:
            self.stopping = True
            await self._stop_scaled()
            return
        # Stop taking device traffic, then write what the devices told us, then close.
        self.stopping = True
        await self.scheduler.stop()
        await self.gateway.stop()
        await self.pushes.stop()
        await self.vendor_dispatcher.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.writer.stop()
        await self.store.close()
        logger.info("stopped: %d status changes written", self.writer.written)

    async def expire(self) -> None:
        """Make expired deliveries final, and count them in ``openmps_deliveries_total``."""
        self.metrics.count_expired(await self.pushes.expire())

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_SWEEP_S)
            try:
                await self.expire()
                await self.reviews.release_approving()
            except Exception:
                logger.exception("expiry sweep failed; trying again in %.0fs", EXPIRY_SWEEP_S)
