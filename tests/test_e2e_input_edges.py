"""Inputs at the edge of what the front doors read, found by a new-user trial: JSON escapes that
decode to text that is not valid Unicode (a lone surrogate such as ``"\\ud800"``), numbers JSON
cannot carry (``NaN``, ``Infinity``, ``1e400``) and ids written with other digits than ASCII's.

Each used to answer HTTP 500, or to store what later reads could not answer, or to find the
wrong thing. Bodies are sent as raw text: the escapes are what the client wrote.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from alibabacloud_mpaas20201028 import models

from tests.conftest import Tenant
from tests.test_e2e_errors import assert_refused, post, signed_request, stored_counts
from tests.test_e2e_templates import assert_c_refused, created, get

LONE = (
    "(a lone surrogate \\ud800: a \\uD800 to \\uDFFF escape that is not half of a surrogate pair)"
)
TOKEN = "TOKEN"  # replaced by a registered device's delivery token


def not_unicode(where: str, *, key: bool = False, lone: str = LONE) -> dict[str, str]:
    """The REST refusal of a lone surrogate at ``where``."""
    verb = "has a key that is" if key else "is"
    return {"error": "invalid_json", "message": f"{where} {verb} not valid Unicode {lone}"}


def not_finite(where: str, number: str) -> dict[str, str]:
    if number in ("NaN", "Infinity", "-Infinity"):
        message = f"{where} is {number}, which is not JSON; send a finite number"
    else:
        message = f"{where} is {number}, a number out of the range of a double (about 1.8e308)"
    return {"error": "invalid_json", "message": message}


async def rest(
    tenant: Tenant, method: str, path: str, raw: str | None = None, *, auth: bool = True
) -> httpx.Response:
    """One REST call with ``raw`` as the JSON body, byte for byte."""
    credentials = (tenant.creds.access_key_id, tenant.creds.access_key_secret) if auth else None
    headers = {"content-type": "application/json"} if raw is not None else None
    async with httpx.AsyncClient(base_url=tenant.server.api_url, auth=credentials) as http:
        return await http.request(
            method, path, content=None if raw is None else raw.encode(), headers=headers
        )


PUSH = '"delivery_type":1,"targets":{"TOKEN":"k1"},"expired_seconds":300'
TEMPLATE_PUSH = f'{PUSH},"template_name":"t"'

# (method, path, body, answer): the inputs of the trial, each refused 422 before anything reads
# it; "TOKEN" is a registered device's token.
REFUSED: list[Any] = [
    pytest.param(
        "POST",
        "/v1/devices/TOKEN/report",
        '{"os_type":1,"model":"\\ud800"}',
        not_unicode("model"),
        id="report-model",
    ),
    pytest.param(
        "POST",
        "/v1/devices/TOKEN/report",
        '{"os_type":1,"third_channel":6,"third_channel_device_token":"\\ud800"}',
        not_unicode("third_channel_device_token"),
        id="report-third-token",
    ),
    pytest.param(
        "POST",
        "/v1/pushes",
        f'{{{PUSH},"title":"\\ud800","content":"c"}}',
        not_unicode("title"),
        id="push-title",
    ),
    pytest.param(
        "POST",
        "/v1/pushes",
        f'{{{PUSH},"title":"t","content":"c","task_name":"\\ud800"}}',
        not_unicode("task_name"),
        id="push-task-name",
    ),
    pytest.param(
        "POST",
        "/v1/pushes",
        f'{{{PUSH},"title":"t","content":"c","extras":{{"\\udc00":"v"}}}}',
        not_unicode("extras", key=True, lone=LONE.replace("\\ud800:", "\\udc00:")),
        id="push-extras-key",
    ),
    pytest.param(
        "POST",
        "/v1/templates",
        '{"name":"t","title":"T","content":"\\ud800"}',
        not_unicode("content"),
        id="template-content",
    ),
    pytest.param(
        "POST",
        "/v1/pushes/template",
        f'{{{TEMPLATE_PUSH},"template_values":{{"name":"\\ud800"}}}}',
        not_unicode("template_values.name"),
        id="template-values",
    ),
    pytest.param(
        "POST",
        "/v1/bindings",
        '{"delivery_token":"TOKEN","user_id":"\\ud800","os_type":1}',
        not_unicode("user_id"),
        id="bind-user-id",
    ),
    pytest.param(
        "POST",
        "/v1/bindings",
        '{"delivery_token":"TOKEN","user_id":"u1","os_type":1,"phone_number":"\\ud800"}',
        not_unicode("phone_number"),
        id="bind-phone",
    ),
    pytest.param(
        "POST",
        "/v1/messages/revoke",
        '{"message_id":"\\ud800","target_id":"TOKEN"}',
        not_unicode("message_id"),
        id="revoke-message-id",
    ),
    pytest.param(
        "PUT", "/v1/review/rule", '{"rule":"\\ud800"}', not_unicode("rule"), id="review-rule"
    ),
    pytest.param(
        "POST",
        "/v1/pushes",
        f'{{{PUSH.replace("300", "NaN")},"title":"t","content":"c"}}',
        not_finite("expired_seconds", "NaN"),
        id="nan",
    ),
    pytest.param(
        "POST",
        "/v1/pushes",
        f'{{{PUSH.replace(":1,", ":1e400,", 1)},"title":"t","content":"c"}}',
        not_finite("delivery_type", "1e400"),
        id="1e400",
    ),
    pytest.param(
        "POST",
        "/v1/devices/TOKEN/report",
        '{"os_type":-Infinity}',
        not_finite("os_type", "-Infinity"),
        id="minus-infinity",
    ),
    pytest.param(
        "POST",
        "/v1/pushes",
        f'{{{PUSH},"title":"t","content":"c","extras":{{"k":Infinity}}}}',
        not_finite("extras.k", "Infinity"),
        id="infinity-nested",
    ),
]


@pytest.mark.parametrize(("method", "path", "raw", "answer"), REFUSED)
async def test_rest_body_that_cannot_be_stored_or_answered_is_422(
    tenant: Tenant, method: str, path: str, raw: str, answer: dict[str, str]
) -> None:
    token = (await tenant.register("android")).delivery_token
    response = await rest(tenant, method, path.replace(TOKEN, token), raw.replace(TOKEN, token))
    assert (response.status_code, response.json()) == (422, answer)

    # Nothing was stored: the device reports nothing, the app has no push and no template.
    state = await rest(tenant, "GET", f"/v1/devices/{token}")
    assert state.status_code == 200
    assert (state.json()["manufacturer"], state.json()["third_token"]) == (None, None)
    assert await stored_counts(tenant) == (0, 0, 0)
    templates = await rest(tenant, "GET", "/v1/templates")
    assert (templates.status_code, templates.json()["total"]) == (200, 0)


async def test_rest_device_registration_with_a_lone_surrogate_is_422(tenant: Tenant) -> None:
    raw = f'{{"app_id":"\\ud800","workspace_id":"{tenant.workspace_id}"}}'
    response = await rest(tenant, "POST", "/v1/devices", raw, auth=False)
    assert (response.status_code, response.json()) == (422, not_unicode("app_id"))


async def test_rest_report_of_a_lone_surrogate_leaves_state_readable(tenant: Tenant) -> None:
    # The trial's sequence: the report used to be stored, then both reads answered 500.
    token = (await tenant.register("android")).delivery_token
    refused = await rest(
        tenant, "POST", f"/v1/devices/{token}/report", '{"os_type":1,"model":"\\ud800"}'
    )
    assert (refused.status_code, refused.json()) == (422, not_unicode("model"))
    state = await rest(tenant, "GET", f"/v1/devices/{token}")
    assert (state.status_code, state.json()["manufacturer"]) == (200, None)
    response = await tenant.sdk().push_query_device_state_async(
        models.PushQueryDeviceStateRequest(
            app_id=tenant.app_id, workspace_id=tenant.workspace_id, target=token, target_type=1
        )
    )
    assert (response.body.success, response.body.data.manufacturer) == (True, "")


async def test_rest_surrogate_pair_escape_is_accepted(tenant: Tenant) -> None:
    # A pair (\ud83d\ude00) is one valid character: only a lone half is refused.
    token = (await tenant.register("android")).delivery_token
    raw = '{"os_type":1,"model":"\\ud83d\\ude00"}'
    reported = await rest(tenant, "POST", f"/v1/devices/{token}/report", raw)
    assert (reported.status_code, reported.json()) == (
        200,
        {"delivery_token": token, "reported": True},
    )
    state = await rest(tenant, "GET", f"/v1/devices/{token}")
    assert (state.status_code, state.json()["manufacturer"]) == (200, "\U0001f600")


async def test_rest_body_that_is_not_json_is_still_fastapis_422(tenant: Tenant) -> None:
    response = await rest(tenant, "POST", "/v1/pushes", "{nope")
    assert response.status_code == 422
    assert [error["type"] for error in response.json()["detail"]] == ["json_invalid"]


# --- the MPS front door -----------------------------------------------------------------------


def mps_lone(where: str, *, key: bool = False) -> str:
    return f"{where} {'has a key that is' if key else 'is'} not valid Unicode {LONE}"


@pytest.mark.parametrize(
    ("extended_params", "detail"),
    [
        ('{"k":"\\ud800"}', mps_lone("ExtendedParams.k")),
        ('{"\\ud800":"v"}', mps_lone("ExtendedParams", key=True)),
    ],
    ids=["value", "key"],
)
async def test_mps_extended_params_with_a_lone_surrogate_is_3028(
    tenant: Tenant, extended_params: str, detail: str
) -> None:
    response = await tenant.sdk().push_simple_async(
        models.PushSimpleRequest(
            app_id=tenant.app_id,
            workspace_id=tenant.workspace_id,
            delivery_type=3,
            expired_seconds=300,
            title="Hello",
            content="Hi there!",
            target_msgkey=json.dumps({"user-1": "key-1"}),
            extended_params=extended_params,
        )
    )
    assert_refused(response.body, 3028, "INVALID_PARAM", detail)
    assert await stored_counts(tenant) == (0, 0, 0)


async def test_mps_template_key_value_with_a_lone_surrogate_is_3028(tenant: Tenant) -> None:
    await created(tenant, "prize", "Hi #name#", "You won")
    response = await tenant.sdk().push_template_async(
        models.PushTemplateRequest(
            app_id=tenant.app_id,
            workspace_id=tenant.workspace_id,
            delivery_type=3,
            expired_seconds=300,
            template_name="prize",
            template_key_value='{"name":"\\ud800"}',
            target_msgkey=json.dumps({"user-1": "key-1"}),
        )
    )
    assert_refused(response.body, 3028, "INVALID_PARAM", mps_lone("TemplateKeyValue.name"))
    assert await stored_counts(tenant) == (0, 0, 0)


@pytest.mark.parametrize(
    ("fields", "detail"),
    [
        (
            {"TargetMsg": '[{"Target":"u1","MsgKey":"k1","TemplateKeyValue":{"name":"\\ud800"}}]'},
            mps_lone("TargetMsg.1.TemplateKeyValue.name"),
        ),
        (
            {"TargetMsg": '[{"Target":"\\ud800","MsgKey":"k1"}]'},
            mps_lone("TargetMsg.1.Target"),
        ),
        (
            {
                "TargetMsg.1.Target": "u1",
                "TargetMsg.1.MsgKey": "k1",
                "TargetMsg.1.TemplateKeyValue": '{"name":"\\ud800"}',
            },
            mps_lone("TargetMsg.1.TemplateKeyValue.name"),
        ),
    ],
    ids=["json-array-values", "json-array-target", "flattened-values"],
)
async def test_mps_target_msg_with_a_lone_surrogate_is_3028(
    tenant: Tenant, fields: dict[str, str], detail: str
) -> None:
    await created(tenant, "bill", "Hi #name#", "Hello #name#")
    form = {
        "AppId": tenant.app_id,
        "WorkspaceId": tenant.workspace_id,
        "DeliveryType": "3",
        "ExpiredSeconds": "300",
        "TemplateName": "bill",
        **fields,
    }
    headers, body = signed_request(tenant, "PushMultiple", form)
    response = await post(tenant, headers, body)
    answer = response.json()
    assert (response.status_code, answer["ResultCode"], answer["PushResult"]) == (
        200,
        "3028",
        {"Success": False, "ResultMsg": detail},
    )
    assert await stored_counts(tenant) == (0, 0, 0)


# --- ids written with other digits ------------------------------------------------------------

ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")


def other_spellings(number: str) -> list[str]:
    """``number`` in Arabic-Indic digits, and with a leading space: no id at all."""
    return [number.translate(ARABIC_INDIC), " " + number]


async def test_get_template_by_an_id_in_other_digits_is_3022(tenant: Tenant) -> None:
    template_id = await created(tenant, "welcome", "Hi", "Welcome")
    assert (await get(tenant, template_id=template_id)).data.name == "welcome"
    for text in other_spellings(template_id):
        assert_c_refused(
            await get(tenant, template_id=text),
            3022,
            "TEMPLATE_NOT_EXIST",
            f"this app has no template with TemplateId {text!r}",
        )


async def test_task_ids_in_other_digits_name_no_task(tenant: Tenant) -> None:
    token = (await tenant.register("android")).delivery_token  # never connects: stays pending
    pushed = await tenant.sdk().push_simple_async(
        models.PushSimpleRequest(
            app_id=tenant.app_id,
            workspace_id=tenant.workspace_id,
            delivery_type=1,
            expired_seconds=300,
            title="Hello",
            content="Hi there!",
            target_msgkey=json.dumps({token: "key-1"}),
        )
    )
    task_id: str = pushed.body.push_result.data
    for text in other_spellings(task_id):
        status = await rest(tenant, "GET", f"/v1/tasks/{text}")
        assert (status.status_code, status.json()) == (
            404,
            {"error": "unknown_task", "message": f"this app has no task {text!r}"},
        )
        revoked = await tenant.sdk().revoke_push_task_async(
            models.RevokePushTaskRequest(
                app_id=tenant.app_id, workspace_id=tenant.workspace_id, task_id=text
            )
        )
        assert_refused(revoked.body, 3028, "INVALID_PARAM", f"this app has no task {text}")
    # The task was left alone: its one delivery is still there to be revoked.
    assert (await rest(tenant, "GET", f"/v1/tasks/{task_id}")).status_code == 200
    revoked = await tenant.sdk().revoke_push_task_async(
        models.RevokePushTaskRequest(
            app_id=tenant.app_id, workspace_id=tenant.workspace_id, task_id=task_id
        )
    )
    assert (revoked.body.result_code, revoked.body.push_result.data) == ("OK", "1")


# --- NUL characters (second trial): PostgreSQL refuses them in text ---------------------------

NUL_REST: list[Any] = [
    pytest.param(
        "POST",
        "/v1/pushes",
        f'{{{PUSH},"title":"T","content":"C","task_name":"z\\u0000"}}',
        "task_name",
        id="push-task-name",
    ),
    pytest.param(
        "POST",
        "/v1/bindings",
        '{"delivery_token":"TOKEN","user_id":"u\\u0000","os_type":1}',
        "user_id",
        id="binding-user",
    ),
    pytest.param(
        "POST",
        "/v1/templates",
        '{"name":"t","title":"T","content":"a\\u0000"}',
        "content",
        id="template-content",
    ),
]


@pytest.mark.parametrize(("method", "path", "raw", "field"), NUL_REST)
async def test_rest_nul_in_a_json_string_is_422(
    tenant: Tenant, method: str, path: str, raw: str, field: str
) -> None:
    token = (await tenant.register("android")).delivery_token
    response = await rest(tenant, method, path, raw.replace(TOKEN, token))
    assert (response.status_code, response.json()) == (
        422,
        {
            "error": "invalid_json",
            "message": f"{field} contains a NUL character (\\u0000); text cannot hold one",
        },
    )
    assert await stored_counts(tenant) == (0, 0, 0)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/v1/devices/abc%00def?target_type=3", "the URL's path contains a NUL character (%00)"),
        ("/v1/messages/a?target=b%00", "the URL's query string contains a NUL character (%00)"),
        (
            "/v1/bindings/%ED%A0%80?delivery_token=x",
            "the URL's path is not valid UTF-8 once percent-decoded",
        ),
    ],
)
async def test_rest_url_with_a_nul_or_not_utf8_is_400(
    tenant: Tenant, path: str, message: str
) -> None:
    method = "DELETE" if path.startswith("/v1/bindings") else "GET"
    response = await rest(tenant, method, path)
    assert (response.status_code, response.json()) == (
        400,
        {"error": "invalid_url", "message": message},
    )


async def test_rest_body_that_is_not_utf8_is_422(tenant: Tenant) -> None:
    credentials = (tenant.creds.access_key_id, tenant.creds.access_key_secret)
    async with httpx.AsyncClient(base_url=tenant.server.api_url, auth=credentials) as http:
        response = await http.post(
            "/v1/pushes", content=b'{"title":"\xff"}', headers={"content-type": "application/json"}
        )
    assert (response.status_code, response.json()) == (
        422,
        {
            "error": "invalid_json",
            "message": "the body is not valid UTF-8 (byte 10); send JSON encoded as UTF-8",
        },
    )


async def test_mps_nul_in_a_plain_field_is_3028(tenant: Tenant) -> None:
    response = await tenant.sdk().push_simple_async(
        models.PushSimpleRequest(
            app_id=tenant.app_id,
            workspace_id=tenant.workspace_id,
            delivery_type=3,
            expired_seconds=300,
            title="Hello",
            content="Hi",
            task_name="z\x00",
            target_msgkey=json.dumps({"user-1": "key-1"}),
        )
    )
    assert_refused(
        response.body,
        3028,
        "INVALID_PARAM",
        "TaskName contains a NUL character (%00); text cannot hold one",
    )
    assert await stored_counts(tenant) == (0, 0, 0)
