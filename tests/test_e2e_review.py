"""Review (status -1): held pushes are stored, not sent, until approved (REST or CLI) or
rejected; rejected ones end final and never go out."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from alibabacloud_mpaas20201028 import models

from tests.conftest import Server, Tenant, eventually
from tests.test_cli import openmps
from tests.test_e2e_broadcast import broadcast, create_template, rows_of


async def rest(tenant: Tenant, method: str, path: str, body: Any = None) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.request(
            method,
            f"{tenant.server.api_url}{path}",
            json=body,
            auth=(tenant.creds.access_key_id, tenant.creds.access_key_secret),
        )


async def set_rule(tenant: Tenant, rule: str) -> None:
    response = await rest(tenant, "PUT", "/v1/review/rule", {"rule": rule})
    assert (response.status_code, response.json()) == (200, {"rule": rule})


async def push_simple(tenant: Tenant, target: str, key: str, delivery_type: int = 3) -> str:
    response = await tenant.sdk().push_simple_async(
        models.PushSimpleRequest(
            app_id=tenant.app_id,
            workspace_id=tenant.workspace_id,
            delivery_type=delivery_type,
            expired_seconds=300,
            title="T",
            content="C",
            target_msgkey=json.dumps({target: key}),
        )
    )
    assert response.body.result_code == "OK"
    task_id: str = response.body.push_result.data
    return task_id


async def test_held_broadcast_waits_then_approval_sends_it(tenant: Tenant) -> None:
    await create_template(tenant)
    await set_rule(tenant, "broadcast")
    creds = await tenant.register("android")
    async with tenant.device(creds) as device:
        task_id = (await broadcast(tenant)).push_result.data
        rows = await rows_of(tenant, task_id)
        assert [(r["status_code"], r["status_name"], r["final"]) for r in rows] == [
            (-1, "WaitingForVerify", False)
        ]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(aiter(device)), 1.0)
        listed = await rest(tenant, "GET", "/v1/review")
        assert listed.status_code == 200
        assert listed.json()["rule"] == "broadcast"
        assert [(t["task_id"], t["kind"], t["targets"]) for t in listed.json()["held"]] == [
            (task_id, "broadcast", 1)
        ]
        approved = await rest(tenant, "POST", f"/v1/tasks/{task_id}/approve")
        assert (approved.status_code, approved.json()) == (
            200,
            {"task_id": task_id, "review": "approved", "released": 1},
        )
        message = await asyncio.wait_for(anext(aiter(device)), 10)
        assert message.task_id == task_id

    async def acked() -> bool:
        return [r["status_code"] for r in await rows_of(tenant, task_id)] == [2]

    await eventually(acked)
    assert (await rest(tenant, "GET", "/v1/review")).json()["held"] == []
    again = await rest(tenant, "POST", f"/v1/tasks/{task_id}/approve")
    assert (again.status_code, again.json()["error"]) == (409, "not_pending")


async def test_rejected_push_never_goes_out_and_ends_final(tenant: Tenant) -> None:
    await set_rule(tenant, "all")
    creds = await tenant.register("android")
    task_id = await push_simple(tenant, creds.delivery_token, "k-1", delivery_type=1)
    rejected = await rest(tenant, "POST", f"/v1/tasks/{task_id}/reject")
    assert (rejected.status_code, rejected.json()) == (
        200,
        {"task_id": task_id, "review": "rejected", "stopped": 1},
    )
    rows = await rows_of(tenant, task_id)
    assert [(r["status_code"], r["final"], r["detail"]) for r in rows] == [(-1, True, "rejected")]
    async with tenant.device(creds) as device:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(aiter(device)), 1.5)
    approve = await rest(tenant, "POST", f"/v1/tasks/{task_id}/approve")
    assert (approve.status_code, approve.json()["error"]) == (409, "not_pending")


async def test_held_user_push_without_binding_becomes_no_bind_info_on_approval(
    tenant: Tenant,
) -> None:
    await set_rule(tenant, "all")
    task_id = await push_simple(tenant, "nobody", "k-1")
    rows = await rows_of(tenant, task_id)
    assert [(r["status_code"], r["final"]) for r in rows] == [(-1, False)]
    approved = await rest(tenant, "POST", f"/v1/tasks/{task_id}/approve")
    assert approved.json()["released"] == 1
    rows = await rows_of(tenant, task_id)
    assert [(r["status_code"], r["status_name"], r["final"]) for r in rows] == [
        (1, "NoBindInfo", False)
    ]


async def test_rule_none_sends_at_once_and_batch_holds_only_batches(tenant: Tenant) -> None:
    await set_rule(tenant, "batch")
    creds = await tenant.register("android")
    simple = await push_simple(tenant, creds.delivery_token, "k-1", delivery_type=1)
    assert [r["status_code"] for r in await rows_of(tenant, simple)] == [0]
    await create_template(tenant)
    held = (await broadcast(tenant)).push_result.data
    assert [r["status_code"] for r in await rows_of(tenant, held)] == [-1]
    await set_rule(tenant, "none")
    free = (await broadcast(tenant, msgkey="bc-2")).push_result.data
    assert [r["status_code"] for r in await rows_of(tenant, free)] == [0]


async def test_review_errors(tenant: Tenant, server: Server) -> None:
    from tests.conftest import new_tenant

    bad_rule = await rest(tenant, "PUT", "/v1/review/rule", {"rule": "sometimes"})
    assert bad_rule.status_code == 422
    unknown = await rest(tenant, "POST", "/v1/tasks/424242/approve")
    assert (unknown.status_code, unknown.json()["error"]) == (404, "task_not_found")
    word = await rest(tenant, "POST", "/v1/tasks/abc/reject")
    assert (word.status_code, word.json()["error"]) == (404, "task_not_found")
    await set_rule(tenant, "all")
    task_id = await push_simple(tenant, "u", "k")
    stranger = await new_tenant(server)
    theirs = await rest(stranger, "POST", f"/v1/tasks/{task_id}/approve")
    assert (theirs.status_code, theirs.json()["error"]) == (404, "task_not_found")
    assert [r["status_code"] for r in await rows_of(tenant, task_id)] == [-1]
    not_held = await set_and_push_free(tenant)
    refused = await rest(tenant, "POST", f"/v1/tasks/{not_held}/reject")
    assert (refused.status_code, refused.json()["error"]) == (409, "not_pending")
    assert "not held for review" in refused.json()["message"]


async def set_and_push_free(tenant: Tenant) -> str:
    await set_rule(tenant, "none")
    return await push_simple(tenant, "u2", "k2")


async def test_cli_approval_is_sent_by_the_running_server(tenant: Tenant, server: Server) -> None:
    await set_rule(tenant, "all")
    creds = await tenant.register("android")
    async with tenant.device(creds) as device:
        task_id = await push_simple(tenant, creds.delivery_token, "k-1", delivery_type=1)
        listed = await asyncio.to_thread(
            openmps, "review", "list", tenant.app_id, *server.store_args()
        )
        assert listed.returncode == 0, listed.stderr
        held = json.loads(listed.stdout)
        assert (held["rule"], [t["task_id"] for t in held["held"]]) == ("all", [task_id])
        done = await asyncio.to_thread(
            openmps, "review", "approve", tenant.app_id, task_id, *server.store_args()
        )
        assert done.returncode == 0, done.stderr
        message = await asyncio.wait_for(anext(aiter(device)), 10)
        assert message.task_id == task_id
    twice = await asyncio.to_thread(
        openmps, "review", "reject", tenant.app_id, task_id, *server.store_args()
    )
    assert twice.returncode == 2
    # Regression (trial): the CLI printed "3028 NOT_PENDING"; the detail is what matters.
    assert twice.stderr == f"error: task {task_id} is not waiting for review (approved)\n"


async def test_held_push_expires_like_any_other(tenant: Tenant) -> None:
    await set_rule(tenant, "all")
    response = await tenant.sdk().push_simple_async(
        models.PushSimpleRequest(
            app_id=tenant.app_id,
            workspace_id=tenant.workspace_id,
            delivery_type=3,
            expired_seconds=1,
            title="T",
            content="C",
            target_msgkey=json.dumps({"u": "k"}),
        )
    )
    task_id = response.body.push_result.data

    async def expired() -> bool:
        rows = await rows_of(tenant, task_id)
        return [(r["status_code"], r["final"], r["detail"]) for r in rows] == [
            (-1, True, "expired")
        ]

    await eventually(expired)
    # Regression (trial): the expired task stayed listed as held and could be approved.
    assert (await rest(tenant, "GET", "/v1/review")).json()["held"] == []
    approve = await rest(tenant, "POST", f"/v1/tasks/{task_id}/approve")
    assert (approve.status_code, approve.json()) == (
        409,
        {
            "error": "not_pending",
            "message": f"task {task_id} expired before it was reviewed; its targets are final",
        },
    )
