"""Sends deliveries through vendor channels: batching, bounded concurrency, retries, outcomes.

Deliveries wait in one queue per (app, vendor). ``concurrency`` workers take the next ready
queue, send up to the channel's ``max_batch`` in one call, and turn each outcome into a stored
status (through the batched status writer): DONE and final codes end the delivery; RETRY sends
again after the vendor's Retry-After or an exponential backoff with full jitter, while the
message is valid and attempts remain; DROP_TOKEN also forgets the device's vendor token.

A delivery waiting for a retry lives only in memory here; its row stays non-final in the
store, so a restart sends it again (``resume``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from openmps.channels.base import ChannelConfig, Next, Outbound, Outcome, VendorChannel
from openmps.channels.registry import channel_class
from openmps.errors import ConfigError
from openmps.metrics import VendorMetrics
from openmps.statuses import ACKED, DEVICE_NOT_ONLINE, NONE, Status
from openmps.statuswriter import StatusWriter

logger = logging.getLogger(__name__)

SETTINGS_CHECK_S = 5.0  # how often a cached channel's stored settings are compared again


@dataclass(frozen=True, slots=True)
class VendorJob:
    app_pk: int
    vendor: str
    device_pk: int
    outbound: Outbound
    attempts: int = 0  # sends made so far
    last: Status = DEVICE_NOT_ONLINE  # the status stored for it now


ConfigLoader = Callable[[int, str], Awaitable[ChannelConfig | None]]
# Scale-out hooks (openmps.scaleout.worker): a guard gets each batch right before it is sent
# and returns the jobs that may still go (the others are dropped, unsent and unrecorded);
# on_record hears of every status handed to the writer, with whether it is final.
SendGuard = Callable[[list[VendorJob]], Awaitable[list[VendorJob]]]
RecordHook = Callable[[VendorJob, bool], None]


class VendorDispatcher:
    def __init__(
        self,
        writer: StatusWriter,
        load_config: ConfigLoader,
        *,
        concurrency: int,
        max_attempts: int,
        backoff_base_s: float,
        backoff_max_s: float,
        guard: SendGuard | None = None,
        on_record: RecordHook | None = None,
    ) -> None:
        if concurrency <= 0:
            raise ConfigError(
                f"vendor_concurrency must be at least 1, got {concurrency}; set "
                "OPENMPS_VENDOR_CONCURRENCY to how many vendor calls may run at once"
            )
        if max_attempts <= 0:
            raise ConfigError(f"vendor_max_attempts must be at least 1, got {max_attempts}")
        self._writer = writer  # where outcomes go
        self._load_config = load_config  # async (app pk, vendor) -> ChannelConfig | None
        self._concurrency = concurrency  # workers, each with at most one call in flight
        self._max_attempts = max_attempts  # sends per delivery before giving up
        self._backoff_base_s = backoff_base_s  # first retry's ceiling
        self._backoff_max_s = backoff_max_s  # largest retry ceiling
        self._waiting: dict[tuple[int, str], deque[VendorJob]] = {}  # per (app, vendor)
        self._ready: asyncio.Queue[tuple[int, str] | None] = asyncio.Queue()  # keys to serve
        self._scheduled: set[tuple[int, str]] = set()  # keys in _ready or being served
        # (app, vendor) -> (channel, the settings it was built from, when they were read)
        self._channels: dict[tuple[int, str], tuple[VendorChannel, ChannelConfig, float]] = {}
        self._workers: list[asyncio.Task[None]] = []
        # Retries waiting for their time, with the job each one will submit again.
        self._timers: dict[asyncio.TimerHandle, VendorJob] = {}
        self._guard = guard  # None: every batch may go
        self._on_record = on_record  # None: nobody is told
        self._in_flight = 0  # batches being sent now
        self._halted = False  # stopping without sending what is queued
        self._closing: set[asyncio.Task[None]] = set()  # replaced channels being closed
        self.sent = 0  # deliveries handed to vendors since start
        self.metrics = VendorMetrics()  # call durations and final outcomes, for /metrics

    def start(self) -> None:
        self._workers = [
            asyncio.create_task(self._work(), name=f"vendor-worker-{i}")
            for i in range(self._concurrency)
        ]

    async def stop(self, *, finish_queued: bool = True) -> tuple[list[VendorJob], list[VendorJob]]:
        """Stop sending; what is waiting for a retry stays pending in the store.

        Batches being sent are finished first, and, with ``finish_queued``, every delivery
        already queued is sent too; without it those are left. Returns the jobs handed back:
        those left queued, and those that were waiting for a retry's time.
        """
        self._halted = not finish_queued
        retrying = list(self._timers.values())
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        for _ in self._workers:
            await self._ready.put(None)
        await asyncio.gather(*self._workers, return_exceptions=True)
        for channel, _, _ in self._channels.values():
            await channel.close()
        queued = [job for queue in self._waiting.values() for job in queue]
        for queue in self._waiting.values():
            queue.clear()
        if queued or retrying:
            logger.info(
                "vendor dispatch stopped: %d deliveries handed back to the store",
                len(queued) + len(retrying),
            )
        return queued, retrying

    @property
    def busy(self) -> bool:
        """True while a delivery is queued or being sent (not counting those waiting for a
        retry's time)."""
        return self._in_flight > 0 or self.queued > 0

    @property
    def queued(self) -> int:
        """Deliveries waiting for a worker (not those waiting for a retry's time)."""
        return sum(len(queue) for queue in self._waiting.values())

    @property
    def retrying(self) -> int:
        """Deliveries waiting for the time of their next attempt."""
        return len(self._timers)

    def forget_channel(self, app_pk: int, vendor: str) -> None:
        """Drop a cached channel so new settings take effect on the next send."""
        cached = self._channels.pop((app_pk, vendor), None)
        if cached is not None:
            task = asyncio.get_running_loop().create_task(cached[0].close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def submit(self, jobs: list[VendorJob]) -> None:
        for job in jobs:
            key = (job.app_pk, job.vendor)
            self._waiting.setdefault(key, deque()).append(job)
            if key not in self._scheduled:
                self._scheduled.add(key)
                self._ready.put_nowait(key)

    async def _work(self) -> None:
        while True:
            key = await self._ready.get()
            if key is None or self._halted:
                return
            queue = self._waiting.get(key)
            if not queue:
                self._scheduled.discard(key)
                continue
            try:
                channel = await self._channel(*key)
            except ConfigError as exc:
                jobs = list(queue)
                queue.clear()
                self._scheduled.discard(key)
                logger.error("vendor %s of app %d is misconfigured: %s", key[1], key[0], exc)
                for job in jobs:
                    self._record(job, NONE, final=True, detail=f"config: {exc}")
                continue
            batch = [queue.popleft() for _ in range(min(len(queue), channel.max_batch))]
            if queue:
                self._ready.put_nowait(key)  # more waiting: another worker may take it
            else:
                self._scheduled.discard(key)
            self._in_flight += 1
            try:
                await self._send(channel, batch)
            finally:
                self._in_flight -= 1

    async def _channel(self, app_pk: int, vendor: str) -> VendorChannel:
        """The app's channel, rebuilt when its stored settings changed (checked every 5 s)."""
        key = (app_pk, vendor)
        cached = self._channels.get(key)
        now = time.monotonic()
        if cached is not None and now - cached[2] < SETTINGS_CHECK_S:
            return cached[0]
        config = await self._load_config(app_pk, vendor)
        if config is None:
            self.forget_channel(app_pk, vendor)
            raise ConfigError(
                f"no {vendor} settings for this app; set them with `openmps channel set`"
            )
        if cached is not None and cached[1] == config:
            self._channels[key] = (cached[0], config, now)
            return cached[0]
        self.forget_channel(app_pk, vendor)
        channel = channel_class(vendor).create(config)
        self._channels[key] = (channel, config, now)
        return channel

    async def _send(self, channel: VendorChannel, batch: list[VendorJob]) -> None:
        now = datetime.now(UTC)
        live = []
        for job in batch:
            if job.outbound.expires_at <= now:
                self._record(job, job.last, final=True, detail="expired")
            else:
                live.append(job)
        if live and self._guard is not None:
            try:
                live = await self._guard(live)
            except Exception:
                # Not known to be ours still: do not send now; try again after a backoff.
                logger.exception("vendor %s: claim check failed for %d", channel.name, len(live))
                for job in live:
                    self._retry(job, None, job.last, "claim check failed")
                return
        if not live:
            return
        started = time.perf_counter()
        try:
            outcomes = await channel.send([job.outbound for job in live])
        except Exception:
            # A bug in a channel: keep the deliveries, try again later like a transport fault.
            logger.exception("vendor %s send failed for %d deliveries", channel.name, len(live))
            for job in live:
                self._retry(replace(job, attempts=job.attempts + 1), None, NONE, "channel error")
            return
        finally:
            elapsed = time.perf_counter() - started
            self.metrics.request_seconds.labels(channel.name).observe(elapsed)
        self.sent += len(live)
        by_id = {o.delivery_id: o for o in outcomes}
        for job in live:
            outcome = by_id.get(job.outbound.delivery_id)
            sent = replace(job, attempts=job.attempts + 1)
            if outcome is None:
                self._retry(sent, None, NONE, "no outcome from the channel")
            else:
                self._apply(sent, outcome)

    def _apply(self, job: VendorJob, outcome: Outcome) -> None:
        raw = outcome.raw
        if outcome.next is Next.DONE:
            self._record(job, ACKED, final=True, detail=None)
        elif outcome.next is Next.RETRY:
            self._retry(job, outcome.retry_after_s, outcome.status, raw)
        else:
            if outcome.next is Next.DROP_TOKEN:
                self._writer.drop_token(job.device_pk, job.outbound.token)
            elif outcome.next is Next.CONFIG:
                logger.error(
                    "vendor %s refused the settings of app #%d: %s %s; fix them with "
                    "`openmps channel set` (delivery %d is final)",
                    job.vendor,
                    job.app_pk,
                    outcome.status.code,
                    outcome.raw,
                    job.outbound.delivery_id,
                )
            self._record(job, outcome.status, final=True, detail=raw)

    def _retry(
        self, job: VendorJob, retry_after_s: float | None, status: Status, raw: str | None
    ) -> None:
        if job.attempts >= self._max_attempts:
            self._record(job, status, final=True, detail=f"gave up after {job.attempts}: {raw}")
            return
        ceiling = min(self._backoff_max_s, self._backoff_base_s * 2 ** (job.attempts - 1))
        delay = max(retry_after_s or 0.0, random.uniform(0, ceiling))
        remaining = (job.outbound.expires_at - datetime.now(UTC)).total_seconds()
        if delay >= remaining:
            self._record(job, status, final=True, detail=f"expired while retrying: {raw}")
            return
        self._record(job, status, final=False, detail=raw)
        job = replace(job, last=status)
        loop = asyncio.get_running_loop()
        timer: asyncio.TimerHandle | None = None

        def due() -> None:
            if timer is not None:
                self._timers.pop(timer, None)
            self.submit([job])

        timer = loop.call_later(delay, due)
        self._timers[timer] = job

    def _record(self, job: VendorJob, status: Status, *, final: bool, detail: str | None) -> None:
        if final:
            self.metrics.deliveries.labels(job.vendor, status.channel.value, str(status.code)).inc()
        self._writer.record(
            job.outbound.delivery_id,
            status_channel=status.channel.value,
            code=status.code,
            final=final,
            detail=detail,
            attempts=job.attempts,
        )
        if self._on_record is not None:
            self._on_record(job, final)
