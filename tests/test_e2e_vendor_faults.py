"""Vendor faults end to end: retries with backoff, Retry-After, giving up, tokens kept on
message errors, and vendor deliveries that survive a SIGKILL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from alibabacloud_mpaas20201028 import models

from openmps.fakes.fcm import FakeFCM
from openmps.fakes.oppo import FakeOPPO
from openmps.fakes.vivo import FakeVivo
from tests.conftest import Server, Tenant, eventually, running_server
from tests.test_e2e_push import task_rows
from tests.test_e2e_vendors import FakeHost, Vendor, push_to, use_vendor, vendor_device


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"OPENMPS_VENDOR_BACKOFF_BASE_S": "0.2", "OPENMPS_VENDOR_MAX_ATTEMPTS": "3"}
    with running_server(tmp_path_factory, env) as srv:
        yield srv


@pytest.fixture(scope="module")
def vendors() -> Iterator[dict[str, Vendor]]:
    host = FakeHost()
    oppo = FakeOPPO(app_key="oppo-key-f", master_secret="oppo-master-f")
    vivo = FakeVivo(app_id=10004, app_key="vivo-key-f", app_secret="vivo-secret-f")
    fcm = FakeFCM()
    for fake in (oppo, vivo, fcm):
        host.run(fake.start())
    account, _ = fcm.new_service_account("openmps-faults")

    yield {
        "oppo": Vendor(
            "oppo",
            oppo,
            {"app_key": "oppo-key-f", "master_secret": "oppo-master-f"},
            oppo.base_url,
            lambda n: f"CN_fault{n:012d}",
        ),
        "vivo": Vendor(
            "vivo",
            vivo,
            {"app_id": "10004", "app_key": "vivo-key-f", "app_secret": "vivo-secret-f"},
            vivo.base_url,
            lambda n: f"{n + 5 * 10**9:023d}",
        ),
        "fcm": Vendor(
            "fcm",
            fcm,
            {"service_account": json.dumps(account)},
            fcm.url,
            lambda n: f"fcm-fault-token-{n:012d}",
        ),
    }
    for fake in (oppo, vivo, fcm):
        host.run(fake.stop())
    host.close()


def sends_to(vendor: Vendor, token: str) -> list[Any]:
    return [
        item
        for item in list(vendor.fake.received.items)
        if token in item.path or token in str(item.body)
    ]


async def final_row(tenant: Tenant, task_id: str, timeout_s: float = 15) -> dict[str, Any]:
    row: dict[str, Any] = {}

    async def final() -> bool:
        nonlocal row
        [row] = await task_rows(tenant, task_id)
        return bool(row["final"])

    await eventually(final, timeout_s=timeout_s)
    return row


async def test_retriable_answers_are_retried_until_accepted(
    tenant: Tenant, vendors: dict[str, Vendor]
) -> None:
    vendor = vendors["oppo"]
    await use_vendor(tenant, vendor)
    device, token = await vendor_device(tenant, vendor)
    flow_control = FakeOPPO.error(-2)
    flow_control.times = 2
    vendor.scenario.set(flow_control, token=token)
    row = await final_row(tenant, await push_to(tenant, {device: "k-retry"}))
    assert (row["channel"], row["status_channel"], row["status_code"]) == ("oppo", "common", 2)
    assert len(sends_to(vendor, token)) == 3


async def test_giving_up_after_the_last_attempt_keeps_the_vendor_code(
    tenant: Tenant, vendors: dict[str, Vendor]
) -> None:
    vendor = vendors["oppo"]
    await use_vendor(tenant, vendor)
    device, token = await vendor_device(tenant, vendor)
    vendor.scenario.set(FakeOPPO.error(-1), token=token)
    row = await final_row(tenant, await push_to(tenant, {device: "k-give-up"}))
    assert (row["status_channel"], row["status_code"], row["status_name"]) == (
        "oppo",
        -1,
        "Service Currently Unavailable",
    )
    assert row["detail"].startswith("gave up after 3: ")
    assert len(sends_to(vendor, token)) == 3


async def test_retry_after_is_honoured(tenant: Tenant, vendors: dict[str, Vendor]) -> None:
    vendor = vendors["fcm"]
    await use_vendor(tenant, vendor)
    device, token = await vendor_device(tenant, vendor)
    vendor.scenario.set(FakeFCM.error("QUOTA_EXCEEDED", retry_after=2, times=1), token=token)
    row = await final_row(tenant, await push_to(tenant, {device: "k-wait"}))
    assert (row["status_channel"], row["status_code"]) == ("common", 2)
    first, second = sends_to(vendor, token)
    assert second.at - first.at >= 2.0  # the backoff alone would have waited at most 0.2 s


async def test_a_message_error_is_final_and_keeps_the_token(
    tenant: Tenant, vendors: dict[str, Vendor]
) -> None:
    vendor = vendors["vivo"]
    await use_vendor(tenant, vendor)
    device, token = await vendor_device(tenant, vendor)
    vendor.scenario.set(FakeVivo.error(10104), token=token)  # content rules: a message error
    row = await final_row(tenant, await push_to(tenant, {device: "k-content"}))
    assert (row["status_channel"], row["status_code"]) == ("vivo", 10104)
    state = await tenant.sdk().push_query_device_state_async(
        models.PushQueryDeviceStateRequest(
            app_id=tenant.app_id, workspace_id=tenant.workspace_id, target=device, target_type=1
        )
    )
    assert state.body.data.third_token == token
    assert len(sends_to(vendor, token)) == 1


async def test_a_vendor_delivery_waiting_for_a_retry_survives_sigkill(
    server: Server, tenant: Tenant, vendors: dict[str, Vendor]
) -> None:
    vendor = vendors["fcm"]
    await use_vendor(tenant, vendor)
    device, token = await vendor_device(tenant, vendor)
    vendor.scenario.set(FakeFCM.error("QUOTA_EXCEEDED", retry_after=600, times=1), token=token)
    task_id = await push_to(tenant, {device: "k-durable"})

    async def waiting() -> bool:
        [row] = await task_rows(tenant, task_id)
        return (row["status_code"], row["final"]) != (0, False)

    await eventually(waiting)
    [row] = await task_rows(tenant, task_id)
    assert row["final"] is False  # ten minutes to wait, within the hour of validity
    await asyncio.to_thread(server.kill)
    await asyncio.to_thread(server.start)
    row = await final_row(tenant, task_id)
    assert (row["channel"], row["status_channel"], row["status_code"]) == ("fcm", "common", 2)
    assert len(sends_to(vendor, token)) == 2
