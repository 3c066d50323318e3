"""Analytics end to end through the official SDK (docs/analytics.md): devices receive pushes,
ack, open, ignore or stay offline; the four analytics actions and the REST endpoints report
exactly what happened."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from alibabacloud_mpaas20201028 import models
from sqlalchemy import select, update

from openmps.client import DeviceClient, DeviceCredentials, PushMessage
from openmps.fakes.xiaomi import FakeXiaomi
from openmps.store import Schedule, Store, Task
from tests.conftest import Server, Tenant, eventually, new_tenant, running_server
from tests.test_e2e_vendors import FakeHost, Vendor, push_to, use_vendor, vendor_device

DAY_MS = 86_400_000
# Analytics count whole days of the schedule_time_zone setting: one far from UTC, with DST.
ZONE = "America/New_York"
ZERO = {
    "PushTotalNum": 0.0,
    "PushNum": 0.0,
    "ArrivalNum": 0.0,
    "ArrivalRate": 0.0,
    "OpenNum": 0.0,
    "OpenRate": 0.0,
    "IgnoreNum": 0.0,
    "IgnoreRate": 0.0,
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory, {"OPENMPS_SCHEDULE_TIME_ZONE": ZONE}) as srv:
        yield srv


def now_ms() -> int:
    return int(time.time() * 1000)


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def today() -> tuple[int, int]:
    """The first and the last ms of today in ZONE (23 or 25 hours long on a DST change)."""
    midnight = datetime.now(ZoneInfo(ZONE)).replace(hour=0, minute=0, second=0, microsecond=0)
    return ms(midnight), ms(midnight + timedelta(days=1)) - 1


def window() -> dict[str, int]:
    """A window around today (whatever the time of day the test runs at)."""
    now = now_ms()
    return {"start_time": now - DAY_MS, "end_time": now + DAY_MS}


def index(
    total: int, success: int, arrivals: int, opens: int, ignores: int, rates: tuple[float, ...]
) -> dict[str, float]:
    arrival_rate, open_rate, ignore_rate = rates
    return {
        "PushTotalNum": float(total),
        "PushNum": float(success),
        "ArrivalNum": float(arrivals),
        "ArrivalRate": arrival_rate,
        "OpenNum": float(opens),
        "OpenRate": open_rate,
        "IgnoreNum": float(ignores),
        "IgnoreRate": ignore_rate,
    }


async def core_index(
    tenant: Tenant, **fields: Any
) -> models.QueryPushAnalysisCoreIndexResponseBody:
    response = await tenant.sdk().query_push_analysis_core_index_async(
        models.QueryPushAnalysisCoreIndexRequest(
            app_id=tenant.app_id, workspace_id=tenant.workspace_id, **fields
        )
    )
    body: models.QueryPushAnalysisCoreIndexResponseBody = response.body
    return body


async def core_data(tenant: Tenant, **fields: Any) -> dict[str, Any]:
    """QueryPushAnalysisCoreIndex's Data over today's window unless given; checks it is OK."""
    body = await core_index(tenant, **{**window(), **fields})
    assert (body.result_code, body.result_message) == ("OK", ""), body.to_map()
    data: dict[str, Any] = body.result_content.data.to_map()
    assert all(type(value) is float for value in data.values()), data
    return data


async def refusal(tenant: Tenant, **fields: Any) -> tuple[str, str]:
    body = await core_index(tenant, **fields)
    assert body.result_content is None
    return body.result_code, body.result_message


async def detail(tenant: Tenant, task_id: str) -> models.QueryPushAnalysisTaskDetailResponseBody:
    response = await tenant.sdk().query_push_analysis_task_detail_async(
        models.QueryPushAnalysisTaskDetailRequest(
            app_id=tenant.app_id, workspace_id=tenant.workspace_id, task_id=task_id
        )
    )
    body: models.QueryPushAnalysisTaskDetailResponseBody = response.body
    return body


async def task_list(tenant: Tenant, **fields: Any) -> list[dict[str, Any]]:
    response = await tenant.sdk().query_push_analysis_task_list_async(
        models.QueryPushAnalysisTaskListRequest(
            app_id=tenant.app_id, workspace_id=tenant.workspace_id, **fields
        )
    )
    body = response.body
    assert (body.result_code, body.result_message) == ("OK", ""), body.to_map()
    data: list[dict[str, Any]] = body.to_map()["ResultContent"]["Data"]
    return data


async def rest_get(tenant: Tenant, path: str, **params: Any) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.get(
            f"{tenant.server.api_url}{path}",
            params=params,
            auth=(tenant.creds.access_key_id, tenant.creds.access_key_secret),
        )


async def settle(tenant: Tenant, expected: dict[str, float], **fields: Any) -> None:
    """Wait until the core index reaches ``expected`` (acks and receipts are batched)."""

    async def reached() -> bool:
        return await core_data(tenant, **fields) == expected

    await eventually(reached, timeout_s=15)


async def next_message(client: DeviceClient) -> PushMessage:
    return await asyncio.wait_for(anext(aiter(client)), 10)


# --- the own channel: one tenant, six devices -------------------------------------------------


@dataclass
class OwnChannel:
    """What the scenario did: android_task went to five android devices (one opened, one
    ignored, one never acked, one offline), ios_task to one iOS device (opened)."""

    tenant: Tenant
    android_task: str
    ios_task: str
    before_ms: int
    after_ms: int


ALL = index(6, 5, 4, 2, 1, (80.0, 50.0, 25.0))
ANDROID = index(5, 4, 3, 1, 1, (75.0, 33.33, 33.33))
IOS = index(1, 1, 1, 1, 0, (100.0, 100.0, 0.0))


async def _own_channel(server: Server) -> OwnChannel:
    tenant = await new_tenant(server)
    sdk = tenant.sdk()
    android = [await tenant.register("android") for _ in range(5)]
    ios = await tenant.register("ios")
    opener, ignorer, acker, silent, offline = android
    async with contextlib.AsyncExitStack() as stack:
        clients: dict[str, DeviceClient] = {}
        for creds in (opener, ignorer, acker, ios):
            clients[creds.delivery_token] = await stack.enter_async_context(tenant.device(creds))
        # Receives its message but never acks it: pushed successfully, not arrived.
        clients[silent.delivery_token] = await stack.enter_async_context(
            tenant.device(silent, auto_ack=False)
        )
        before_ms = now_ms()
        android_task = await _push(sdk, tenant, android, 1, "a")
        ios_task = await _push(sdk, tenant, [ios], 2, "i")
        after_ms = now_ms()
        got = {t: await next_message(c) for t, c in clients.items()}
        await clients[opener.delivery_token].opened(got[opener.delivery_token].id)
        await clients[ignorer.delivery_token].ignored(got[ignorer.delivery_token].id)
        await clients[ios.delivery_token].opened(got[ios.delivery_token].id)
        await settle(tenant, ALL)
    assert offline.delivery_token not in clients
    return OwnChannel(tenant, android_task, ios_task, before_ms, after_ms)


async def _push(
    sdk: Any, tenant: Tenant, devices: list[DeviceCredentials], delivery_type: int, prefix: str
) -> str:
    response = await sdk.push_simple_async(
        models.PushSimpleRequest(
            app_id=tenant.app_id,
            workspace_id=tenant.workspace_id,
            delivery_type=delivery_type,
            expired_seconds=600,
            title="Hello",
            content="Analytics",
            task_name=f"simple-{prefix}",
            target_msgkey=json.dumps(
                {d.delivery_token: f"{prefix}-{n}" for n, d in enumerate(devices)}
            ),
        )
    )
    assert response.body.result_code == "OK", response.body.to_map()
    task_id: str = response.body.push_result.data
    return task_id


@pytest.fixture(scope="module")
def own(server: Server) -> Iterator[OwnChannel]:
    yield asyncio.run(_own_channel(server))


async def test_core_index_counts_and_rates(own: OwnChannel) -> None:
    assert await core_data(own.tenant) == ALL


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"platform": "ANDROID"}, ANDROID),
        ({"platform": "android"}, ANDROID),
        ({"platform": "IOS"}, IOS),
        ({"platform": "HARMONYOS"}, ZERO),
        ({"channel": "ANDROID"}, ALL),
        ({"channel": "IOS"}, ZERO),
        ({"channel": "MIUI"}, ZERO),
        ({"type": "SIMPLE"}, ALL),
        ({"type": "MULTIPLE"}, ZERO),
        ({"type": "TEMPLATE"}, ZERO),
        ({"task_id": "android"}, ANDROID),
        ({"task_id": "ios"}, IOS),
        ({"task_id": "ios", "platform": "ANDROID"}, ZERO),
        ({"task_id": "999999999"}, ZERO),
    ],
)
async def test_core_index_filters(
    own: OwnChannel, filters: dict[str, str], expected: dict[str, float]
) -> None:
    if "task_id" in filters:
        names = {"android": own.android_task, "ios": own.ios_task}
        filters = {**filters, "task_id": names.get(filters["task_id"], filters["task_id"])}
    assert await core_data(own.tenant, **filters) == expected


async def test_list_core_index_gives_strings(own: OwnChannel) -> None:
    sdk = own.tenant.sdk()
    answers = []
    for platform in (None, "ANDROID"):
        response = await sdk.list_analysis_core_index_async(
            models.ListAnalysisCoreIndexRequest(
                app_id=own.tenant.app_id,
                workspace_id=own.tenant.workspace_id,
                platform=platform,
                **window(),
            )
        )
        body = response.body
        assert (body.success, body.result_code, body.result_message) == (True, "OK", "")
        assert (body.result_content.success, body.result_content.result_msg) == (True, "")
        answers.append(body.result_content.data.to_map())
    assert answers == [
        {
            "PushTotalNum": "6",
            "PushNum": "5",
            "ArrivalNum": "4",
            "ArrivalRate": "80",
            "OpenNum": "2",
            "OpenRate": "50",
            "IgnoreNum": "1",
            "IgnoreRate": "25",
        },
        {
            "PushTotalNum": "5",
            "PushNum": "4",
            "ArrivalNum": "3",
            "ArrivalRate": "75",
            "OpenNum": "1",
            "OpenRate": "33.33",
            "IgnoreNum": "1",
            "IgnoreRate": "33.33",
        },
    ]


async def test_window_counts_whole_days_by_task_creation(own: OwnChannel) -> None:
    # The last ms of today (in ZONE), as start and end: the day holds every task of today;
    # so does its first ms.
    first, last = today()
    assert await core_data(own.tenant, start_time=last, end_time=last) == ALL
    assert await core_data(own.tenant, start_time=first, end_time=first) == ALL
    # Exactly 90 days, ending now.
    now = now_ms()
    assert await core_data(own.tenant, start_time=now - 90 * DAY_MS, end_time=now) == ALL
    # The days before today, up to its last ms: nothing was created then.
    assert await core_data(own.tenant, start_time=first - 3 * DAY_MS, end_time=first - 1) == ZERO


async def test_window_refusals(own: OwnChannel) -> None:
    tenant, now = own.tenant, now_ms()
    assert await refusal(tenant, end_time=now) == (
        "3028",
        "INVALID_PARAM: StartTime is required",
    )
    assert await refusal(tenant, start_time=now) == ("3028", "INVALID_PARAM: EndTime is required")
    assert await refusal(tenant, start_time=now, end_time=now - 1) == (
        "3028",
        f"INVALID_PARAM: EndTime ({now - 1}) is before StartTime ({now})",
    )
    assert await refusal(tenant, start_time=now - 90 * DAY_MS - 1, end_time=now) == (
        "3028",
        "INVALID_PARAM: EndTime - StartTime must be at most 90 days (7776000000 ms), "
        "got 7776000001 ms",
    )
    assert await refusal(tenant, start_time=now - 91 * DAY_MS, end_time=now) == (
        "3028",
        "INVALID_PARAM: EndTime - StartTime must be at most 90 days (7776000000 ms), "
        "got 7862400000 ms",
    )
    assert await refusal(tenant, platform="WINDOWS", **window()) == (
        "3028",
        "INVALID_PARAM: Platform must be one of IOS, ANDROID, HARMONYOS, got 'WINDOWS'",
    )
    assert await refusal(tenant, channel="APNS", **window()) == (
        "3028",
        "INVALID_PARAM: Channel must be one of ANDROID, IOS, FCM, HMS, MIUI, OPPO, VIVO, "
        "HARMONYOS, got 'APNS'",
    )
    assert await refusal(tenant, type="CYCLIC", **window()) == (
        "3028",
        "INVALID_PARAM: Type must be one of SIMPLE, TEMPLATE, MULTIPLE, BROADCAST, got 'CYCLIC'",
    )
    assert await refusal(tenant, task_id="t-1", **window()) == (
        "3028",
        "INVALID_PARAM: TaskId must be a task id (digits), got 't-1'",
    )


async def test_list_core_index_refusal_envelope(own: OwnChannel) -> None:
    response = await own.tenant.sdk().list_analysis_core_index_async(
        models.ListAnalysisCoreIndexRequest(
            app_id=own.tenant.app_id, workspace_id=own.tenant.workspace_id, end_time=now_ms()
        )
    )
    assert response.body.to_map() == {
        "RequestId": response.body.request_id,
        "Success": False,
        "ResultCode": "3028",
        "ResultMessage": "INVALID_PARAM: StartTime is required",
        "ResultContent": {"Success": False, "ResultMsg": "StartTime is required"},
    }


async def test_task_detail(own: OwnChannel) -> None:
    body = await detail(own.tenant, own.android_task)
    assert (body.result_code, body.result_message) == ("OK", "")
    data = body.result_content.data
    assert (data.task_id, data.push_num, data.push_success_num, data.push_arrival_num) == (
        int(own.android_task),
        5.0,
        4.0,
        3.0,
    )
    assert type(data.task_id) is int and type(data.push_num) is float
    assert own.before_ms <= data.start_time <= own.after_ms
    # The end: the last of its messages written to a device, after the push and before now.
    assert data.start_time <= data.end_time <= now_ms()
    assert Decimal(data.duration) * 1000 == data.end_time - data.start_time

    ios = (await detail(own.tenant, own.ios_task)).result_content.data
    assert (ios.push_num, ios.push_success_num, ios.push_arrival_num) == (1.0, 1.0, 1.0)


async def test_task_detail_refusals(own: OwnChannel, tenant: Tenant) -> None:
    for task_id, message in (
        ("999999999", "INVALID_PARAM: this app has no task 999999999"),
        ("abc", "INVALID_PARAM: TaskId must be a task id (digits), got 'abc'"),
        (None, "INVALID_PARAM: TaskId is required"),
    ):
        body = await detail(own.tenant, task_id)  # type: ignore[arg-type]
        assert (body.result_code, body.result_message, body.result_content) == (
            "3028",
            message,
            None,
        )
    # Another app's task is unknown to this app.
    body = await detail(tenant, own.android_task)
    assert (body.result_code, body.result_message) == (
        "3028",
        f"INVALID_PARAM: this app has no task {own.android_task}",
    )


async def test_another_app_sees_none_of_it(own: OwnChannel, tenant: Tenant) -> None:
    assert await core_data(tenant) == ZERO
    assert await core_data(tenant, task_id=own.android_task) == ZERO


async def test_rest_core_and_detail(own: OwnChannel, tenant: Tenant) -> None:
    first, last = today()
    response = await rest_get(
        own.tenant, "/v1/analytics/core", start=last, end=last, platform="android"
    )
    assert response.status_code == 200
    assert response.json() == {
        "start": first,
        "end": last,
        "push_total": 5,
        "push_success": 4,
        "arrivals": 3,
        "opens": 1,
        "ignores": 1,
        "arrival_rate": 75.0,
        "open_rate": 33.33,
        "ignore_rate": 33.33,
    }
    response = await rest_get(own.tenant, f"/v1/analytics/tasks/{own.ios_task}")
    assert response.status_code == 200
    body = response.json()
    assert body == {
        "task_id": own.ios_task,
        "type": "SIMPLE",
        "start": body["start"],
        "end": body["end"],
        "duration_ms": body["end"] - body["start"],
        "push_total": 1,
        "push_success": 1,
        "arrivals": 1,
        "opens": 1,
        "ignores": 0,
        "arrival_rate": 100.0,
        "open_rate": 100.0,
        "ignore_rate": 0.0,
    }
    assert own.before_ms <= body["start"] <= own.after_ms

    missing = await rest_get(tenant, f"/v1/analytics/tasks/{own.ios_task}")
    assert (missing.status_code, missing.json()) == (
        404,
        {"error": "unknown_task", "message": f"this app has no task {own.ios_task!r}"},
    )
    for params, message in (
        ({"end": last}, "start is required"),
        ({"start": last, "end": last - 1}, f"end ({last - 1}) is before start ({last})"),
        ({"start": last, "end": last, "channel": "x"}, None),
    ):
        refused = await rest_get(own.tenant, "/v1/analytics/core", **params)
        assert refused.status_code == 400
        assert refused.json()["error"] == "invalid_param"
        if message is not None:
            assert refused.json()["message"] == message


# --- vendor channels --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def xiaomi() -> Iterator[Vendor]:
    host = FakeHost()
    fake = FakeXiaomi(apps={"mi-secret-analytics": "com.example.app"})
    host.run(fake.start())
    yield Vendor(
        "xiaomi",
        fake,
        {"app_secret": "mi-secret-analytics", "package_name": "com.example.app"},
        fake.url,
        lambda n: f"mi-regid-a{n:07d}",
    )
    host.run(fake.stop())
    host.close()


async def test_vendor_acceptance_counts_as_arrival(tenant: Tenant, xiaomi: Vendor) -> None:
    await use_vendor(tenant, xiaomi)
    accepted, _ = await vendor_device(tenant, xiaomi)
    dead, dead_token = await vendor_device(tenant, xiaomi)
    xiaomi.scenario.set(FakeXiaomi.error(20301), token=dead_token)  # a final refusal
    task_id = await push_to(tenant, {accepted: "v-ok", dead: "v-dead"})

    vendor_only = index(2, 1, 1, 0, 0, (100.0, 0.0, 0.0))
    await settle(tenant, vendor_only)
    assert await core_data(tenant, channel="MIUI") == vendor_only
    assert await core_data(tenant, channel="ANDROID") == ZERO
    assert await core_data(tenant, platform="ANDROID", task_id=task_id) == vendor_only
    data = (await detail(tenant, task_id)).result_content.data
    assert (data.push_num, data.push_success_num, data.push_arrival_num) == (2.0, 1.0, 1.0)


# --- review -----------------------------------------------------------------------------------


async def rest_call(tenant: Tenant, method: str, path: str, body: Any = None) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.request(
            method,
            f"{tenant.server.api_url}{path}",
            json=body,
            auth=(tenant.creds.access_key_id, tenant.creds.access_key_secret),
        )


async def test_held_and_rejected_pushes_are_not_counted(tenant: Tenant) -> None:
    creds = await tenant.register("android")
    rule = await rest_call(tenant, "PUT", "/v1/review/rule", {"rule": "all"})
    assert rule.status_code == 200, rule.text
    held = await _push(tenant.sdk(), tenant, [creds], 1, "held")
    rejected = await _push(tenant.sdk(), tenant, [creds], 1, "rejected")
    refused = await rest_call(tenant, "POST", f"/v1/tasks/{rejected}/reject")
    assert refused.status_code == 200, refused.text
    assert await core_data(tenant) == ZERO
    data = (await detail(tenant, held)).result_content.data
    assert (data.push_num, data.push_success_num, data.push_arrival_num) == (0.0, 0.0, 0.0)


# --- the task list ----------------------------------------------------------------------------


async def test_task_list_covers_batch_tasks(tenant: Tenant) -> None:
    sdk = tenant.sdk()
    devices = [await tenant.register("android") for _ in range(2)]
    created = await sdk.create_template_async(
        models.CreateTemplateRequest(
            app_id=tenant.app_id,
            workspace_id=tenant.workspace_id,
            template_name="promo",
            title="Hi #name#",
            content="Your code is #code#",
        )
    )
    assert created.body.success is True, created.body.to_map()
    template_id = str(created.body.data)

    async def multiple(name: str, prefix: str) -> str:
        response = await sdk.push_multiple_async(
            models.PushMultipleRequest(
                app_id=tenant.app_id,
                workspace_id=tenant.workspace_id,
                delivery_type=1,
                expired_seconds=600,
                task_name=name,
                template_name="promo",
                target_msg=[
                    models.PushMultipleRequestTargetMsg(
                        target=d.delivery_token,
                        msg_key=f"{prefix}-{n}",
                        template_key_value=json.dumps({"name": f"n{n}", "code": str(n)}),
                    )
                    for n, d in enumerate(devices)
                ],
            )
        )
        assert response.body.result_code == "OK", response.body.to_map()
        task_id: str = response.body.push_result.data
        return task_id

    before = now_ms()
    first = await multiple("Spring sale", "m1")
    simple = await _push(sdk, tenant, devices[:1], 1, "s")  # not a batch task: not listed
    second = await multiple("Summer sale", "m2")
    after = now_ms()

    start = now_ms() - DAY_MS
    listed = await task_list(tenant, start_time=start)
    assert [item["TaskId"] for item in listed] == [second, first]
    assert simple not in {item["TaskId"] for item in listed}
    assert listed[0] == {
        "TaskId": second,
        "TaskName": "Summer sale",
        "TemplateId": template_id,
        "TemplateName": "promo",
        "Type": 2,
        "GmtCreate": listed[0]["GmtCreate"],
        "List": [],
    }
    assert before <= listed[1]["GmtCreate"] <= listed[0]["GmtCreate"] <= after

    assert [i["TaskId"] for i in await task_list(tenant, start_time=start, task_id=first)] == [
        first
    ]
    named = await task_list(tenant, start_time=start, task_name="SUMMER")
    assert [item["TaskId"] for item in named] == [second]
    paged = await task_list(tenant, start_time=start, page_number=2, page_size=1)
    assert [item["TaskId"] for item in paged] == [first]
    assert await task_list(tenant, start_time=start, page_number=3, page_size=1) == []
    assert await task_list(tenant, start_time=now_ms() + DAY_MS) == []

    # The counts of a batch type; the devices are offline: pushed to, nothing else.
    assert await core_data(tenant, type="MULTIPLE") == index(4, 0, 0, 0, 0, (0.0, 0.0, 0.0))
    assert await core_data(tenant, type="SIMPLE") == index(1, 0, 0, 0, 0, (0.0, 0.0, 0.0))

    rest = await rest_get(tenant, "/v1/analytics/tasks", start=start, page_size=1)
    assert rest.status_code == 200
    assert rest.json() == {
        "tasks": [
            {
                "task_id": second,
                "task_name": "Summer sale",
                "template_id": template_id,
                "template_name": "promo",
                "type": "MULTIPLE",
                "created_at": listed[0]["GmtCreate"],
                "fired": [],
            }
        ]
    }


async def test_task_list_refusals(tenant: Tenant) -> None:
    sdk = tenant.sdk()
    for fields, message in (
        ({}, "INVALID_PARAM: StartTime is required"),
        (
            {"start_time": 0, "page_size": 501},
            "INVALID_PARAM: PageSize must be from 1 to 500, got 501",
        ),
        (
            {"start_time": 0, "page_number": 0},
            "INVALID_PARAM: PageNumber must be at least 1, got 0",
        ),
    ):
        response = await sdk.query_push_analysis_task_list_async(
            models.QueryPushAnalysisTaskListRequest(
                app_id=tenant.app_id, workspace_id=tenant.workspace_id, **fields
            )
        )
        assert (response.body.result_code, response.body.result_message) == ("3028", message)


async def fire_now(server: Server, unique_id: str) -> int:
    """Make a schedule job due now (we cannot wait for its day) and return the task it fires."""
    store = await Store.open(server.db_url, migrate=False)
    try:
        async with store.write() as session:
            await session.execute(
                update(Schedule)
                .where(Schedule.unique_id == unique_id)
                .values(fire_at=datetime.now(UTC) - timedelta(seconds=1))
            )
        fired: list[int] = []

        async def task_made() -> bool:
            async with store.session() as session:
                fired[:] = (
                    await session.scalars(select(Task.id).where(Task.schedule_id == unique_id))
                ).all()
            return len(fired) == 1

        await eventually(task_made)
    finally:
        await store.close()
    return fired[0]


async def occurrences(server: Server, main_id: str) -> list[str]:
    store = await Store.open(server.db_url, migrate=False)
    try:
        async with store.session() as session:
            rows = await session.scalars(
                select(Schedule.unique_id)
                .where(Schedule.parent_id == main_id, Schedule.unique_id != main_id)
                .order_by(Schedule.fire_at)
            )
            return list(rows.all())
    finally:
        await store.close()


async def test_task_list_groups_the_tasks_of_a_cyclic_push(tenant: Tenant) -> None:
    sdk = tenant.sdk()
    device = await tenant.register("android")
    created = await sdk.create_template_async(
        models.CreateTemplateRequest(
            app_id=tenant.app_id,
            workspace_id=tenant.workspace_id,
            template_name="daily",
            title="Good morning #name#",
            content="Today's deal",
        )
    )
    assert created.body.success is True, created.body.to_map()

    async def multiple(key: str, **strategy: Any) -> str:
        response = await sdk.push_multiple_async(
            models.PushMultipleRequest(
                app_id=tenant.app_id,
                workspace_id=tenant.workspace_id,
                delivery_type=1,
                expired_seconds=600,
                task_name="morning",
                template_name="daily",
                target_msg=[
                    models.PushMultipleRequestTargetMsg(
                        target=device.delivery_token,
                        msg_key=key,
                        template_key_value=json.dumps({"name": "Ann"}),
                    )
                ],
                strategy_type=2 if strategy else None,
                strategy_content=json.dumps(strategy) if strategy else None,
            )
        )
        assert response.body.result_code == "OK", response.body.to_map()
        data: str = response.body.push_result.data
        return data

    tomorrow = (now_ms() // DAY_MS + 1) * DAY_MS
    main_id = await multiple(
        "k-cycle",
        startTime=tomorrow,
        endTime=tomorrow + 3 * DAY_MS,
        circleType=1,
        time="06:00:00",
        timeZone="UTC",
    )
    lone = await multiple("k-lone")
    first, second, *_ = await occurrences(tenant.server, main_id)
    first_task = await fire_now(tenant.server, first)
    second_task = await fire_now(tenant.server, second)

    listed = await task_list(tenant, start_time=now_ms() - DAY_MS)
    assert [(i["TaskId"], [j["TaskId"] for j in i["List"]]) for i in listed] == [
        (str(first_task), [str(second_task)]),
        (lone, []),
    ]
    later = listed[0]["List"][0]
    assert later == {
        "TaskId": str(second_task),
        "TaskName": "morning",
        "TemplateId": listed[0]["TemplateId"],
        "TemplateName": "daily",
        "Type": 2,
        "GmtCreate": later["GmtCreate"],
    }
    assert listed[0]["GmtCreate"] <= later["GmtCreate"]
    # Each fired task is a task of its own for the counts: one delivery each, none sent.
    pushed = index(1, 0, 0, 0, 0, (0.0, 0.0, 0.0))
    assert await core_data(tenant, task_id=str(second_task)) == pushed
