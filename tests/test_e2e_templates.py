"""Templates end to end through the official SDK: CreateTemplate, GetTemplate, ListTemplatePage,
DeleteTemplate (envelope C), and the pushes made from a template (PushTemplate, PushMultiple,
PushBroadcast; envelope A) received by devices on the own channel."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
from alibabacloud_mpaas20201028 import models

from openmps.client import DeviceClient, PushMessage
from tests.conftest import Tenant, new_tenant
from tests.test_e2e_errors import assert_refused, post, signed_request, stored_counts

GMT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def app_fields(tenant: Tenant) -> dict[str, str]:
    return {"app_id": tenant.app_id, "workspace_id": tenant.workspace_id}


async def create(tenant: Tenant, **fields: Any) -> Any:
    request = models.CreateTemplateRequest(**app_fields(tenant), **fields)
    return (await tenant.sdk().create_template_async(request)).body


async def created(tenant: Tenant, name: str, title: str, content: str, **fields: Any) -> str:
    body = await create(tenant, template_name=name, title=title, content=content, **fields)
    assert (body.success, body.code, body.msg) == (True, "OK", "")
    assert body.data.isdigit()
    return str(body.data)


async def get(tenant: Tenant, **fields: Any) -> Any:
    request = models.GetTemplateRequest(**app_fields(tenant), **fields)
    return (await tenant.sdk().get_template_async(request)).body


async def delete(tenant: Tenant, **fields: Any) -> Any:
    request = models.DeleteTemplateRequest(**app_fields(tenant), **fields)
    return (await tenant.sdk().delete_template_async(request)).body


async def page(tenant: Tenant, **fields: Any) -> Any:
    request = models.ListTemplatePageRequest(**app_fields(tenant), **fields)
    return (await tenant.sdk().list_template_page_async(request)).body


def assert_c_refused(body: Any, code: int, name: str, detail: str) -> None:
    """Envelope C refusal: Success false, Code the numeric code, Msg "NAME: detail"."""
    assert (body.success, body.code, body.msg) == (False, str(code), f"{name}: {detail}")
    assert re.fullmatch(r"[0-9A-F-]{36}", body.request_id)


async def receive(device: DeviceClient) -> PushMessage:
    return await asyncio.wait_for(anext(aiter(device)), 10)


# --- CRUD -------------------------------------------------------------------------------------


async def test_create_then_get_by_id_and_by_name(tenant: Tenant) -> None:
    template_id = await created(
        tenant,
        "prize",
        "Congrats #name#",
        "Congrats #name#, you won #money#",
        desc_info="lottery winners",
        uri="https://shop.test/#name#",
        icon_urls='{"defaultUrl":"https://cdn.test/i.png"}',
        image_urls='{"defaultUrl":"https://cdn.test/m.png"}',
        push_style=1,
        show_style=0,
        jump_action=0,
        variables="ignored",
    )
    by_id = await get(tenant, template_id=template_id)
    by_name = await get(tenant, template_name="prize")
    for body in (by_id, by_name):
        assert (body.success, body.code, body.msg) == (True, "OK", "")
        data = body.data.to_map()
        assert GMT.fullmatch(data.pop("GmtCreate"))
        assert GMT.fullmatch(data.pop("GmtModified"))
        assert data == {
            "Id": template_id,
            "Name": "prize",
            "Title": "Congrats #name#",
            "Content": "Congrats #name#, you won #money#",
            "DescInfo": "lottery winners",
            "Uri": "https://shop.test/#name#",
            "Action": "0",
            "PushStyle": "1",
            "ShowStyle": "0",
            "IconUrls": '{"defaultUrl":"https://cdn.test/i.png"}',
            "ImageUrls": '{"defaultUrl":"https://cdn.test/m.png"}',
            "Variables": "name,money",
        }
    assert by_id.data.gmt_create == by_id.data.gmt_modified == by_name.data.gmt_create


async def test_optional_fields_read_back_as_empty_strings(tenant: Tenant) -> None:
    template_id = await created(tenant, "plain", "Hello", "No placeholders here")
    data = (await get(tenant, template_id=template_id)).data
    assert (data.desc_info, data.uri, data.action, data.push_style, data.show_style) == (
        "",
        "",
        "",
        "",
        "",
    )
    assert (data.icon_urls, data.image_urls, data.variables) == ("", "", "")


async def test_list_template_page_paging(tenant: Tenant) -> None:
    ids = [await created(tenant, f"t{n}", f"Title {n}", f"Content #v{n}#") for n in range(1, 6)]
    pages = [await page(tenant, current_page=p, page_size=2) for p in (1, 2, 3, 4)]
    for number, body in enumerate(pages, start=1):
        assert (body.success, body.code, body.msg) == (True, "OK", "")
        assert (body.current_page, body.page_size, body.total_size) == (number, 2, 5)
    assert [[item.id for item in body.data] for body in pages] == [
        ids[0:2],
        ids[2:4],
        ids[4:5],
        [],
    ]
    first = pages[0].data[0].to_map()
    assert (first["Name"], first["Title"], first["Content"], first["Variables"]) == (
        "t1",
        "Title 1",
        "Content #v1#",
        "v1",
    )
    default = await page(tenant)
    assert (default.current_page, default.page_size, default.total_size) == (1, 10, 5)
    assert [item.name for item in default.data] == ["t1", "t2", "t3", "t4", "t5"]


@pytest.mark.parametrize(
    ("fields", "detail"),
    [
        ({"page_size": 0}, "PageSize must be from 1 to 100, got 0"),
        ({"page_size": 101}, "PageSize must be from 1 to 100, got 101"),
        ({"current_page": 0}, "CurrentPage must be 1 or more, got 0"),
    ],
)
async def test_list_template_page_bounds(
    tenant: Tenant, fields: dict[str, int], detail: str
) -> None:
    body = await page(tenant, **fields)
    assert_c_refused(body, 3028, "INVALID_PARAM", detail)
    assert (body.data, body.total_size) == ([], None)


CREATE_REFUSALS: list[Any] = [
    pytest.param(
        {"template_name": None}, 3037, "TEMPLATE_NAME_NULL", "TemplateName is required", id="3037"
    ),
    pytest.param(
        {"template_name": "a,b"},
        3038,
        "TEMPLATE_NAME_INVALID",
        "TemplateName contains a comma",
        id="3038-comma",
    ),
    pytest.param(
        {"template_name": "n" * 129},
        3038,
        "TEMPLATE_NAME_INVALID",
        "TemplateName is longer than 128 characters",
        id="3038-long",
    ),
    pytest.param(
        {"template_name": "a\x01b"},
        3038,
        "TEMPLATE_NAME_INVALID",
        "TemplateName contains a control or invisible character",
        id="3038-control",
    ),
    pytest.param(
        {"content": ""}, 3039, "TEMPLATE_CONTENT_INVALID", "Content is required", id="3039"
    ),
    pytest.param({"title": None}, 3040, "TEMPLATE_TITLE_INVALID", "Title is required", id="3040"),
    pytest.param(
        {"desc_info": "d" * 1025},
        3041,
        "TEMPLATE_DESC_INFO_INVALID",
        "DescInfo is longer than 1024 characters",
        id="3041",
    ),
    pytest.param(
        {"uri": "https://x.test/" + "u" * 1010},
        3042,
        "TEMPLATE_URI_INVALID",
        "Uri is longer than 1024 characters",
        id="3042",
    ),
    pytest.param(
        {"push_style": 7}, 3028, "INVALID_PARAM", "PushStyle must be 0, 1 or 2, got 7", id="3028"
    ),
    pytest.param(
        {"show_style": 2**40},
        3028,
        "INVALID_PARAM",
        "ShowStyle must be from -2147483648 to 2147483647 (32 bits), got 1099511627776",
        id="3028-show-style",
    ),
]


@pytest.mark.parametrize(("fields", "code", "name", "detail"), CREATE_REFUSALS)
async def test_create_refused(
    tenant: Tenant, fields: dict[str, Any], code: int, name: str, detail: str
) -> None:
    request: dict[str, Any] = {"template_name": "t", "title": "T", "content": "C"}
    request.update(fields)
    body = await create(tenant, **request)
    assert_c_refused(body, code, name, detail)
    assert body.data is None
    assert (await page(tenant)).total_size == 0


async def test_duplicate_name_is_3036(tenant: Tenant) -> None:
    first = await created(tenant, "welcome", "Hi", "Welcome")
    body = await create(tenant, template_name="welcome", title="Other", content="Other")
    assert_c_refused(
        body, 3036, "TEMPLATE_ALREADY_EXIST", "this app already has a template named 'welcome'"
    )
    assert (await get(tenant, template_name="welcome")).data.id == first
    assert (await page(tenant)).total_size == 1


async def test_delete_then_get_is_3022(tenant: Tenant) -> None:
    by_name = await created(tenant, "gone", "Hi", "Bye")
    by_id = await created(tenant, "also-gone", "Hi", "Bye")
    kept = await created(tenant, "kept", "Hi", "Stay")
    deleted = await delete(tenant, template_name="gone")
    assert (deleted.success, deleted.code, deleted.msg) == (True, "OK", "")
    deleted = await delete(tenant, template_id=by_id)
    assert (deleted.success, deleted.code, deleted.msg) == (True, "OK", "")

    assert_c_refused(
        await get(tenant, template_name="gone"),
        3022,
        "TEMPLATE_NOT_EXIST",
        "this app has no template with TemplateName 'gone'",
    )
    assert_c_refused(
        await get(tenant, template_id=by_name),
        3022,
        "TEMPLATE_NOT_EXIST",
        f"this app has no template with TemplateId '{by_name}'",
    )
    assert_c_refused(
        await delete(tenant, template_id=by_id),
        3022,
        "TEMPLATE_NOT_EXIST",
        f"this app has no template with TemplateId '{by_id}'",
    )
    listed = await page(tenant)
    assert ([item.id for item in listed.data], listed.total_size) == ([kept], 1)


async def test_get_and_delete_need_an_id_or_a_name(tenant: Tenant) -> None:
    for body in (await get(tenant), await delete(tenant)):
        assert_c_refused(body, 3037, "TEMPLATE_NAME_NULL", "TemplateId or TemplateName is required")


async def test_template_of_another_app_is_not_found(tenant: Tenant) -> None:
    other = await new_tenant(tenant.server)
    template_id = await created(other, "theirs", "Hi", "Theirs")
    assert_c_refused(
        await get(tenant, template_id=template_id),
        3022,
        "TEMPLATE_NOT_EXIST",
        f"this app has no template with TemplateId '{template_id}'",
    )
    assert_c_refused(
        await delete(tenant, template_name="theirs"),
        3022,
        "TEMPLATE_NOT_EXIST",
        "this app has no template with TemplateName 'theirs'",
    )
    assert (await get(other, template_id=template_id)).data.name == "theirs"


# --- PushTemplate -----------------------------------------------------------------------------


def push_template_request(tenant: Tenant, **overrides: Any) -> Any:
    fields: dict[str, Any] = {
        **app_fields(tenant),
        "delivery_type": 1,
        "expired_seconds": 300,
        "template_name": "prize",
        "template_key_value": json.dumps({"name": "Zhang", "money": "200"}),
        "target_msgkey": json.dumps({"device-token": "key-1"}),
    }
    fields.update(overrides)
    return models.PushTemplateRequest(**fields)


async def test_push_template_device_receives_rendered_message(tenant: Tenant) -> None:
    await created(
        tenant,
        "prize",
        "Congrats #name#",
        "Congrats #name#, you won #money#",
        uri="https://shop.test/prize?who=#name#",
        jump_action=0,
        push_style=1,
    )
    creds = await tenant.register("android")
    sdk = tenant.sdk()
    async with tenant.device(creds) as device:
        response = await sdk.push_template_async(
            push_template_request(
                tenant,
                template_key_value=json.dumps({"name": "Zhang", "money": 200, "unused": "ignored"}),
                target_msgkey=json.dumps({creds.delivery_token: "tpl-0001"}),
                extended_params=json.dumps({"k": "v"}),
                task_name="prize draw",
            )
        )
        body = response.body
        assert (body.result_code, body.result_message) == ("OK", "")
        assert (body.push_result.success, body.push_result.result_msg) == (True, "")
        task_id = body.push_result.data
        assert task_id.isdigit()
        message = await receive(device)
    assert (message.msg_key, message.task_id, message.title, message.content) == (
        "tpl-0001",
        task_id,
        "Congrats Zhang",
        "Congrats Zhang, you won 200",
    )
    assert (message.uri, message.push_action, message.extras) == (
        "https://shop.test/prize?who=Zhang",
        0,
        {"k": "v"},
    )


async def test_push_template_push_action_comes_from_the_template_unless_given(
    tenant: Tenant,
) -> None:
    await created(tenant, "open", "Open", "Open #what#", jump_action=1)
    creds = await tenant.register("android")
    sdk = tenant.sdk()
    async with tenant.device(creds) as device:
        for key, push_action in (("k-1", None), ("k-2", 0)):
            response = await sdk.push_template_async(
                push_template_request(
                    tenant,
                    template_name="open",
                    template_key_value=json.dumps({"what": key}),
                    target_msgkey=json.dumps({creds.delivery_token: key}),
                    push_action=push_action,
                )
            )
            assert response.body.result_code == "OK"
        got = sorted([await receive(device), await receive(device)], key=lambda m: m.msg_key)
    assert [(m.msg_key, m.content, m.push_action) for m in got] == [
        ("k-1", "Open k-1", 1),
        ("k-2", "Open k-2", 0),
    ]


PUSH_TEMPLATE_REFUSALS: list[Any] = [
    pytest.param(
        {"template_name": "nope"},
        3022,
        "TEMPLATE_NOT_EXIST",
        "this app has no template with TemplateName 'nope'",
        id="3022",
    ),
    pytest.param(
        {"template_key_value": json.dumps({"name": "Zhang"})},
        3023,
        "TEMPLATEKV_NOT_ENOUGH",
        "TemplateKeyValue has no value for the placeholder money of template 'prize'",
        id="3023",
    ),
    pytest.param(
        {"template_key_value": None},
        3023,
        "TEMPLATEKV_NOT_ENOUGH",
        "TemplateKeyValue has no value for the placeholders name, money of template 'prize'",
        id="3023-none",
    ),
    pytest.param(
        {"template_name": None}, 3025, "NEED_TEMPLATE", "TemplateName is required", id="3025"
    ),
    pytest.param(
        {"template_key_value": "{name: 1}"},
        3028,
        "INVALID_PARAM",
        "TemplateKeyValue must be a JSON object of string keys to string, number or boolean "
        "values: invalid JSON at character 2: Expecting property name enclosed in double quotes",
        id="3028-json",
    ),
    pytest.param(
        {"target_msgkey": json.dumps({f"d{n}": f"k{n}" for n in range(11)})},
        3029,
        "SINGLE_PUSH_TARGET_TOO_MUCH",
        "TargetMsgkey has 11 targets; at most 10",
        id="3029",
    ),
]


@pytest.mark.parametrize(("overrides", "code", "name", "detail"), PUSH_TEMPLATE_REFUSALS)
async def test_push_template_refused_and_nothing_stored(
    tenant: Tenant, overrides: dict[str, Any], code: int, name: str, detail: str
) -> None:
    await created(tenant, "prize", "Congrats #name#", "You won #money#")
    response = await tenant.sdk().push_template_async(push_template_request(tenant, **overrides))
    assert_refused(response.body, code, name, detail)
    assert await stored_counts(tenant) == (0, 0, 0)


async def test_push_template_after_delete_is_3022(tenant: Tenant) -> None:
    await created(tenant, "prize", "Congrats #name#", "You won #money#")
    assert (await delete(tenant, template_name="prize")).success is True
    response = await tenant.sdk().push_template_async(push_template_request(tenant))
    assert_refused(
        response.body,
        3022,
        "TEMPLATE_NOT_EXIST",
        "this app has no template with TemplateName 'prize'",
    )


# --- PushMultiple -----------------------------------------------------------------------------


def target_msg(
    target: str,
    key: str,
    values: dict[str, Any] | None = None,
    extras: dict[str, str] | None = None,
) -> Any:
    return models.PushMultipleRequestTargetMsg(
        target=target,
        msg_key=key,
        template_key_value=None if values is None else json.dumps(values),
        extended_params=None if extras is None else json.dumps(extras),
    )


def push_multiple_request(tenant: Tenant, targets: list[Any], **overrides: Any) -> Any:
    fields: dict[str, Any] = {
        **app_fields(tenant),
        "delivery_type": 1,
        "expired_seconds": 300,
        "template_name": "bill",
        "target_msg": targets,
    }
    fields.update(overrides)
    return models.PushMultipleRequest(**fields)


async def test_push_multiple_each_target_gets_its_own_content(tenant: Tenant) -> None:
    await created(
        tenant, "bill", "Bill for #name#", "#name#, you owe #amount#", uri="app://bill/#name#"
    )
    first, second = await tenant.register("android"), await tenant.register("android")
    request = push_multiple_request(
        tenant,
        [
            target_msg(first.delivery_token, "m-1", {"name": "Ann", "amount": "10"}, {"o": "1"}),
            target_msg(
                second.delivery_token,
                "m-2",
                {"name": "Bob", "amount": 20, "unused": "x"},
                {"u": "own"},
            ),
        ],
        extended_params=json.dumps({"u": "unified", "all": "yes"}),
        task_name="monthly bills",
    )
    async with tenant.device(first) as one, tenant.device(second) as two:
        response = await tenant.sdk().push_multiple_async(request)
        body = response.body
        assert (body.result_code, body.result_message, body.push_result.success) == (
            "OK",
            "",
            True,
        )
        task_id = body.push_result.data
        assert task_id.isdigit()
        got = [await receive(one), await receive(two)]
    assert [(m.msg_key, m.task_id, m.title, m.content, m.uri, m.extras) for m in got] == [
        (
            "m-1",
            task_id,
            "Bill for Ann",
            "Ann, you owe 10",
            "app://bill/Ann",
            {"u": "unified", "all": "yes", "o": "1"},
        ),
        (
            "m-2",
            task_id,
            "Bill for Bob",
            "Bob, you owe 20",
            "app://bill/Bob",
            {"u": "own", "all": "yes"},
        ),
    ]


async def test_push_multiple_to_users(tenant: Tenant) -> None:
    await created(tenant, "bill", "Hi #name#", "Hello #name#")
    creds = await tenant.register("ios")
    sdk = tenant.sdk()
    bound = await sdk.push_bind_async(
        models.PushBindRequest(
            **app_fields(tenant), delivery_token=creds.delivery_token, os_type=2, user_id="carol"
        )
    )
    assert bound.body.result_code == "OK"
    async with tenant.device(creds) as device:
        response = await sdk.push_multiple_async(
            push_multiple_request(
                tenant,
                [
                    target_msg("carol", "u-1", {"name": "Carol"}),
                    target_msg("dave", "u-2", {"name": "Dave"}),
                ],
                delivery_type=3,
            )
        )
        assert response.body.result_code == "OK"
        message = await receive(device)
    assert (message.msg_key, message.title, message.content) == ("u-1", "Hi Carol", "Hello Carol")


def _many(count: int) -> list[Any]:
    return [target_msg(f"d{n}", f"k{n}", {"name": "x"}) for n in range(count)]


PUSH_MULTIPLE_REFUSALS: list[Any] = [
    pytest.param(
        {"target_msg": _many(101)},
        3029,
        "SINGLE_PUSH_TARGET_TOO_MUCH",
        "TargetMsg has 101 targets; at most 100",
        id="3029",
    ),
    pytest.param(
        {"target_msg": [target_msg("d1", "k1", {"name": "x"}, {f"e{n}": "v" for n in range(10)})]},
        3049,
        "MULTIPLE_INNER_EXTEND_PARAM_TO_MUCH",
        "the ExtendedParams of target 'd1' have 10 keys; fewer than 10 allowed",
        id="3049",
    ),
    pytest.param(
        {
            "target_msg": [
                target_msg("d1", "k1", {"name": "x"}),
                target_msg("d1", "k2", {"name": "y"}),
            ]
        },
        3028,
        "INVALID_PARAM",
        "TargetMsg.1 and TargetMsg.2 have the same Target 'd1'; list each target once",
        id="3028-twice",
    ),
    pytest.param(
        {
            "target_msg": [
                target_msg("d1", "k1", {"name": "x"}),
                models.PushMultipleRequestTargetMsg(target="d2", template_key_value='{"name":"y"}'),
            ]
        },
        3028,
        "INVALID_PARAM",
        "TargetMsg.2 has no MsgKey",
        id="3028-no-msgkey",
    ),
    pytest.param(
        {"target_msg": [models.PushMultipleRequestTargetMsg(msg_key="k1")]},
        3028,
        "INVALID_PARAM",
        "TargetMsg.1 has no Target",
        id="3028-no-target",
    ),
    pytest.param(
        {"target_msg": [target_msg("d1", "k1", {"name": "x"}), target_msg("d2", "k2", {})]},
        3023,
        "TEMPLATEKV_NOT_ENOUGH",
        "TargetMsg.2.TemplateKeyValue has no value for the placeholder name of template 'bill'",
        id="3023",
    ),
    pytest.param(
        {"template_name": "nope"},
        3022,
        "TEMPLATE_NOT_EXIST",
        "this app has no template with TemplateName 'nope'",
        id="3022",
    ),
    pytest.param(
        {"template_name": None}, 3025, "NEED_TEMPLATE", "TemplateName is required", id="3025"
    ),
    pytest.param(
        {"target_msg": None}, 3021, "TOKEN_OR_USERID_NULL", "TargetMsg has no target", id="3021"
    ),
]


@pytest.mark.parametrize(("overrides", "code", "name", "detail"), PUSH_MULTIPLE_REFUSALS)
async def test_push_multiple_refused_and_nothing_stored(
    tenant: Tenant, overrides: dict[str, Any], code: int, name: str, detail: str
) -> None:
    await created(tenant, "bill", "Hi #name#", "Hello #name#")
    request = push_multiple_request(tenant, [target_msg("d1", "k1", {"name": "x"})], **overrides)
    response = await tenant.sdk().push_multiple_async(request)
    assert_refused(response.body, code, name, detail)
    assert await stored_counts(tenant) == (0, 0, 0)


async def test_push_multiple_accepts_100_targets_and_nine_own_extras(tenant: Tenant) -> None:
    await created(tenant, "bill", "Hi #name#", "Hello #name#")
    own = {f"e{n}": "v" for n in range(9)}
    targets = [*_many(99), target_msg("d99", "k99", {"name": "x"}, own)]
    response = await tenant.sdk().push_multiple_async(push_multiple_request(tenant, targets))
    assert (response.body.result_code, response.body.push_result.success) == ("OK", True)
    assert await stored_counts(tenant) == (1, 100, 100)


async def test_push_multiple_target_msg_as_json_or_nested_fields(tenant: Tenant) -> None:
    # Other SDKs may send TargetMsg as one JSON array, or a map field flattened with dots.
    await created(tenant, "bill", "Hi #name#", "Hello #name#")
    base = {
        "AppId": tenant.app_id,
        "WorkspaceId": tenant.workspace_id,
        "DeliveryType": "3",
        "ExpiredSeconds": "300",
        "TemplateName": "bill",
    }
    forms = [
        {
            "TargetMsg": json.dumps(
                [
                    {"Target": "u1", "MsgKey": "j1", "TemplateKeyValue": {"name": "A"}},
                    {"Target": "u2", "MsgKey": "j2", "TemplateKeyValue": '{"name":"B"}'},
                ]
            )
        },
        {
            "TargetMsg.1.Target": "u3",
            "TargetMsg.1.MsgKey": "n1",
            "TargetMsg.1.TemplateKeyValue.name": "C",
            "TargetMsg.1.ExtendedParams.e": "1",
        },
    ]
    for form in forms:
        headers, body = signed_request(tenant, "PushMultiple", {**base, **form})
        response = await post(tenant, headers, body)
        answer = response.json()
        assert (response.status_code, answer["ResultCode"], answer["PushResult"]["Success"]) == (
            200,
            "OK",
            True,
        )
    assert await stored_counts(tenant) == (2, 3, 3)

    headers, body = signed_request(tenant, "PushMultiple", {**base, "TargetMsg": '{"a": 1}'})
    answer = (await post(tenant, headers, body)).json()
    assert (answer["ResultCode"], answer["PushResult"]["ResultMsg"]) == (
        "3028",
        "TargetMsg must be a list: TargetMsg.1.Target, TargetMsg.1.MsgKey, ...",
    )


# --- PushBroadcast ----------------------------------------------------------------------------


def broadcast_request(tenant: Tenant, **overrides: Any) -> Any:
    fields: dict[str, Any] = {
        **app_fields(tenant),
        "delivery_type": 1,
        "expired_seconds": 300,
        "msgkey": "news-1",
        "template_name": "news",
        "template_key_value": json.dumps({"topic": "release"}),
    }
    fields.update(overrides)
    return models.PushBroadcastRequest(**fields)


async def test_push_broadcast_by_user_dimension_is_3030(tenant: Tenant) -> None:
    response = await tenant.sdk().push_broadcast_async(broadcast_request(tenant, delivery_type=3))
    assert_refused(
        response.body,
        3030,
        "BROADCAST_ONLY_SUPPORT_BY_DEVICE",
        "a broadcast goes to devices, not users: DeliveryType 1 (Android) or 2 (iOS)",
    )
    assert await stored_counts(tenant) == (0, 0, 0)


@pytest.mark.parametrize(
    ("overrides", "code", "name", "detail"),
    [
        (
            {"template_name": "nope"},
            3022,
            "TEMPLATE_NOT_EXIST",
            "this app has no template with TemplateName 'nope'",
        ),
        (
            {"template_key_value": None},
            3023,
            "TEMPLATEKV_NOT_ENOUGH",
            "TemplateKeyValue has no value for the placeholder topic of template 'news'",
        ),
        ({"template_name": None}, 3025, "NEED_TEMPLATE", "TemplateName is required"),
    ],
)
async def test_push_broadcast_template_refusals(
    tenant: Tenant, overrides: dict[str, Any], code: int, name: str, detail: str
) -> None:
    await created(tenant, "news", "News", "About #topic#")
    response = await tenant.sdk().push_broadcast_async(broadcast_request(tenant, **overrides))
    assert_refused(response.body, code, name, detail)
    assert await stored_counts(tenant) == (0, 0, 0)


async def test_push_broadcast_bound_devices_receive_the_rendered_template(tenant: Tenant) -> None:
    await created(tenant, "news", "News: #topic#", "Read about #topic#", uri="app://news/#topic#")
    bound, other_platform = await tenant.register("android"), await tenant.register("ios")
    sdk = tenant.sdk()
    for creds, os_type in ((bound, 1), (other_platform, 2)):
        response = await sdk.push_bind_async(
            models.PushBindRequest(
                **app_fields(tenant),
                delivery_token=creds.delivery_token,
                os_type=os_type,
                user_id="erin",
            )
        )
        assert response.body.result_code == "OK"
    async with tenant.device(bound) as device:
        response = await sdk.push_broadcast_async(
            broadcast_request(tenant, extended_params=json.dumps({"k": "v"}), push_status=0)
        )
        body = response.body
        assert (body.result_code, body.result_message, body.push_result.success) == (
            "OK",
            "",
            True,
        )
        task_id = body.push_result.data
        assert task_id.isdigit()
        message = await receive(device)
    assert (message.msg_key, message.task_id, message.title, message.content) == (
        "news-1",
        task_id,
        "News: release",
        "Read about release",
    )
    assert (message.uri, message.extras) == ("app://news/release", {"k": "v"})
