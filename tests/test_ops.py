"""Operations: /metrics, /readyz, JSON logs and the masking of secrets in logs.

The module runs a server of its own (JSON logs on), so the counters it reads are exact.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import signal
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import uvicorn

from openmps import statuses, vendor_dispatch
from openmps.apps import create_app
from openmps.channels.base import ChannelConfig, Next, Outbound, Outcome, VendorChannel
from openmps.logs import JsonFormatter, Redactor, looks_secret
from openmps.ops import check_store, readiness
from openmps.runtime import Runtime
from openmps.server import _Server
from openmps.settings import Settings, load_settings
from openmps.store import Store
from openmps.vendor_dispatch import VendorDispatcher, VendorJob
from tests.conftest import Server, Tenant, eventually, running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """This module's own server, logging JSON lines."""
    with running_server(tmp_path_factory, env={"OPENMPS_LOG_FORMAT": "json"}) as srv:
        yield srv


async def scrape(server: Server) -> list[str]:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{server.api_url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return response.text.splitlines()


def log_lines(server: Server) -> list[dict[str, Any]]:
    text = (server.data_dir.parent / "server.log").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def test_pushes_accepted_counter(tenant: Tenant) -> None:
    device = await tenant.register("android")
    assert 'openmps_pushes_accepted_total{kind="simple"} 0.0' in await scrape(tenant.server)

    await tenant.push_simple({device.delivery_token: "ops-0001"})

    lines = await scrape(tenant.server)
    assert 'openmps_pushes_accepted_total{kind="simple"} 1.0' in lines
    assert 'openmps_pushes_accepted_total{kind="template"} 0.0' in lines
    assert "openmps_push_intake_queued 0.0" in lines


async def test_connected_devices_gauge(tenant: Tenant) -> None:
    first, second = await tenant.register("android"), await tenant.register("ios")

    async def devices(expected: str) -> None:
        async def shown() -> bool:
            return f"openmps_connected_devices {expected}" in await scrape(tenant.server)

        await eventually(shown)

    async with tenant.device(first):
        await devices("1.0")
        async with tenant.device(second):
            await devices("2.0")
        await devices("1.0")
    await devices("0.0")


async def test_single_process_metrics_have_no_cluster_levels(server: Server) -> None:
    # Redis levels are the scaled-out mode's (tests/test_metrics_scale.py); one process shows
    # exactly these families.
    families = [line.split(" ")[2:] for line in await scrape(server) if line.startswith("# TYPE")]
    assert families == [
        ["openmps_pushes_accepted_total", "counter"],
        ["openmps_connected_devices", "gauge"],
        ["openmps_push_intake_queued", "gauge"],
        ["openmps_vendor_queued", "gauge"],
        ["openmps_vendor_retries_waiting", "gauge"],
        ["openmps_status_changes_written_total", "counter"],
        ["openmps_vendor_request_seconds", "histogram"],
        ["openmps_deliveries_total", "counter"],
        ["process_virtual_memory_bytes", "gauge"],
        ["process_resident_memory_bytes", "gauge"],
        ["process_start_time_seconds", "gauge"],
        ["process_cpu_seconds_total", "counter"],
        ["process_open_fds", "gauge"],
        ["process_max_fds", "gauge"],
    ]


OWN_ACKED = 'openmps_deliveries_total{channel="own",code="2",status_channel="common"}'


def own_acked(lines: list[str]) -> float:
    (value,) = [line.split(" ")[1] for line in lines if line.startswith(OWN_ACKED + " ")]
    return float(value)


async def test_own_channel_acks_are_counted_once_per_delivery(tenant: Tenant) -> None:
    device = await tenant.register("android")
    before = own_acked(await scrape(tenant.server))
    client = tenant.device(device, auto_ack=False)
    await client.connect()
    try:
        await tenant.push_simple({device.delivery_token: "ops-ack-1"})
        message = await asyncio.wait_for(anext(aiter(client)), 10)
        await client.ack(message.id)

        async def counted() -> bool:
            return own_acked(await scrape(tenant.server)) == before + 1

        await eventually(counted)
        # The device acks again (a retry, or the message came twice): not counted again.
        await client.ack(message.id, message.id)
        await asyncio.sleep(0.3)  # the status writer flushes every 50 ms
        lines = await scrape(tenant.server)
    finally:
        await client.close()
    assert f"{OWN_ACKED} {before + 1}" in lines


OWN_EXPIRED = 'openmps_deliveries_total{channel="own",code="0",status_channel="common"}'


def own_expired(lines: list[str]) -> float:
    found = [line.split(" ")[1] for line in lines if line.startswith(OWN_EXPIRED + " ")]
    return float(found[0]) if found else 0.0


async def test_expired_own_channel_deliveries_are_counted(tenant: Tenant) -> None:
    # Two offline devices; their deliveries stay 0 (not online) and expire after 1 s.
    devices = [await tenant.register("android") for _ in range(2)]
    before = own_expired(await scrape(tenant.server))
    targets = {d.delivery_token: f"ops-exp-{n}" for n, d in enumerate(devices)}
    await tenant.push_simple(targets, expired_seconds=1, title="Soon gone")

    async def counted() -> bool:
        return own_expired(await scrape(tenant.server)) == before + 2

    await eventually(counted, timeout_s=10)
    await asyncio.sleep(1.2)  # another sweep ran: nothing counted twice
    assert own_expired(await scrape(tenant.server)) == before + 2


async def test_readyz_when_ready(server: Server) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{server.api_url}/readyz")
        health = await http.get(f"{server.api_url}/healthz")
    assert (response.status_code, response.json()) == (
        200,
        {"status": "ready", "checks": {"runtime": "ok", "store": "ok"}},
    )
    assert (health.status_code, health.json()) == (200, {"status": "ok"})


async def test_ops_endpoints_are_not_in_the_openapi_schema(server: Server) -> None:
    async with httpx.AsyncClient() as http:
        paths = (await http.get(f"{server.api_url}/openapi.json")).json()["paths"]
    assert ("/metrics" in paths, "/readyz" in paths) == (False, False)


async def test_logs_are_json_lines_without_secrets(tenant: Tenant) -> None:
    device = await tenant.register("android")
    async with tenant.device(device):
        pass

    async def disconnect_logged() -> bool:
        return any(e["msg"].startswith("device disconnected") for e in log_lines(tenant.server))

    await eventually(disconnect_logged)
    entries = log_lines(tenant.server)
    for entry in entries:
        assert list(entry)[:4] == ["ts", "level", "logger", "msg"]
        at = datetime.fromisoformat(entry["ts"])
        assert at.tzinfo is not None and at.utcoffset() == timedelta(0)
        assert entry["ts"].endswith("Z")
    listening = [e for e in entries if e["msg"].startswith("server listening on ")]
    assert [(e["level"], e["logger"]) for e in listening] == [("INFO", "websockets.server")]
    text = (tenant.server.data_dir.parent / "server.log").read_text()
    for secret in (device.delivery_token, device.device_secret, tenant.creds.access_key_secret):
        assert secret not in text


# -- readiness, in process ---------------------------------------------------------------------


async def test_readiness_follows_the_runtime(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=None, gateway_port=0)
    runtime = await Runtime.open(settings)
    try:
        assert await readiness(runtime) == (
            503,
            {"status": "not_ready", "checks": {"runtime": "starting", "store": "ok"}},
        )
        await runtime.start()
        assert await readiness(runtime) == (
            200,
            {"status": "ready", "checks": {"runtime": "ok", "store": "ok"}},
        )
    finally:
        await runtime.stop()
    assert await readiness(runtime) == (
        503,
        {"status": "stopping", "checks": {"runtime": "stopping"}},
    )


def test_first_signal_marks_the_runtime_stopping() -> None:
    runtime = SimpleNamespace(stopping=False)
    server = _Server(uvicorn.Config(app=None), runtime)  # type: ignore[arg-type]

    server._stop_on(signal.SIGTERM)

    assert (runtime.stopping, server.should_exit, server.force_exit) == (True, True, False)


async def test_store_check_names_a_store_that_is_gone() -> None:
    # Nothing listens on port 1. (A SQLite file that cannot be opened would do too, but
    # aiosqlite then finishes its worker thread after the test's loop is closed.)
    store = await Store.open("postgresql+asyncpg://openmps@127.0.0.1:1/gone", migrate=False)
    try:
        assert await check_store(store) == "failed: ConnectionRefusedError"
    finally:
        await store.close()


class _HangingEngine:
    @asynccontextmanager
    async def connect(self) -> AsyncIterator[None]:
        await asyncio.sleep(60)
        yield


class _HangingStore:
    engine = _HangingEngine()


async def test_store_check_is_bounded_in_time() -> None:
    answer = await check_store(_HangingStore(), timeout_s=0.05)  # type: ignore[arg-type]
    assert answer == "no answer within 0.05 s"


# -- vendor metrics, in process ----------------------------------------------------------------


class _Writer:
    """Stands in for the status writer: the dispatcher only hands it outcomes."""

    def __init__(self) -> None:
        self.records: list[tuple[int, str, int, bool]] = []

    def record(
        self, delivery_id: int, *, status_channel: str, code: int, final: bool, **_: Any
    ) -> None:
        self.records.append((delivery_id, status_channel, code, final))

    def drop_token(self, device_pk: int, token: str) -> None:
        pass


class _StubFcm(VendorChannel):
    """Accepts delivery 1 and calls the token of delivery 2 dead."""

    name = "fcm"
    max_batch = 10

    @classmethod
    def create(cls, config: ChannelConfig, http: httpx.AsyncClient | None = None) -> VendorChannel:
        return cls()

    async def send(self, batch: Sequence[Outbound]) -> list[Outcome]:
        dead = statuses.get("fcm", 90000003)
        return [
            Outcome(o.delivery_id, statuses.ACKED, Next.DONE)
            if o.delivery_id == 1
            else Outcome(o.delivery_id, dead, Next.DROP_TOKEN, raw="NotRegistered")
            for o in batch
        ]


def _job(delivery_id: int) -> VendorJob:
    outbound = Outbound(
        delivery_id=delivery_id,
        token=f"token-{delivery_id}",
        title="t",
        content="c",
        extras={},
        expires_at=datetime.now(UTC) + timedelta(minutes=5),
        msg_key=f"k{delivery_id}",
        task_id=1,
    )
    return VendorJob(app_pk=1, vendor="fcm", device_pk=delivery_id, outbound=outbound)


async def test_vendor_outcomes_and_call_durations_are_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(vendor_dispatch, "channel_class", lambda vendor: _StubFcm)
    writer = _Writer()

    async def load(app_pk: int, vendor: str) -> ChannelConfig:
        return ChannelConfig(vendor, {})

    dispatcher = VendorDispatcher(
        writer,  # type: ignore[arg-type]
        load,
        concurrency=1,
        max_attempts=3,
        backoff_base_s=1.0,
        backoff_max_s=1.0,
    )
    dispatcher.start()
    dispatcher.submit([_job(1), _job(2)])
    assert dispatcher.queued == 2
    await eventually(_async(lambda: len(writer.records) == 2))
    await dispatcher.stop()

    families = {m.name: m for m in dispatcher.metrics.deliveries.collect()}
    counted = {
        (s.labels["channel"], s.labels["status_channel"], s.labels["code"]): s.value
        for s in families["openmps_deliveries"].samples
    }
    assert counted == {("fcm", "common", "2"): 1.0, ("fcm", "fcm", "90000003"): 1.0}
    samples = {
        s.name: s.value
        for m in dispatcher.metrics.request_seconds.collect()
        for s in m.samples
        if s.labels.get("le") in (None, "+Inf")
    }
    assert (samples["openmps_vendor_request_seconds_count"], dispatcher.queued) == (1.0, 0)


def _async(check: Any) -> Any:
    async def run() -> bool:
        return bool(check())

    return run


# -- log masking -------------------------------------------------------------------------------


@pytest.fixture
def json_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing through the serve handler's filter and JSON formatter into a buffer."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(Redactor())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("openmps.test_ops")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger, out
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


def entries(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


async def test_secrets_in_log_records_are_masked(
    tenant: Tenant, tmp_path: Path, json_log: tuple[logging.Logger, io.StringIO]
) -> None:
    logger, out = json_log
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'openmps.db'}")
    try:
        app = await create_app(store, "masking")
    finally:
        await store.close()
    device = await tenant.register("android")
    token, device_secret, key_secret = (
        device.delivery_token,
        device.device_secret,
        app.access_key_secret,
    )

    logger.info("hello: token=%s secret=%s", token, device_secret)
    logger.info("key %s: AccessKeySecret=%s", app.access_key_id, key_secret)
    logger.info('{"access_key_secret": "%s"}', key_secret)
    logger.warning("write failed: [parameters: ('%s', 7)]", token)
    logger.info("registered", extra={"device_token": token, "platform": "android"})
    try:
        raise ValueError(f"unknown delivery token {token}")
    except ValueError:
        logger.exception("hello refused")

    got = entries(out)
    assert [e["msg"] for e in got] == [
        f"hello: token=…{token[-4:]} secret=…{device_secret[-4:]}",
        f"key {app.access_key_id}: AccessKeySecret=…{key_secret[-4:]}",
        f'{{"access_key_secret": "…{key_secret[-4:]}"}}',
        f"write failed: [parameters: ('…{token[-4:]}', 7)]",
        "registered",
        "hello refused",
    ]
    assert (got[4]["device_token"], got[4]["platform"]) == (f"…{token[-4:]}", "android")
    assert got[5]["exc"].endswith(f"ValueError: unknown delivery token …{token[-4:]}")
    for secret in (token, device_secret, key_secret):
        assert secret not in out.getvalue()


def test_names_and_numbers_are_not_masked(json_log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = json_log
    message = (
        "apns: DeviceTokenNotForTopic for task=1234567890123456789012 via "
        "ConnectionRefusedError in push_intake_loop_of_the_writer (OPENMPS_VENDOR_CONCURRENCY) "
        "key LTAIabcdefghij0123456789; provider token expired early"
    )
    logger.info(message)
    assert entries(out)[0]["msg"] == message
    assert (looks_secret("ExpiredProviderToken"), looks_secret("0123456789abcdef" * 4)) == (
        False,
        True,
    )


def test_log_settings() -> None:
    settings = load_settings(log_format="JSON", log_level="Warning")
    assert (settings.log_format, settings.log_level) == ("json", "warning")
    assert (Settings().log_format, Settings().log_level) == ("text", "info")
    with pytest.raises(ValueError) as caught:
        load_settings(log_format="xml")
    assert str(caught.value) == (
        "log_format (--log-format / OPENMPS_LOG_FORMAT): Input should be 'text' or 'json', "
        "got 'xml'"
    )


def test_schedule_job_ids_stay_searchable_while_random_words_are_masked() -> None:
    from openmps.logs import redact

    job, other = "d5f75870127d4421a072a5065f4a3309", "14ca97e6b38149b9ad7958ed6a290d2b"
    assert redact(f"scheduled push fired: job={job} task=3") == (
        f"scheduled push fired: job={job} task=3"
    )
    assert redact(f"cancelled: ids={job},{other} jobs=2") == f"cancelled: ids={job},{other} jobs=2"
    # The same shape anywhere else is masked: it could be a vendor token.
    assert redact(f"token {job} seen") == "token …3309 seen"
    # Regression (trial): a 500 answer names its RequestId, which the log masked.
    request = "B589F4F4-CD68-3CE5-BDA0-6597F33E2391"
    assert redact(f"mps PushSimple failed: request={request}") == (
        f"mps PushSimple failed: request={request}"
    )
