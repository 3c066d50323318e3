"""PushBroadcast and RevokePushTask end to end through the official SDK: audience filters,
bulk expansion, delivery to connected devices now and to the others when they connect."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from alibabacloud_mpaas20201028 import models

from openmps.client import DeviceCredentials
from tests.conftest import Tenant

TEMPLATE = "announce"


async def create_template(tenant: Tenant, name: str = TEMPLATE) -> None:
    response = await tenant.sdk().create_template_async(
        models.CreateTemplateRequest(
            app_id=tenant.app_id,
            workspace_id=tenant.workspace_id,
            template_name=name,
            title="News for #who#",
            content="#what# is out",
        )
    )
    assert response.body.success is True


def broadcast_request(tenant: Tenant, **overrides: Any) -> models.PushBroadcastRequest:
    fields: dict[str, Any] = {
        "app_id": tenant.app_id,
        "workspace_id": tenant.workspace_id,
        "delivery_type": 1,
        "msgkey": "bc-1",
        "expired_seconds": 300,
        "template_name": TEMPLATE,
        "template_key_value": json.dumps({"who": "everyone", "what": "v2"}),
        "push_status": 1,
        "task_name": "release",
    }
    fields.update(overrides)
    return models.PushBroadcastRequest(**fields)


async def broadcast(tenant: Tenant, **overrides: Any) -> models.PushBroadcastResponseBody:
    response = await tenant.sdk().push_broadcast_async(broadcast_request(tenant, **overrides))
    body: models.PushBroadcastResponseBody = response.body
    return body


async def rows_of(tenant: Tenant, task_id: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as http:
        response = await http.get(
            f"{tenant.server.api_url}/v1/tasks/{task_id}",
            auth=(tenant.creds.access_key_id, tenant.creds.access_key_secret),
        )
    assert response.status_code == 200
    rows: list[dict[str, Any]] = response.json()["deliveries"]
    return rows


async def bind(tenant: Tenant, creds: DeviceCredentials, user_id: str) -> None:
    response = await tenant.sdk().push_bind_async(
        models.PushBindRequest(
            app_id=tenant.app_id,
            workspace_id=tenant.workspace_id,
            delivery_token=creds.delivery_token,
            os_type=1,
            user_id=user_id,
        )
    )
    assert response.body.result_code == "OK"


async def test_broadcast_reaches_every_android_device_now_or_on_connect(tenant: Tenant) -> None:
    await create_template(tenant)
    online = [await tenant.register("android") for _ in range(2)]
    offline = await tenant.register("android")
    iphone = await tenant.register("ios")
    async with tenant.device(online[0]) as first, tenant.device(online[1]) as second:
        body = await broadcast(tenant)
        assert (body.result_code, body.push_result.success) == ("OK", True)
        task_id = body.push_result.data
        assert task_id.isdigit()
        for device in (first, second):
            message = await asyncio.wait_for(anext(aiter(device)), 10)
            assert (message.msg_key, message.title, message.content, message.task_id) == (
                "bc-1",
                "News for everyone",
                "v2 is out",
                task_id,
            )
    rows = await rows_of(tenant, task_id)
    assert sorted(r["device"] for r in rows) == sorted(c.delivery_token for c in [*online, offline])
    assert iphone.delivery_token not in {r["device"] for r in rows}
    assert {r["target"] for r in rows} == {"*"}
    async with tenant.device(offline) as late:
        message = await asyncio.wait_for(anext(aiter(late)), 10)
        assert (message.msg_key, message.content) == ("bc-1", "v2 is out")


async def test_audience_bound_unbound_and_ios(tenant: Tenant) -> None:
    await create_template(tenant)
    bound, unbound = await tenant.register("android"), await tenant.register("android")
    iphone = await tenant.register("ios")
    await bind(tenant, bound, "alice")
    expected = {
        0: {bound.delivery_token},  # PushStatus 0 (the default): bound devices
        1: {bound.delivery_token, unbound.delivery_token},
        2: {unbound.delivery_token},
    }
    for status, devices in expected.items():
        body = await broadcast(tenant, msgkey=f"aud-{status}", push_status=status)
        assert body.result_code == "OK"
        rows = await rows_of(tenant, body.push_result.data)
        assert {r["device"] for r in rows} == devices, status
    ios = await broadcast(tenant, msgkey="aud-ios", delivery_type=2)
    rows = await rows_of(tenant, ios.push_result.data)
    assert [r["device"] for r in rows] == [iphone.delivery_token]
    # Bound within the last 7 days: alice was bound just now.
    recent = await broadcast(tenant, msgkey="aud-7d", push_status=0, bind_period=1)
    rows = await rows_of(tenant, recent.push_result.data)
    assert [r["device"] for r in rows] == [bound.delivery_token]


async def test_broadcast_with_no_device_is_accepted_with_no_delivery(tenant: Tenant) -> None:
    await create_template(tenant)
    body = await broadcast(tenant)
    assert body.result_code == "OK"
    assert await rows_of(tenant, body.push_result.data) == []


async def test_exact_repeat_answers_first_task_and_reused_msgkey_is_refused(
    tenant: Tenant,
) -> None:
    await create_template(tenant)
    await tenant.register("android")
    first = await broadcast(tenant)
    again = await broadcast(tenant)
    assert (again.result_code, again.push_result.data) == ("OK", first.push_result.data)
    other = await broadcast(tenant, template_key_value=json.dumps({"who": "x", "what": "y"}))
    assert (other.result_code, other.result_message) == ("3028", "INVALID_PARAM")
    assert "Msgkey was already used" in other.push_result.result_msg
    assert len(await rows_of(tenant, first.push_result.data)) == 1


@pytest.mark.parametrize(
    ("overrides", "code", "name"),
    [
        ({"delivery_type": 3}, "3030", "BROADCAST_ONLY_SUPPORT_BY_DEVICE"),
        ({"delivery_type": 7}, "3009", "DELIVERY_TYPE_NOT_SUPPORTED"),
        ({"delivery_type": None}, "3009", "DELIVERY_TYPE_NOT_SUPPORTED"),
        ({"msgkey": None}, "3028", "INVALID_PARAM"),
        ({"push_status": 3}, "3028", "INVALID_PARAM"),
        ({"bind_period": 5}, "3028", "INVALID_PARAM"),
        ({"un_bind_period": 0}, "3028", "INVALID_PARAM"),
        ({"android_channel": 3}, "3028", "INVALID_PARAM"),
        ({"expired_seconds": 0}, "3020", "EXPIREDSECONDS_WRONG"),
        ({"template_name": "nope"}, "3022", "TEMPLATE_NOT_EXIST"),
        ({"template_key_value": json.dumps({"who": "x"})}, "3023", "TEMPLATEKV_NOT_ENOUGH"),
    ],
)
async def test_refused_broadcast_stores_nothing(
    tenant: Tenant, overrides: dict[str, Any], code: str, name: str
) -> None:
    await create_template(tenant)
    await tenant.register("android")
    body = await broadcast(tenant, **overrides)
    assert (body.result_code, body.result_message, body.push_result.success) == (code, name, False)
    # Nothing was stored: the same Msgkey is still free for a good broadcast.
    good = await broadcast(tenant)
    assert good.result_code == "OK"
    assert len(await rows_of(tenant, good.push_result.data)) == 1


async def revoke_task(tenant: Tenant, task_id: str) -> models.RevokePushTaskResponseBody:
    response = await tenant.sdk().revoke_push_task_async(
        models.RevokePushTaskRequest(
            app_id=tenant.app_id, workspace_id=tenant.workspace_id, task_id=task_id
        )
    )
    body: models.RevokePushTaskResponseBody = response.body
    return body


async def test_revoke_task_stops_pending_deliveries(tenant: Tenant) -> None:
    await create_template(tenant)
    online, offline = await tenant.register("android"), await tenant.register("android")
    async with tenant.device(online) as device:
        body = await broadcast(tenant)
        task_id = body.push_result.data
        await asyncio.wait_for(anext(aiter(device)), 10)
        revoked = await revoke_task(tenant, task_id)
        assert (revoked.result_code, revoked.push_result.success) == ("OK", True)
    rows = {r["device"]: r for r in await rows_of(tenant, task_id)}
    assert (rows[offline.delivery_token]["final"], rows[offline.delivery_token]["detail"]) == (
        True,
        "revoked",
    )
    async with tenant.device(offline) as late:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(aiter(late)), 1.5)


async def test_revoke_task_of_unknown_or_other_apps_task_is_refused(
    tenant: Tenant, server: Any
) -> None:
    from tests.conftest import new_tenant

    await create_template(tenant)
    await tenant.register("android")
    task_id = (await broadcast(tenant)).push_result.data
    stranger = await new_tenant(server)
    body = await revoke_task(stranger, task_id)
    assert (body.result_code, body.result_message) == ("3028", "INVALID_PARAM")
    assert body.push_result.result_msg == f"this app has no task {task_id}"
    unknown = await revoke_task(tenant, "999999999")
    assert (unknown.result_code, unknown.push_result.result_msg) == (
        "3028",
        "this app has no task 999999999",
    )
    bad = await revoke_task(tenant, "abc")
    assert bad.result_code == "3028"
    # The task is untouched by the refusals.
    rows = await rows_of(tenant, task_id)
    assert [(r["final"], r["detail"]) for r in rows] == [(False, None)]
