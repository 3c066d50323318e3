"""The main job end to end: the official SDK pushes, devices on the own channel receive and ack,
the status is recorded."""

from __future__ import annotations

import asyncio
import json

import httpx
from alibabacloud_mpaas20201028 import models

from tests.conftest import Tenant, eventually


async def task_rows(tenant: Tenant, task_id: str) -> list[dict[str, object]]:
    async with httpx.AsyncClient() as http:
        response = await http.get(
            f"{tenant.server.api_url}/v1/tasks/{task_id}",
            auth=(tenant.creds.access_key_id, tenant.creds.access_key_secret),
        )
    assert response.status_code == 200
    rows: list[dict[str, object]] = response.json()["deliveries"]
    return rows


async def test_user_with_online_and_offline_device(tenant: Tenant) -> None:
    sdk = tenant.sdk()
    online, offline = await tenant.register("android"), await tenant.register("ios")
    for creds, os_type in ((online, 1), (offline, 2)):
        bound = await sdk.push_bind_async(
            models.PushBindRequest(
                app_id=tenant.app_id,
                workspace_id=tenant.workspace_id,
                delivery_token=creds.delivery_token,
                os_type=os_type,
                user_id="alice",
            )
        )
        assert bound.body.result_code == "OK"
        assert bound.body.push_result.success is True

    async with tenant.device(online) as device:
        response = await sdk.push_simple_async(
            models.PushSimpleRequest(
                app_id=tenant.app_id,
                workspace_id=tenant.workspace_id,
                delivery_type=3,
                expired_seconds=300,
                title="Hello",
                content="Hi there!",
                task_name="greeting",
                extended_params=json.dumps({"k": "v"}),
                target_msgkey=json.dumps({"alice": "msg-0001"}),
            )
        )
        assert response.body.result_code == "OK"
        task_id = response.body.push_result.data
        assert task_id.isdigit()
        message = await asyncio.wait_for(anext(aiter(device)), 10)
        assert (message.msg_key, message.title, message.content, message.extras) == (
            "msg-0001",
            "Hello",
            "Hi there!",
            {"k": "v"},
        )
        assert message.task_id == task_id

    async def online_acked() -> bool:
        rows = await task_rows(tenant, task_id)
        by_device = {r["device"]: r["status_code"] for r in rows}
        return by_device == {online.delivery_token: 2, offline.delivery_token: 0}

    await eventually(online_acked)

    async with tenant.device(offline) as device:
        late = await asyncio.wait_for(anext(aiter(device)), 10)
        assert late.msg_key == "msg-0001"

    async def both_acked() -> bool:
        rows = await task_rows(tenant, task_id)
        return [(r["status_code"], r["status_name"], r["channel"]) for r in rows] == [
            (2, "Acked", "own"),
            (2, "Acked", "own"),
        ]

    await eventually(both_acked)
