"""The running service in one object: the store and every part built on it, started and
stopped in order. Both front doors and the gateway reach the service layer through it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from openmps.analytics import Analytics
from openmps.apps import AppCredentials, KeyRing, count_apps, create_app
from openmps.devices import Devices
from openmps.dispatch import Dispatcher
from openmps.gateway.hub import Hub
from openmps.gateway.server import Gateway
from openmps.metrics import Metrics
from openmps.mps.signature import NonceCache
from openmps.push import BroadcastRequest, Pushes, PushRequest
from openmps.review import Reviews
from openmps.scheduler import Scheduler
from openmps.settings import Settings
from openmps.statuswriter import StatusWriter
from openmps.store import Store
from openmps.templates import Templates
from openmps.vendor_dispatch import VendorDispatcher
from openmps.vendors import VendorSettings

logger = logging.getLogger(__name__)

EXPIRY_SWEEP_S = 1.0


class Runtime:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.keys = KeyRing(store)
        self.nonces = NonceCache(window_s=2 * settings.signature_window_s)
        self.hub = Hub()
        self.vendor_settings = VendorSettings(store)
        self.writer = StatusWriter(
            store,
            flush_interval_s=settings.status_flush_interval_s,
            flush_max=settings.status_flush_max,
        )
        self.vendor_dispatcher = VendorDispatcher(
            self.writer,
            self.vendor_settings.load,
            concurrency=settings.vendor_concurrency,
            max_attempts=settings.vendor_max_attempts,
            backoff_base_s=settings.vendor_backoff_base_s,
            backoff_max_s=settings.vendor_backoff_max_s,
        )
        self.dispatcher = Dispatcher(self.hub, self.vendor_dispatcher)
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
        )
        self._tasks: set[asyncio.Task[Any]] = set()
        self.gateway_port: int | None = None
        self.started = False  # start() finished: intake running, gateway listening
        self.stopping = False  # a stop was asked for (signal or stop()); /readyz answers 503
        self.metrics = Metrics(self)

    @classmethod
    async def open(cls, settings: Settings) -> Runtime:
        store = await Store.open(settings.sqlalchemy_url)
        try:
            return cls(settings, store)
        except Exception:
            await store.close()
            raise

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
        # Resume: deliveries that outlived their message while we were down become final;
        # every other pending delivery goes out when its device connects (pending on hello).
        await self.pushes.expire()
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

    async def stop(self) -> None:
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

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_SWEEP_S)
            try:
                await self.pushes.expire()
                await self.reviews.release_approving()
            except Exception:
                logger.exception("expiry sweep failed; trying again in %.0fs", EXPIRY_SWEEP_S)
