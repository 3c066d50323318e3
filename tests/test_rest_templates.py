"""The REST API of templates and template pushes (openmps.rest_templates), with httpx against a
real server; devices receive on the own channel."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
from alibabacloud_mpaas20201028 import models

from tests.conftest import Tenant

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?\+00:00")


async def call(tenant: Tenant, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=tenant.server.api_url) as http:
        return await http.request(
            method,
            path,
            auth=(tenant.creds.access_key_id, tenant.creds.access_key_secret),
            **kwargs,
        )


async def make(tenant: Tenant, name: str, title: str, content: str, **fields: Any) -> str:
    body = {"name": name, "title": title, "content": content, **fields}
    response = await call(tenant, "POST", "/v1/templates", json=body)
    assert response.status_code == 201, response.text
    template_id: str = response.json()["id"]
    return template_id


def without_times(template: dict[str, Any]) -> dict[str, Any]:
    out = dict(template)
    assert ISO.fullmatch(out.pop("created_at"))
    assert ISO.fullmatch(out.pop("modified_at"))
    return out


async def test_create_get_list_delete(tenant: Tenant) -> None:
    response = await call(
        tenant,
        "POST",
        "/v1/templates",
        json={
            "name": "prize",
            "title": "Congrats #name#",
            "content": "#name#, you won #money#",
            "uri": "app://prize/#name#",
            "push_style": 1,
            "jump_action": 0,
        },
    )
    assert response.status_code == 201
    created = response.json()
    assert created["id"].isdigit()
    expected = {
        "id": created["id"],
        "name": "prize",
        "title": "Congrats #name#",
        "content": "#name#, you won #money#",
        "desc_info": None,
        "uri": "app://prize/#name#",
        "icon_urls": None,
        "image_urls": None,
        "push_style": 1,
        "show_style": None,
        "jump_action": 0,
        "variables": ["name", "money"],
    }
    assert without_times(created) == expected

    got = await call(tenant, "GET", "/v1/templates/prize")
    assert (got.status_code, without_times(got.json())) == (200, expected)
    assert got.json()["created_at"] == created["created_at"]

    listed = await call(tenant, "GET", "/v1/templates")
    assert listed.status_code == 200
    page = listed.json()
    assert (page["page"], page["page_size"], page["total"]) == (1, 10, 1)
    assert [without_times(t) for t in page["templates"]] == [expected]

    removed = await call(tenant, "DELETE", "/v1/templates/prize")
    assert (removed.status_code, removed.json()) == (
        200,
        {"id": created["id"], "name": "prize", "removed": True},
    )
    gone = await call(tenant, "GET", "/v1/templates/prize")
    assert (gone.status_code, gone.json()) == (
        404,
        {
            "error": "template_not_exist",
            "message": "this app has no template with TemplateName 'prize'",
            "code": 3022,
        },
    )
    again = await call(tenant, "DELETE", "/v1/templates/prize")
    assert (again.status_code, again.json()["error"]) == (404, "template_not_exist")


async def test_name_with_a_slash_and_spaces_in_the_path(tenant: Tenant) -> None:
    await make(tenant, "promo/spring sale", "Spring", "Sale")
    got = await call(tenant, "GET", "/v1/templates/promo%2Fspring%20sale")
    assert (got.status_code, got.json()["name"]) == (200, "promo/spring sale")
    removed = await call(tenant, "DELETE", "/v1/templates/promo/spring sale")
    assert (removed.status_code, removed.json()["removed"]) == (200, True)


async def test_paging(tenant: Tenant) -> None:
    for n in range(1, 6):
        await make(tenant, f"t{n}", "T", "C")
    names = []
    for number in (1, 2, 3, 4):
        response = await call(
            tenant, "GET", "/v1/templates", params={"page": number, "page_size": 2}
        )
        body = response.json()
        assert (response.status_code, body["page"], body["page_size"], body["total"]) == (
            200,
            number,
            2,
            5,
        )
        names.append([t["name"] for t in body["templates"]])
    assert names == [["t1", "t2"], ["t3", "t4"], ["t5"], []]

    bad = await call(tenant, "GET", "/v1/templates", params={"page_size": 101})
    assert (bad.status_code, bad.json()) == (
        400,
        {
            "error": "invalid_param",
            "message": "PageSize must be from 1 to 100, got 101",
            "code": 3028,
        },
    )
    bad = await call(tenant, "GET", "/v1/templates", params={"page": 0})
    assert (bad.status_code, bad.json()["message"]) == (400, "CurrentPage must be 1 or more, got 0")
    not_int = await call(tenant, "GET", "/v1/templates", params={"page": "x"})
    assert not_int.status_code == 422


async def test_create_refusals(tenant: Tenant) -> None:
    await make(tenant, "taken", "T", "C")
    cases = [
        (
            {"name": "taken", "title": "T", "content": "C"},
            "template_already_exist",
            "this app already has a template named 'taken'",
            3036,
        ),
        ({"name": " ", "title": "T", "content": "C"}, "template_name_null", None, 3037),
        ({"name": "a,b", "title": "T", "content": "C"}, "template_name_invalid", None, 3038),
        ({"name": "n", "title": "T", "content": ""}, "template_content_invalid", None, 3039),
        ({"name": "n", "title": "", "content": "C"}, "template_title_invalid", None, 3040),
    ]
    for body, error, message, code in cases:
        response = await call(tenant, "POST", "/v1/templates", json=body)
        assert response.status_code == 400
        answer = response.json()
        assert (answer["error"], answer["code"]) == (error, code)
        if message is not None:
            assert answer["message"] == message
    for shape in (
        {"name": "n", "title": "T"},
        {"name": "n", "title": "T", "content": "C", "unknown": 1},
        {"name": "n", "title": "T", "content": "C", "push_style": "1"},
    ):
        response = await call(tenant, "POST", "/v1/templates", json=shape)
        assert response.status_code == 422
    listed = await call(tenant, "GET", "/v1/templates")
    assert listed.json()["total"] == 1


async def test_auth_required(tenant: Tenant) -> None:
    async with httpx.AsyncClient(base_url=tenant.server.api_url) as http:
        responses = [
            await http.get("/v1/templates"),
            await http.post("/v1/templates", json={"name": "n", "title": "T", "content": "C"}),
            await http.get("/v1/templates/n"),
            await http.delete("/v1/templates/n"),
            await http.post("/v1/pushes/template", json={}),
            await http.post("/v1/pushes/multiple", json={}),
        ]
    assert [r.status_code for r in responses] == [401] * 6
    assert {r.json()["error"] for r in responses} == {"unauthorized"}


async def test_push_template_device_receives_rendered(tenant: Tenant) -> None:
    await make(tenant, "prize", "Congrats #name#", "#name#, you won #money#", jump_action=1)
    creds = await tenant.register("android")
    async with tenant.device(creds) as device:
        response = await call(
            tenant,
            "POST",
            "/v1/pushes/template",
            json={
                "template_name": "prize",
                "template_values": {"name": "Zhang", "money": "200", "unused": "x"},
                "delivery_type": 1,
                "targets": {creds.delivery_token: "r-1"},
                "expired_seconds": 300,
                "extras": {"k": "v"},
            },
        )
        assert response.status_code == 201
        task_id = response.json()["task_id"]
        assert response.json() == {"task_id": task_id}
        assert task_id.isdigit()
        message = await asyncio.wait_for(anext(aiter(device)), 10)
    assert (message.msg_key, message.task_id, message.title, message.content) == (
        "r-1",
        task_id,
        "Congrats Zhang",
        "Zhang, you won 200",
    )
    assert (message.push_action, message.extras) == (1, {"k": "v"})


async def test_push_template_refusals(tenant: Tenant) -> None:
    await make(tenant, "prize", "Congrats #name#", "You won #money#")
    base = {
        "template_name": "prize",
        "template_values": {"name": "Zhang", "money": "1"},
        "delivery_type": 3,
        "targets": {"alice": "k-1"},
        "expired_seconds": 300,
    }
    cases: list[tuple[dict[str, Any], int, dict[str, Any]]] = [
        (
            {"template_name": "nope"},
            404,
            {
                "error": "template_not_exist",
                "message": "this app has no template with TemplateName 'nope'",
                "code": 3022,
            },
        ),
        (
            {"template_values": {"name": "Zhang"}},
            400,
            {
                "error": "templatekv_not_enough",
                "message": "TemplateKeyValue has no value for the placeholder money of "
                "template 'prize'",
                "code": 3023,
            },
        ),
        (
            {"template_name": ""},
            400,
            {"error": "need_template", "message": "TemplateName is required", "code": 3025},
        ),
        (
            {"delivery_type": 9},
            400,
            {
                "error": "delivery_type_not_supported",
                "message": "DeliveryType 9 is unknown; use 1 (Android device), 2 (iOS device) "
                "or 3 (user id)",
                "code": 3009,
            },
        ),
    ]
    for change, status, answer in cases:
        response = await call(tenant, "POST", "/v1/pushes/template", json={**base, **change})
        assert (response.status_code, response.json()) == (status, answer)
    shape = await call(tenant, "POST", "/v1/pushes/template", json={**base, "targets": ["a"]})
    assert shape.status_code == 422


async def test_push_multiple_each_target_its_own_content(tenant: Tenant) -> None:
    await make(tenant, "bill", "Bill for #name#", "#name# owes #amount#")
    first, second = await tenant.register("android"), await tenant.register("ios")
    sdk = tenant.sdk()
    bound = await sdk.push_bind_async(
        models.PushBindRequest(
            app_id=tenant.app_id,
            workspace_id=tenant.workspace_id,
            delivery_token=second.delivery_token,
            os_type=2,
            user_id="bob",
        )
    )
    assert bound.body.result_code == "OK"
    await make(tenant, "bill-user", "Bill for #name#", "#name# owes #amount#")
    async with tenant.device(first) as one, tenant.device(second) as two:
        answers = []
        for delivery_type, template, target, key, name, amount, extras in (
            (1, "bill", first.delivery_token, "b-1", "Ann", "10", {"o": "1"}),
            (3, "bill-user", "bob", "b-2", "Bob", "20", None),
        ):
            response = await call(
                tenant,
                "POST",
                "/v1/pushes/multiple",
                json={
                    "template_name": template,
                    "delivery_type": delivery_type,
                    "expired_seconds": 300,
                    "extras": {"all": "yes"},
                    "target_msg": [
                        {
                            "target": target,
                            "msg_key": key,
                            "template_values": {"name": name, "amount": amount},
                            "extras": extras,
                        }
                    ],
                },
            )
            assert response.status_code == 201
            assert list(response.json()) == ["task_id"]
            answers.append(response.json()["task_id"])
        got = [
            await asyncio.wait_for(anext(aiter(one)), 10),
            await asyncio.wait_for(anext(aiter(two)), 10),
        ]
    assert [(m.msg_key, m.task_id, m.title, m.content, m.extras) for m in got] == [
        ("b-1", answers[0], "Bill for Ann", "Ann owes 10", {"all": "yes", "o": "1"}),
        ("b-2", answers[1], "Bill for Bob", "Bob owes 20", {"all": "yes"}),
    ]


async def test_push_multiple_refusals(tenant: Tenant) -> None:
    await make(tenant, "bill", "Hi #name#", "Hello #name#")

    def entry(n: int, **fields: Any) -> dict[str, Any]:
        return {
            "target": f"u{n}",
            "msg_key": f"k{n}",
            "template_values": {"name": "x"},
            **fields,
        }

    base: dict[str, Any] = {"template_name": "bill", "delivery_type": 3, "expired_seconds": 300}
    cases: list[tuple[list[dict[str, Any]], int, str, str]] = [
        (
            [entry(n) for n in range(101)],
            3029,
            "single_push_target_too_much",
            "TargetMsg has 101 targets; at most 100",
        ),
        (
            [entry(1, extras={f"e{n}": "v" for n in range(10)})],
            3049,
            "multiple_inner_extend_param_to_much",
            "the ExtendedParams of target 'u1' have 10 keys; fewer than 10 allowed",
        ),
        (
            [entry(1), entry(1, msg_key="k2")],
            3028,
            "invalid_param",
            "TargetMsg.1 and TargetMsg.2 have the same Target 'u1'; list each target once",
        ),
        (
            [entry(1), entry(2, template_values={})],
            3023,
            "templatekv_not_enough",
            "TargetMsg.2.TemplateKeyValue has no value for the placeholder name of template 'bill'",
        ),
        ([], 3021, "token_or_userid_null", "TargetMsg has no target"),
    ]
    for targets, code, error, message in cases:
        response = await call(
            tenant, "POST", "/v1/pushes/multiple", json={**base, "target_msg": targets}
        )
        assert (response.status_code, response.json()) == (
            400,
            {"error": error, "message": message, "code": code},
        )
    missing = await call(
        tenant,
        "POST",
        "/v1/pushes/multiple",
        json={**base, "target_msg": [{"target": "u1"}]},
    )
    assert missing.status_code == 422
