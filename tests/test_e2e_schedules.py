"""Scheduled (StrategyType 1) and cyclic (StrategyType 2) pushes through the official SDK: they are
listed with QueryPushSchedulerList / QueryMpsSchedulerList, fire and reach the device, can be
cancelled, and follow the missed-while-down rule across a restart (docs/scheduling.md).

Some tests restart this module's server (same store and ports); each leaves it running.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from alibabacloud_mpaas20201028 import models
from sqlalchemy import select, update

from openmps.apps import create_app, find_app
from openmps.client import DeviceClient, PushMessage
from openmps.push import PushRequest
from openmps.runtime import Runtime
from openmps.schedule_jobs import request_json
from openmps.schedule_rules import iso_utc
from openmps.settings import Settings
from openmps.store import Schedule, Store, Task
from tests.conftest import TEST_DATABASE_URL, Server, Tenant, _postgres, eventually, new_tenant

DAY_MS = 86_400_000


def now_ms() -> int:
    return int(time.time() * 1000)


def day_start_ms(days_from_today: int) -> int:
    """00:00 UTC of today + ``days_from_today``."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return int((today + timedelta(days=days_from_today)).timestamp() * 1000)


def iso_ms(ms: int) -> str:
    return iso_utc(datetime.fromtimestamp(ms / 1000, UTC))


async def push_simple(
    tenant: Tenant,
    targets: dict[str, str],
    strategy_type: int | None,
    strategy: dict[str, Any] | str | None,
    *,
    expired_seconds: int = 300,
    title: str = "Later",
    content: str = "Scheduled hello",
) -> Any:
    """PushSimple to Android devices; returns the response body."""
    response = await tenant.sdk().push_simple_async(
        models.PushSimpleRequest(
            app_id=tenant.app_id,
            workspace_id=tenant.workspace_id,
            delivery_type=1,
            expired_seconds=expired_seconds,
            title=title,
            content=content,
            task_name="scheduled",
            target_msgkey=json.dumps(targets),
            strategy_type=strategy_type,
            strategy_content=strategy if isinstance(strategy, str) else json.dumps(strategy),
        )
    )
    return response.body


async def schedule(tenant: Tenant, targets: dict[str, str], strategy_type: int, **kw: Any) -> str:
    """A scheduled or cyclic PushSimple that must be accepted; returns the job id."""
    options = {k: kw.pop(k) for k in ("expired_seconds", "title", "content") if k in kw}
    body = await push_simple(tenant, targets, strategy_type, kw, **options)
    assert (body.result_code, body.push_result.success) == ("OK", True), body.push_result.result_msg
    job_id: str = body.push_result.data
    return job_id


async def query(tenant: Tenant, **fields: Any) -> tuple[int, list[dict[str, Any]]]:
    """QueryPushSchedulerList (StartTime and EndTime required); (TotalCount, List)."""
    fields.setdefault("start_time", 0)
    fields.setdefault("end_time", now_ms() + 400 * DAY_MS)
    response = await tenant.sdk().query_push_scheduler_list_async(
        models.QueryPushSchedulerListRequest(
            app_id=tenant.app_id, workspace_id=tenant.workspace_id, **fields
        )
    )
    body = response.body
    assert body.result_code == "OK", body.result_message
    data = body.result_content.data
    return data.total_count, [entry.to_map() for entry in data.list]


async def listed(tenant: Tenant, unique_id: str) -> dict[str, Any]:
    total, items = await query(tenant, unique_id=unique_id)
    assert total == 1
    return items[0]


async def cancel(tenant: Tenant, unique_ids: str) -> Any:
    response = await tenant.sdk().cancel_push_scheduler_async(
        models.CancelPushSchedulerRequest(
            app_id=tenant.app_id, workspace_id=tenant.workspace_id, unique_ids=unique_ids
        )
    )
    return response.body


async def rest_job(tenant: Tenant, unique_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        response = await http.get(
            f"{tenant.server.api_url}/v1/schedules/{unique_id}",
            auth=(tenant.creds.access_key_id, tenant.creds.access_key_secret),
        )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def next_message(device: DeviceClient, timeout_s: float = 10.0) -> PushMessage:
    return await asyncio.wait_for(anext(aiter(device)), timeout_s)


def item(
    job_id: str, parent_id: str, push_time: int, gmt_create: int, **over: Any
) -> dict[str, Any]:
    """A List entry with this test module's usual values."""
    return {
        "UniqueId": job_id,
        "ParentId": parent_id,
        "PushTime": push_time,
        "PushTitle": "Later",
        "PushContent": "Scheduled hello",
        "Type": 0,
        "DeliveryType": 1,
        "StrategyType": 1,
        "ExecutedStatus": "0",
        "GmtCreate": gmt_create,
        "CreateType": 1,
        **over,
    }


async def state_is(tenant: Tenant, job_id: str, status: str) -> bool:
    status_now: str = (await listed(tenant, job_id))["ExecutedStatus"]
    return status_now == status


# --- StrategyType 1 ---------------------------------------------------------------------------


async def test_scheduled_push_is_listed_fires_and_reaches_the_device(tenant: Tenant) -> None:
    creds = await tenant.register("android")
    token = creds.delivery_token
    async with tenant.device(creds) as device:
        before = now_ms()
        fire_at = before + 2000
        job_id = await schedule(tenant, {token: "k-once"}, 1, fixedTime=fire_at)
        after = now_ms()
        assert len(job_id) == 32 and int(job_id, 16) >= 0

        entry = await listed(tenant, job_id)
        assert before <= entry["GmtCreate"] <= after
        assert entry == item(job_id, job_id, fire_at, entry["GmtCreate"])
        total, items = await query(tenant, start_time=fire_at, end_time=fire_at)
        assert (total, [i["UniqueId"] for i in items]) == (1, [job_id])
        assert await query(tenant, start_time=fire_at + 1, end_time=fire_at + 9999) == (0, [])

        message = await next_message(device)
        received = now_ms()
        assert received >= fire_at
        assert (message.msg_key, message.title, message.content) == (
            "k-once",
            "Later",
            "Scheduled hello",
        )

    await eventually(lambda: state_is(tenant, job_id, "1"))
    assert await listed(tenant, job_id) == item(
        job_id, job_id, fire_at, entry["GmtCreate"], ExecutedStatus="1"
    )
    job = await rest_job(tenant, job_id)
    assert (job["state"], job["task_id"], job["detail"], job["strategy_type"]) == (
        "executed",
        message.task_id,
        None,
        1,
    )
    assert job["fire_at"] == datetime.fromtimestamp(fire_at / 1000, UTC).isoformat(
        timespec="milliseconds"
    ).replace("+00:00", "Z")


async def test_refused_at_fire_time_is_failed(tenant: Tenant) -> None:
    creds = await tenant.register("android")
    token = creds.delivery_token
    job_id = await schedule(tenant, {token: "k-taken"}, 1, fixedTime=now_ms() + 1500)
    # The msgKey is used by another push before the job fires.
    body = await push_simple(tenant, {token: "k-taken"}, None, None, title="Now")
    assert body.result_code == "OK"

    await eventually(lambda: state_is(tenant, job_id, "4"))
    job = await rest_job(tenant, job_id)
    assert (job["state"], job["task_id"]) == ("failed", None)
    assert job["detail"] == (
        "refused when it fired: 3028 INVALID_PARAM: a msgKey in TargetMsgkey was already used "
        "for that target in this app by a different push; msgKeys must be unique (an exact "
        "repeat of a push answers its first task id)"
    )


async def test_scheduled_broadcast_fires_from_a_template(tenant: Tenant) -> None:
    sdk = tenant.sdk()
    created = await sdk.create_template_async(
        models.CreateTemplateRequest(
            app_id=tenant.app_id,
            workspace_id=tenant.workspace_id,
            template_name="news",
            title="News for #who#",
            content="Read it",
        )
    )
    assert created.body.success is True, created.body.to_map()
    creds = await tenant.register("android")
    fire_at = now_ms() + 1500
    response = await sdk.push_broadcast_async(
        models.PushBroadcastRequest(
            app_id=tenant.app_id,
            workspace_id=tenant.workspace_id,
            delivery_type=1,
            expired_seconds=300,
            msgkey="k-bcast",
            template_name="news",
            template_key_value=json.dumps({"who": "all"}),
            push_status=1,
            task_name="evening news",
            strategy_type=1,
            strategy_content=json.dumps({"fixedTime": fire_at}),
        )
    )
    assert response.body.result_code == "OK", response.body.push_result.result_msg
    job_id = response.body.push_result.data
    entry = await listed(tenant, job_id)
    assert entry == item(
        job_id,
        job_id,
        fire_at,
        entry["GmtCreate"],
        Type=3,
        PushTitle="News for all",
        PushContent="Read it",
    )
    assert await query(tenant, type=3) == (1, [entry])
    assert await query(tenant, type=0) == (0, [])

    async with tenant.device(creds) as device:
        message = await next_message(device)
    assert (message.msg_key, message.title, message.content) == (
        "k-bcast",
        "News for all",
        "Read it",
    )
    await eventually(lambda: state_is(tenant, job_id, "1"))
    assert (await rest_job(tenant, job_id))["task_id"] == message.task_id


# --- StrategyType 2 ---------------------------------------------------------------------------


async def test_cyclic_push_lists_one_sub_job_per_occurrence(tenant: Tenant) -> None:
    creds = await tenant.register("android")
    start, end = day_start_ms(1), day_start_ms(3)
    main_id = await schedule(
        tenant,
        {creds.delivery_token: "k-daily"},
        2,
        startTime=start,
        endTime=end,
        circleType=1,
        time="08:00:00",
        timeZone="UTC",
    )
    total, items = await query(tenant, unique_id=main_id)
    assert total == 3
    gmt = items[0]["GmtCreate"]
    subs = [i["UniqueId"] for i in items]
    assert len(set(subs)) == 3 and main_id not in subs
    eight = 8 * 3_600_000
    assert items == [
        item(sub, main_id, start + n * DAY_MS + eight, gmt, StrategyType=2)
        for n, sub in enumerate(subs)
    ]
    # A sub-job id lists that job; the main id itself is not a listed job.
    assert await query(tenant, unique_id=subs[1]) == (1, [items[1]])
    # Filters: fire time, Type, paging.
    assert await query(tenant, start_time=start + DAY_MS, end_time=end + DAY_MS) == (2, items[1:])
    assert await query(tenant, start_time=start, end_time=end) == (2, items[:2])
    assert await query(tenant, type=1) == (0, [])
    assert await query(tenant, type=0, page_size=2, page_number=2) == (3, items[2:])
    # QueryMpsSchedulerList takes no time range.
    response = await tenant.sdk().query_mps_scheduler_list_async(
        models.QueryMpsSchedulerListRequest(
            app_id=tenant.app_id, workspace_id=tenant.workspace_id, unique_id=main_id
        )
    )
    data = response.body.result_content.data
    assert (data.total_count, [i.to_map() for i in data.list]) == (3, items)

    job = await rest_job(tenant, main_id)
    assert (job["state"], job["strategy_type"], job["time_zone"]) == ("pending", 2, "UTC")
    assert [o["unique_id"] for o in job["occurrences"]] == subs


async def test_cyclic_default_zone_is_beijing_time(tenant: Tenant) -> None:
    creds = await tenant.register("android")
    # 00:00 UTC is 08:00 in Asia/Shanghai: the window's local dates are days 1 and 2.
    start, end = day_start_ms(1), day_start_ms(2)
    main_id = await schedule(
        tenant,
        {creds.delivery_token: "k-bj"},
        2,
        startTime=start,
        endTime=end,
        circleType=1,
        time="09:30:00",
    )
    _, items = await query(tenant, unique_id=main_id)
    half_past_one = 90 * 60_000  # 09:30 Beijing time is 01:30 UTC
    assert [i["PushTime"] for i in items] == [start + half_past_one, end + half_past_one]
    assert (await rest_job(tenant, main_id))["time_zone"] == "Asia/Shanghai"


async def test_query_refusals(tenant: Tenant) -> None:
    async def refused(**fields: Any) -> tuple[str, str]:
        response = await tenant.sdk().query_push_scheduler_list_async(
            models.QueryPushSchedulerListRequest(
                app_id=tenant.app_id, workspace_id=tenant.workspace_id, **fields
            )
        )
        assert response.body.result_content is None
        return response.body.result_code, response.body.result_message

    day = {"start_time": 0, "end_time": DAY_MS}
    assert await refused(end_time=1) == ("3028", "INVALID_PARAM: StartTime is required")
    assert await refused(start_time=1) == ("3028", "INVALID_PARAM: EndTime is required")
    assert await refused(start_time=2, end_time=1) == (
        "3028",
        "INVALID_PARAM: EndTime is before StartTime",
    )
    assert await refused(**day, type=4) == (
        "3028",
        "INVALID_PARAM: Type must be 0 (simple), 1 (template), 2 (multiple) or 3 (broadcast), "
        "got 4",
    )
    assert await refused(**day, page_size=501) == (
        "3028",
        "INVALID_PARAM: PageSize must be 1 to 500, got 501",
    )
    assert await refused(**day, page_number=0) == (
        "3028",
        "INVALID_PARAM: PageNumber starts at 1, got 0",
    )
    other = await new_tenant(tenant.server)
    response = await tenant.sdk().query_mps_scheduler_list_async(
        models.QueryMpsSchedulerListRequest(app_id=other.app_id, workspace_id="default")
    )
    assert (response.body.result_code, response.body.result_message) == (
        "3007",
        "APPID_WRONG: AppId and WorkspaceId do not name the app this AccessKeyId belongs to",
    )


# --- cancel -----------------------------------------------------------------------------------


async def test_cancelled_job_never_fires(tenant: Tenant) -> None:
    creds = await tenant.register("android")
    async with tenant.device(creds) as device:
        fire_at = now_ms() + 1500
        job_id = await schedule(tenant, {creds.delivery_token: "k-cancel"}, 1, fixedTime=fire_at)
        body = await cancel(tenant, job_id)
        assert (body.result_code, body.result_message, body.result_content) == ("OK", "", "1")
        with pytest.raises(TimeoutError):
            await next_message(device, timeout_s=fire_at / 1000 - time.time() + 2.0)
    entry = await listed(tenant, job_id)
    assert entry["ExecutedStatus"] == "2"
    job = await rest_job(tenant, job_id)
    assert (job["state"], job["task_id"]) == ("cancelled", None)
    assert job["detail"].startswith("cancelled at ")

    again = await cancel(tenant, job_id)
    assert (again.result_code, again.result_message, again.result_content) == (
        "3028",
        f"INVALID_PARAM: the scheduled push '{job_id}' cannot be cancelled: it is already "
        "cancelled",
        None,
    )


async def test_cancel_cyclic_main_job_cancels_its_occurrences(tenant: Tenant) -> None:
    creds = await tenant.register("android")
    main_id = await schedule(
        tenant,
        {creds.delivery_token: "k-weekly"},
        2,
        startTime=day_start_ms(1),
        endTime=day_start_ms(21),
        circleType=2,
        circleValue=[1, 4],
        time="07:00:00",
    )
    total, items = await query(tenant, unique_id=main_id)
    assert total == 6
    # One occurrence first, then the rest through the main job.
    assert (await cancel(tenant, items[0]["UniqueId"])).result_content == "1"
    assert (await cancel(tenant, main_id)).result_content == "5"
    _, items = await query(tenant, unique_id=main_id)
    assert [i["ExecutedStatus"] for i in items] == ["2"] * 6
    assert (await rest_job(tenant, main_id))["state"] == "cancelled"


async def test_cancel_cyclic_main_job_after_an_occurrence_was_sent(tenant: Tenant) -> None:
    creds = await tenant.register("android")
    main_id = await schedule(
        tenant,
        {creds.delivery_token: "k-part"},
        2,
        startTime=day_start_ms(1),
        endTime=day_start_ms(3),
        circleType=1,
        time="08:00:00",
        timeZone="UTC",
    )
    _, items = await query(tenant, unique_id=main_id)
    first = items[0]["UniqueId"]
    # The first occurrence falls due now (we cannot wait a day) and is sent.
    store = await Store.open(tenant.server.db_url, migrate=False)
    try:
        async with store.write() as session:
            await session.execute(
                update(Schedule)
                .where(Schedule.unique_id == first)
                .values(fire_at=datetime.now(UTC))
            )
    finally:
        await store.close()
    await eventually(lambda: state_is(tenant, first, "1"))

    body = await cancel(tenant, main_id)
    assert (body.result_code, body.result_message, body.result_content) == ("OK", "", "2")
    _, items = await query(tenant, unique_id=main_id)
    assert [i["ExecutedStatus"] for i in items] == ["1", "2", "2"]
    # Not every occurrence was cancelled: the main job is executed (docs/scheduling.md).
    job = await rest_job(tenant, main_id)
    assert (job["state"], [o["state"] for o in job["occurrences"]]) == (
        "executed",
        ["executed", "cancelled", "cancelled"],
    )
    assert job["detail"].startswith("cancelled at ")
    again = await cancel(tenant, main_id)
    assert (again.result_code, again.result_message) == (
        "3028",
        f"INVALID_PARAM: the scheduled push '{main_id}' cannot be cancelled: it is already "
        "executed",
    )


async def test_cancel_refusals_name_the_id_and_cancel_nothing(tenant: Tenant) -> None:
    creds = await tenant.register("android")
    job_id = await schedule(
        tenant, {creds.delivery_token: "k-keep"}, 1, fixedTime=now_ms() + 3_600_000
    )
    other = await new_tenant(tenant.server)
    foreign = await schedule(other, {"x" * 8: "k"}, 1, fixedTime=now_ms() + 3_600_000)

    for ids, bad in (("nope", "nope"), (f"{job_id},nope", "nope"), (foreign, foreign)):
        body = await cancel(tenant, ids)
        assert (body.result_code, body.result_message, body.result_content) == (
            "3028",
            f"INVALID_PARAM: this app has no scheduled push with UniqueId '{bad}'",
            None,
        )
    empty = await cancel(tenant, " , ")
    assert (empty.result_code, empty.result_message) == (
        "3028",
        "INVALID_PARAM: UniqueIds is required: the job ids to cancel, separated by commas",
    )
    assert (await listed(tenant, job_id))["ExecutedStatus"] == "0"
    assert (await listed(other, foreign))["ExecutedStatus"] == "0"


async def test_cancel_after_it_ran_is_refused(tenant: Tenant) -> None:
    creds = await tenant.register("android")
    job_id = await schedule(tenant, {creds.delivery_token: "k-ran"}, 1, fixedTime=now_ms() + 800)
    await eventually(lambda: state_is(tenant, job_id, "1"))
    body = await cancel(tenant, job_id)
    assert (body.result_code, body.result_message) == (
        "3028",
        f"INVALID_PARAM: the scheduled push '{job_id}' cannot be cancelled: it is already executed",
    )


async def test_rest_cancel_and_errors(tenant: Tenant) -> None:
    creds = await tenant.register("android")
    job_id = await schedule(
        tenant, {creds.delivery_token: "k-rest"}, 1, fixedTime=now_ms() + 3_600_000
    )
    auth = (tenant.creds.access_key_id, tenant.creds.access_key_secret)
    base = f"{tenant.server.api_url}/v1/schedules"
    async with httpx.AsyncClient(auth=auth) as http:
        listing = await http.get(base, params={"type": "simple"})
        assert listing.status_code == 200
        assert (listing.json()["total"], listing.json()["schedules"][0]["unique_id"]) == (
            1,
            job_id,
        )
        naive = await http.get(base, params={"start": "2024-01-01T00:00:00"})
        assert (naive.status_code, naive.json()) == (
            400,
            {
                "error": "invalid_param",
                "message": "start needs a UTC offset or Z, such as 2024-06-14T08:00:00Z",
                "code": 3028,
            },
        )
        done = await http.delete(f"{base}/{job_id}")
        assert (done.status_code, done.json()) == (200, {"unique_id": job_id, "cancelled": 1})
        again = await http.delete(f"{base}/{job_id}")
        assert (again.status_code, again.json()["error"]) == (409, "not_pending")
        unknown = await http.delete(f"{base}/nope")
        assert (unknown.status_code, unknown.json()) == (
            404,
            {
                "error": "unknown_schedule",
                "message": "this app has no scheduled push with UniqueId 'nope'",
            },
        )
        missing = await http.get(f"{base}/nope")
        assert (missing.status_code, missing.json()["error"]) == (404, "unknown_schedule")


async def test_rest_listing_refuses_end_before_start_as_the_mps_listing_does(
    tenant: Tenant,
) -> None:
    auth = (tenant.creds.access_key_id, tenant.creds.access_key_secret)
    async with httpx.AsyncClient(auth=auth, base_url=tenant.server.api_url) as http:
        response = await http.get(
            "/v1/schedules?start=2026-12-31T00:00:00Z&end=2026-01-01T00:00:00Z"
        )
    assert (response.status_code, response.json()) == (
        400,
        {"error": "invalid_param", "message": "EndTime is before StartTime", "code": 3028},
    )


async def test_a_page_past_any_offset_is_empty(tenant: Tenant) -> None:
    # (page - 1) * page_size beyond BIGINT used to fail the query on PostgreSQL (500).
    creds = await tenant.register("android")
    await schedule(tenant, {creds.delivery_token: "k-far"}, 1, fixedTime=now_ms() + 3_600_000)
    auth = (tenant.creds.access_key_id, tenant.creds.access_key_secret)
    async with httpx.AsyncClient(auth=auth, base_url=tenant.server.api_url) as http:
        response = await http.get("/v1/schedules?page=1000000000000000000&page_size=500")
    assert (response.status_code, response.json()) == (
        200,
        {"total": 1, "page": 10**18, "page_size": 500, "schedules": []},
    )
    assert await query(tenant, page_number=10**17, page_size=500) == (1, [])


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy_type", "strategy", "message"),
    [
        (1, "not json", "StrategyContent is not valid JSON: Expecting value at character 1"),
        (
            1,
            {},
            "StrategyContent.fixedTime is required when StrategyType is 1 (milliseconds "
            "since 1970-01-01 UTC)",
        ),
        (
            1,
            {"fixedTime": 1630303126000},
            "StrategyContent.fixedTime (2021-08-30T05:58:46Z) is "
            "not in the future; the server's time is ",
        ),
        (
            2,
            {"startTime": 2, "endTime": 1, "circleType": 1, "time": "08:00:00"},
            "StrategyContent.endTime (1970-01-01T00:00:00Z) is before startTime "
            "(1970-01-01T00:00:00Z)",
        ),
        (
            2,
            {"startTime": 0, "endTime": 1, "circleType": 9, "time": "08:00:00"},
            "StrategyContent.circleType must be 1 (daily), 2 (weekly) or 3 (monthly), got 9",
        ),
        (
            2,
            {"startTime": 0, "endTime": 1, "circleType": 2, "circleValue": [8], "time": "8"},
            "StrategyContent.circleValue 8 is out of range for a weekly cycle: use ISO weekdays 1 "
            "(Monday) to 7 (Sunday)",
        ),
        (
            2,
            {"startTime": 0, "endTime": 1, "circleType": 1, "time": "8:00"},
            'StrategyContent.time must be "HH:mm:ss" on a 24-hour clock, got "8:00"',
        ),
        (
            2,
            {"startTime": 0, "endTime": 1, "circleType": 1, "time": "08:00:00", "timeZone": "X"},
            "StrategyContent.timeZone 'X' is not an IANA time zone name (such as Asia/Shanghai, "
            "Europe/Berlin or UTC)",
        ),
        (3, {}, "StrategyType must be 0 (immediate), 1 (scheduled) or 2 (cyclic), got 3"),
        (  # a lone surrogate, echoed as its escape (raw, the answer could not be sent: 500)
            2,
            '{"startTime":0,"endTime":1,"circleType":1,"time":"\\ud800"}',
            'StrategyContent.time must be "HH:mm:ss" on a 24-hour clock, got "\\ud800"',
        ),
    ],
)
async def test_bad_strategy_is_refused_and_stores_nothing(
    tenant: Tenant, strategy_type: int, strategy: Any, message: str
) -> None:
    body = await push_simple(tenant, {"t" * 8: "k"}, strategy_type, strategy)
    assert (body.result_code, body.result_message, body.push_result.success) == (
        "3028",
        "INVALID_PARAM",
        False,
    )
    assert body.push_result.result_msg.startswith(message)
    if not message.endswith("time is "):
        assert body.push_result.result_msg == message
    assert await query(tenant) == (0, [])


async def test_too_many_occurrences_is_refused(tenant: Tenant) -> None:
    start = day_start_ms(1)
    cyclic = {"startTime": start, "circleType": 1, "time": "08:00:00", "timeZone": "UTC"}
    body = await push_simple(
        tenant, {"t" * 8: "k"}, 2, {**cyclic, "endTime": start + 1000 * DAY_MS}
    )
    assert (body.result_code, body.push_result.result_msg) == (
        "3028",
        "the cycle has more than 1000 occurrences between now and StrategyContent.endTime "
        f"({iso_ms(start + 1000 * DAY_MS)}); shorten the window or split the push",
    )
    main_id = await schedule(tenant, {"t" * 8: "k"}, 2, **cyclic, endTime=start + 999 * DAY_MS)
    whole = {"start_time": 0, "end_time": start + 1000 * DAY_MS}
    assert (await query(tenant, unique_id=main_id, page_size=1, **whole))[0] == 1000
    _, last = await query(tenant, unique_id=main_id, page_size=1, page_number=1000, **whole)
    assert last[0]["PushTime"] == start + 999 * DAY_MS + 8 * 3_600_000


async def test_bad_push_with_good_strategy_stores_nothing(tenant: Tenant) -> None:
    strategy = {"fixedTime": now_ms() + 60_000}
    body = await push_simple(tenant, {"t" * 8: "k"}, 1, strategy, title="")
    assert (body.result_code, body.push_result.result_msg) == ("3024", "Title is required")
    cyclic = {"startTime": day_start_ms(1), "endTime": day_start_ms(2), "circleType": 1}
    body = await push_simple(tenant, {"t" * 8: "k" * 120}, 2, {**cyclic, "time": "08:00:00"})
    assert (body.result_code, body.push_result.result_msg) == (
        "3028",
        "a msgKey of a cyclic push may have at most 119 characters: each occurrence sends it "
        "with #YYYYMMDD (its date) appended",
    )
    assert await query(tenant) == (0, [])


# --- claim once, and the missed-while-down rule -----------------------------------------------


@contextlib.asynccontextmanager
async def store_of_its_own(tmp_path: Path) -> AsyncIterator[str]:
    """The URL of an empty store: a SQLite file, or a fresh PostgreSQL database."""
    if not TEST_DATABASE_URL:
        yield f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
        return
    name = f"openmps_test_{uuid.uuid4().hex[:12]}"
    await _postgres(TEST_DATABASE_URL, f'CREATE DATABASE "{name}"')
    try:
        yield TEST_DATABASE_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        await _postgres(TEST_DATABASE_URL, f'DROP DATABASE "{name}" WITH (FORCE)')


async def test_two_schedulers_on_one_store_fire_each_job_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two runtimes (each its own engine and connections, as two processes would have) poll
    one store; every job is claimed and fired by exactly one of them."""
    caplog.set_level(logging.INFO, logger="openmps.scheduler")
    async with store_of_its_own(tmp_path) as url:
        settings = Settings(database_url=url, data_dir=tmp_path, port=0, gateway_port=0)
        runtimes = [await Runtime.open(settings), await Runtime.open(settings)]
        for runtime in runtimes:
            await runtime.start()
        try:
            app = await create_app(runtimes[0].store, "twins")
            app_pk = await find_app(runtimes[0].store, app.app_id, app.workspace_id)
            assert app_pk is not None
            fire_at = now_ms() + 1500
            jobs = [
                await runtimes[n % 2].submit(
                    app_pk,
                    PushRequest(
                        delivery_type=1,
                        targets={f"device-{n}": "k-twin"},
                        expired_seconds=60,
                        title="Twin",
                        content="Once",
                        strategy_type=1,
                        strategy_content=json.dumps({"fixedTime": fire_at}),
                    ),
                )
                for n in range(40)
            ]

            async def all_fired() -> bool:
                _, found = await runtimes[1].scheduler.query(app_pk)
                return [(j.state, j.task_id is not None) for j in found] == [
                    ("executed", True)
                ] * 40

            await eventually(all_fired, timeout_s=20)
        finally:
            for runtime in runtimes:
                await runtime.stop()
    fired = [
        str(record.args[0])  # type: ignore[index]
        for record in caplog.records
        if str(record.msg).startswith("scheduled push fired")
    ]
    assert sorted(fired) == sorted(jobs)


async def test_jobs_claimed_by_a_killed_process_are_recovered(tmp_path: Path) -> None:
    """A job left "executed" without a task (the process died between its claim and the
    push's commit) gets the task its push stored, or is sent again on the next start."""
    async with store_of_its_own(tmp_path) as url:
        settings = Settings(database_url=url, data_dir=tmp_path, port=0, gateway_port=0)
        runtime = await Runtime.open(settings)
        await runtime.start()
        try:
            app = await create_app(runtime.store, "recover")
            app_pk = await find_app(runtime.store, app.app_id, app.workspace_id)
            assert app_pk is not None

            def push(key: str) -> PushRequest:
                return PushRequest(
                    delivery_type=1,
                    targets={"device-1": key},
                    expired_seconds=300,
                    title="Again",
                    content="Recovered",
                )

            stored_task = await runtime.pushes.push(
                app_pk, push("k-stored"), schedule_id="j-stored"
            )
            now = datetime.now(UTC)
            async with runtime.store.write() as session:
                for unique_id, key in (("j-stored", "k-stored"), ("j-lost", "k-lost")):
                    session.add(
                        Schedule(
                            unique_id=unique_id,
                            parent_id=unique_id,
                            app_pk=app_pk,
                            kind="simple",
                            delivery_type=1,
                            strategy_type=1,
                            fire_at=now - timedelta(seconds=5),
                            state="executed",
                            request=request_json(push(key)),
                            title="Again",
                            content="Recovered",
                            created_at=now - timedelta(seconds=60),
                            executed_at=now - timedelta(seconds=5),
                        )
                    )
        finally:
            await runtime.stop()

        runtime = await Runtime.open(settings)
        await runtime.start()
        try:

            async def lost_sent_again() -> bool:
                found = await runtime.scheduler.get(app_pk, "j-lost")
                return found is not None and found[0].task_id is not None

            await eventually(lost_sent_again)
            stored = await runtime.scheduler.get(app_pk, "j-stored")
            lost = await runtime.scheduler.get(app_pk, "j-lost")
            assert stored is not None and lost is not None
            assert (stored[0].state, stored[0].task_id, stored[0].executed_at) == (
                "executed",
                stored_task,
                now - timedelta(seconds=5),
            )
            assert (lost[0].state, lost[0].detail) == ("executed", None)
            assert lost[0].task_id not in (None, stored_task)
            async with runtime.store.session() as session:
                tasks = (
                    await session.execute(
                        select(Task.id, Task.schedule_id).where(Task.app_pk == app_pk)
                    )
                ).all()
            assert sorted(tasks) == [(stored_task, "j-stored"), (lost[0].task_id, "j-lost")]
        finally:
            await runtime.stop()


async def restart_after(server: Server, until_ms: int) -> None:
    """Stop the server, wait until ``until_ms`` has passed, start it again."""
    await asyncio.to_thread(server.stop)
    await asyncio.sleep(max(0.0, until_ms / 1000 - time.time()))
    await asyncio.to_thread(server.start)


async def test_missed_while_down_still_valid_fires_once(server: Server, tenant: Tenant) -> None:
    creds = await tenant.register("android")
    fire_at = now_ms() + 1000
    job_id = await schedule(
        tenant, {creds.delivery_token: "k-late"}, 1, fixedTime=fire_at, expired_seconds=120
    )
    await restart_after(server, fire_at + 1500)

    await eventually(lambda: state_is(tenant, job_id, "1"))
    async with tenant.device(creds) as device:
        message = await next_message(device)
    assert message.msg_key == "k-late"
    # The message is valid for ExpiredSeconds from its planned time, not from the late send.
    assert abs(message.expires_at - (fire_at + 120_000)) <= 1000
    job = await rest_job(tenant, job_id)
    assert (job["state"], job["task_id"], job["detail"]) == ("executed", message.task_id, None)


async def test_missed_while_down_past_validity_is_missed(server: Server, tenant: Tenant) -> None:
    creds = await tenant.register("android")
    fire_at = now_ms() + 1000
    job_id = await schedule(
        tenant, {creds.delivery_token: "k-gone"}, 1, fixedTime=fire_at, expired_seconds=1
    )
    await restart_after(server, fire_at + 2500)

    await eventually(lambda: state_is(tenant, job_id, "3"))
    job = await rest_job(tenant, job_id)
    assert (job["state"], job["task_id"], job["executed_at"]) == ("missed", None, None)
    assert job["detail"] == (
        f"missed: due at {iso_ms(fire_at)}; its validity (ExpiredSeconds 1) ended at "
        f"{iso_ms(fire_at + 1000)}, before the server could send it"
    )
    async with tenant.device(creds) as device:
        with pytest.raises(TimeoutError):
            await next_message(device, timeout_s=1.0)


async def test_cycle_overdue_only_latest_fires(server: Server, tenant: Tenant) -> None:
    creds = await tenant.register("android")
    main_id = await schedule(
        tenant,
        {creds.delivery_token: "k-cycle"},
        2,
        startTime=day_start_ms(1),
        endTime=day_start_ms(3),
        circleType=1,
        time="06:00:00",
        timeZone="UTC",
        expired_seconds=600,
    )
    _, items = await query(tenant, unique_id=main_id)
    first, second, third = (i["UniqueId"] for i in items)
    second_date = datetime.fromtimestamp(items[1]["PushTime"] / 1000, UTC).date()

    # While the server is down, the first two occurrences fall due (their times are moved
    # into the past: we cannot wait a day).
    await asyncio.to_thread(server.stop)
    now = datetime.now(UTC)
    due = {first: now - timedelta(seconds=30), second: now - timedelta(seconds=20)}
    store = await Store.open(server.db_url, migrate=False)
    try:
        async with store.write() as session:
            for unique_id, fire_at in due.items():
                await session.execute(
                    update(Schedule).where(Schedule.unique_id == unique_id).values(fire_at=fire_at)
                )
    finally:
        await store.close()
    await asyncio.to_thread(server.start)

    await eventually(lambda: state_is(tenant, second, "1"))
    assert [i["ExecutedStatus"] for i in (await query(tenant, unique_id=main_id))[1]] == [
        "3",
        "1",
        "0",
    ]
    missed = await rest_job(tenant, first)
    assert missed["detail"] == (
        f"missed: due at {iso_utc(due[first])}; a later occurrence (due at "
        f"{iso_utc(due[second])}) was also due when the server got to it, and only the "
        "latest one may be sent"
    )
    async with tenant.device(creds) as device:
        message = await next_message(device)
    assert message.msg_key == "k-cycle#" + second_date.strftime("%Y%m%d")
    assert (await rest_job(tenant, second))["task_id"] == message.task_id
    assert (await rest_job(tenant, main_id))["state"] == "pending"  # the third is to come

    store = await Store.open(server.db_url, migrate=False)
    try:
        async with store.session() as session:
            schedule_ids = (
                await session.scalars(
                    select(Task.schedule_id).where(Task.schedule_id.in_([first, second, third]))
                )
            ).all()
    finally:
        await store.close()
    assert schedule_ids == [second]


OUT_OF_RANGE = (
    "is out of range: use milliseconds since 1970-01-01 UTC from -62135510400000 "
    "(0001-01-02T00:00:00.000Z) to 253402214399999 (9999-12-30T23:59:59.999Z)"
)


@pytest.mark.parametrize(
    ("extreme", "message"),
    [
        (
            {"endTime": 253402300799999},  # 9999-12-31T23:59:59.999Z: Shanghai is in 10000
            f"StrategyContent.endTime 253402300799999 {OUT_OF_RANGE}",
        ),
        (
            {"startTime": -62135596800000, "timeZone": "America/New_York"},  # year 0 there
            f"StrategyContent.startTime -62135596800000 {OUT_OF_RANGE}",
        ),
    ],
)
async def test_extreme_cycle_times_are_refused_not_500(
    tenant: Tenant, extreme: dict[str, Any], message: str
) -> None:
    cyclic = {
        "startTime": day_start_ms(1),
        "endTime": day_start_ms(2),
        "circleType": 1,
        "time": "08:00:00",
        **extreme,
    }
    body = await push_simple(tenant, {"t" * 8: "k"}, 2, cyclic)
    assert (body.result_code, body.result_message, body.push_result.result_msg) == (
        "3028",
        "INVALID_PARAM",
        message,
    )
    auth = (tenant.creds.access_key_id, tenant.creds.access_key_secret)
    rest_body = {
        "delivery_type": 1,
        "title": "Later",
        "content": "hello",
        "expired_seconds": 300,
        "targets": {"t" * 8: "k"},
        "strategy_type": 2,
        "strategy_content": cyclic,
    }
    async with httpx.AsyncClient(auth=auth, base_url=tenant.server.api_url) as http:
        response = await http.post("/v1/pushes", json=rest_body)
    assert (response.status_code, response.json()) == (
        400,
        {"error": "invalid_param", "message": message, "code": 3028},
    )
    assert await query(tenant) == (0, [])


async def test_rest_listing_refuses_a_window_outside_utc_years_1_to_9999(tenant: Tenant) -> None:
    auth = (tenant.creds.access_key_id, tenant.creds.access_key_secret)
    async with httpx.AsyncClient(auth=auth, base_url=tenant.server.api_url) as http:
        both = await http.get(
            "/v1/schedules?start=0001-01-01T00:00:00%2B01:00&end=9999-12-31T23:59:59-01:00"
        )
        end = await http.get("/v1/schedules?end=9999-12-31T23:59:59-01:00")
        widest = await http.get(
            "/v1/schedules?start=0001-01-01T00:00:00Z&end=9999-12-31T23:59:59.999999Z"
        )
    range_text = "use a time from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z"
    assert (both.status_code, both.json()) == (
        400,
        {
            "error": "invalid_param",
            "message": f"start 0001-01-01T00:00:00+01:00 is out of range: {range_text}",
            "code": 3028,
        },
    )
    assert (end.status_code, end.json()) == (
        400,
        {
            "error": "invalid_param",
            "message": f"end 9999-12-31T23:59:59-01:00 is out of range: {range_text}",
            "code": 3028,
        },
    )
    assert (widest.status_code, widest.json()) == (
        200,
        {"total": 0, "page": 1, "page_size": 100, "schedules": []},
    )
