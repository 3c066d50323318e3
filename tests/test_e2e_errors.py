"""Refusals end to end: what the official SDK sees when openmps says no, and that a refused push
leaves nothing behind in the store.

Two kinds of refusal (reference 1.3 and 1.5):

- auth and transport problems are HTTP 4xx with ``Code``/``Message``; the SDK raises
  ``ClientException``;
- business refusals are HTTP 200 with envelope A: ``ResultCode`` the numeric MPS code as a
  string, ``ResultMessage`` its NAME, ``PushResult.Success`` false and ``PushResult.ResultMsg``
  the detail.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from alibabacloud_mpaas20201028 import models
from alibabacloud_tea_openapi.exceptions import ClientException
from alibabacloud_tea_openapi.utils import Utils
from alibabacloud_tea_openapi.utils_models import OpenApiRequest, Params
from darabonba.runtime import RuntimeOptions
from sqlalchemy import func, select

from openmps.mps.signature import DATE_FORMAT, canonical_request, sign
from openmps.store import App, Delivery, Message, Store, Task
from tests.conftest import Tenant
from tests.test_e2e_push import task_rows

API_VERSION = "2020-10-28"


# --- helpers --------------------------------------------------------------------------------


async def client_error(call: Awaitable[Any], status: int, code: str, message: str) -> None:
    """Await an SDK call that must raise ClientException with exactly this status, code and
    server message (the SDK wraps the message as ``code: <status>, <Message> request id: ..``).
    """
    with pytest.raises(ClientException) as caught:
        await call
    error = caught.value
    assert (error.status_code, error.code) == (status, code)
    assert error.data["Code"] == code
    assert error.data["Message"] == message
    assert error.data["HostId"] == "openmps"
    assert error.message == f"code: {status}, {message} request id: {error.request_id}"
    assert re.fullmatch(r"[0-9A-F-]{36}", error.request_id)


async def stored_counts(tenant: Tenant) -> tuple[int, int, int]:
    """(tasks, messages, deliveries) the store holds for the tenant's app."""
    store = await Store.open(tenant.server.db_url, migrate=False)
    try:
        async with store.session() as session:
            app_pk = await session.scalar(
                select(App.id).where(
                    App.app_id == tenant.app_id, App.workspace_id == tenant.workspace_id
                )
            )
            assert app_pk is not None
            tasks = await session.scalar(
                select(func.count()).select_from(Task).where(Task.app_pk == app_pk)
            )
            messages = await session.scalar(
                select(func.count()).select_from(Message).where(Message.app_pk == app_pk)
            )
            deliveries = await session.scalar(
                select(func.count())
                .select_from(Delivery)
                .join(Message, Message.id == Delivery.message_pk)
                .where(Message.app_pk == app_pk)
            )
    finally:
        await store.close()
    return int(tasks or 0), int(messages or 0), int(deliveries or 0)


def utc_date(offset: timedelta = timedelta(0)) -> str:
    return (datetime.now(UTC) + offset).strftime(DATE_FORMAT)


def signed_request(
    tenant: Tenant,
    action: str,
    form: dict[str, str],
    *,
    date: str | None = None,
    nonce: str | None = None,
) -> tuple[dict[str, str], bytes]:
    """Headers and body of an ACS3-HMAC-SHA256 request signed as the SDK signs it."""
    body = urlencode(sorted(form.items())).encode()
    headers = {
        "host": f"127.0.0.1:{tenant.server.port}",
        "accept": "application/json",
        "content-type": "application/x-www-form-urlencoded",
        "x-acs-action": action,
        "x-acs-version": API_VERSION,
        "x-acs-date": date or utc_date(),
        "x-acs-signature-nonce": nonce or uuid.uuid4().hex,
        "x-acs-content-sha256": hashlib.sha256(body).hexdigest(),
    }
    names = sorted(headers)
    canonical = canonical_request("POST", "/", {}, headers, names, headers["x-acs-content-sha256"])
    signature = sign(tenant.creds.access_key_secret, canonical)
    headers["Authorization"] = (
        f"ACS3-HMAC-SHA256 Credential={tenant.creds.access_key_id},"
        f"SignedHeaders={';'.join(names)},Signature={signature}"
    )
    return headers, body


async def post(tenant: Tenant, headers: dict[str, str], body: bytes) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(f"{tenant.server.api_url}/", headers=headers, content=body)


def push_form(tenant: Tenant, **fields: str) -> dict[str, str]:
    return {
        "AppId": tenant.app_id,
        "WorkspaceId": tenant.workspace_id,
        "DeliveryType": "3",
        "ExpiredSeconds": "300",
        "Title": "Hello",
        "Content": "Hi there!",
        "TargetMsgkey": json.dumps({"user-1": "key-1"}),
        **fields,
    }


def push_request(tenant: Tenant, **overrides: Any) -> Any:
    fields: dict[str, Any] = {
        "app_id": tenant.app_id,
        "workspace_id": tenant.workspace_id,
        "delivery_type": 3,
        "expired_seconds": 300,
        "title": "Hello",
        "content": "Hi there!",
        "target_msgkey": json.dumps({"user-1": "key-1"}),
    }
    fields.update(overrides)
    return models.PushSimpleRequest(**fields)


def assert_refused(body: Any, code: int, name: str, detail: str) -> None:
    assert (body.result_code, body.result_message) == (str(code), name)
    assert body.push_result.success is False
    assert body.push_result.result_msg == detail
    assert body.push_result.data is None


# --- auth and transport: HTTP 4xx, the SDK raises --------------------------------------------


async def test_wrong_secret_is_signature_mismatch(tenant: Tenant) -> None:
    sdk = tenant.sdk(secret="x" * 30)
    await client_error(
        sdk.push_simple_async(push_request(tenant)),
        400,
        "SignatureDoesNotMatch",
        "the request signature does not match the one computed with the AccessKey secret of "
        f"{tenant.creds.access_key_id!r}; check the AccessKey secret, and that the endpoint "
        "(host and port) you configured is the one the request reaches",
    )
    assert await stored_counts(tenant) == (0, 0, 0)


async def test_unknown_access_key_id(tenant: Tenant) -> None:
    sdk = tenant.sdk(key_id="LTAInosuchkey000000000")
    await client_error(
        sdk.push_simple_async(push_request(tenant)),
        404,
        "InvalidAccessKeyId.NotFound",
        "the AccessKeyId is not known here; create one with `openmps app create`",
    )
    assert await stored_counts(tenant) == (0, 0, 0)


async def test_hand_signed_request_is_accepted(tenant: Tenant) -> None:
    """The control for the two tests below: the hand-built request itself is right."""
    headers, body = signed_request(tenant, "PushSimple", push_form(tenant))
    response = await post(tenant, headers, body)
    assert response.status_code == 200
    answer = response.json()
    assert (answer["ResultCode"], answer["PushResult"]["Success"]) == ("OK", True)
    assert await stored_counts(tenant) == (1, 1, 1)


@pytest.mark.parametrize(("minutes", "direction"), [(-16, "behind"), (16, "ahead of")])
async def test_stale_date_refused(tenant: Tenant, minutes: int, direction: str) -> None:
    date = utc_date(timedelta(minutes=minutes))
    headers, body = signed_request(tenant, "PushSimple", push_form(tenant), date=date)
    response = await post(tenant, headers, body)
    assert response.status_code == 400
    answer = response.json()
    assert answer["Code"] == "InvalidTimeStamp.Expired"
    found = re.fullmatch(
        rf"x-acs-date {date} is ([0-9.]+) s {direction} the server time "
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ; the allowed skew is 900 s either way\. "
        r"Synchronise the client clock \(NTP\) and send a fresh request",
        answer["Message"],
    )
    assert found is not None, answer["Message"]
    assert 955 <= float(found[1]) <= 965
    assert await stored_counts(tenant) == (0, 0, 0)


async def test_stale_date_from_the_sdk(tenant: Tenant, monkeypatch: pytest.MonkeyPatch) -> None:
    date = utc_date(timedelta(hours=-1))
    monkeypatch.setattr(Utils, "get_timestamp", lambda: date)
    with pytest.raises(ClientException) as caught:
        await tenant.sdk().push_simple_async(push_request(tenant))
    assert (caught.value.status_code, caught.value.code) == (400, "InvalidTimeStamp.Expired")
    assert caught.value.data["Message"].startswith(f"x-acs-date {date} is 36")
    assert await stored_counts(tenant) == (0, 0, 0)


async def test_reused_nonce_refused(tenant: Tenant) -> None:
    headers, body = signed_request(tenant, "PushSimple", push_form(tenant), nonce="n-0001")
    first = await post(tenant, headers, body)
    assert first.status_code == 200
    assert first.json()["ResultCode"] == "OK"

    replay = await post(tenant, headers, body)
    assert replay.status_code == 400
    answer = replay.json()
    assert (answer["Code"], answer["Message"]) == (
        "SignatureNonceUsed",
        "the signature nonce 'n-0001' was already used within the last 1800 s; generate a new "
        "nonce for every request, including retries",
    )
    assert await stored_counts(tenant) == (1, 1, 1)  # only the first push


async def test_reused_nonce_from_the_sdk(tenant: Tenant, monkeypatch: pytest.MonkeyPatch) -> None:
    nonce = uuid.uuid4().hex
    monkeypatch.setattr(Utils, "get_nonce", lambda: nonce)
    sdk = tenant.sdk()
    first = await sdk.push_simple_async(push_request(tenant))
    assert first.body.result_code == "OK"
    await client_error(
        sdk.push_simple_async(push_request(tenant, target_msgkey='{"user-1":"key-2"}')),
        400,
        "SignatureNonceUsed",
        f"the signature nonce {nonce!r} was already used within the last 1800 s; generate a "
        "new nonce for every request, including retries",
    )
    assert await stored_counts(tenant) == (1, 1, 1)


async def test_missing_authorization(tenant: Tenant) -> None:
    headers, body = signed_request(tenant, "PushSimple", push_form(tenant))
    del headers["Authorization"]
    response = await post(tenant, headers, body)
    assert response.status_code == 400
    answer = response.json()
    assert set(answer) == {"RequestId", "Code", "Message", "HostId"}
    assert (answer["Code"], answer["Message"]) == (
        "MissingAuthorization",
        "the request has no Authorization header. Sign it with ACS3-HMAC-SHA256 using an "
        "AccessKey pair, for example with the Alibaba Cloud SDK and "
        "Config(access_key_id=..., access_key_secret=...); bearer tokens and anonymous calls "
        "are not supported",
    )
    assert await stored_counts(tenant) == (0, 0, 0)


async def test_unknown_action(tenant: Tenant) -> None:
    params = Params(
        action="NoSuchAction",
        version=API_VERSION,
        protocol="HTTP",
        pathname="/",
        method="POST",
        auth_type="AK",
        style="RPC",
        req_body_type="formData",
        body_type="json",
    )
    request = OpenApiRequest(body={"AppId": tenant.app_id, "WorkspaceId": tenant.workspace_id})
    await client_error(
        tenant.sdk().call_api_async(params, request, RuntimeOptions()),
        404,
        "InvalidAction.NotFound",
        "the action 'NoSuchAction' does not exist in MPS 2020-10-28",
    )

    headers, body = signed_request(tenant, "NoSuchAction", {"AppId": tenant.app_id})
    response = await post(tenant, headers, body)
    assert response.status_code == 404
    assert response.json()["Code"] == "InvalidAction.NotFound"


def test_every_mps_action_has_a_handler() -> None:
    """The 21 MPS actions of reference section 3 are all served."""
    from openmps.mps.actions import HANDLERS, MPS_ACTIONS

    assert len(MPS_ACTIONS) == 21
    assert set(HANDLERS) == MPS_ACTIONS


# --- business refusals: HTTP 200, envelope A, nothing stored ---------------------------------

JSON_HINT = "TargetMsgkey must be a JSON object of string keys to string, number or boolean values"

BAD_PUSHES: list[Any] = [
    pytest.param({"title": None}, 3024, "PAYLOAD_NOT_ENOUGH", "Title is required", id="no-title"),
    pytest.param(
        {"content": None}, 3024, "PAYLOAD_NOT_ENOUGH", "Content is required", id="no-content"
    ),
    pytest.param(
        {"target_msgkey": '{"user-1":"key-1"'},
        3028,
        "INVALID_PARAM",
        f"{JSON_HINT}: invalid JSON at character 18: Expecting ',' delimiter",
        id="malformed-json",
    ),
    pytest.param(
        {"target_msgkey": "{“user-1”:“key-1”}"},
        3028,
        "INVALID_PARAM",
        f'{JSON_HINT}: it contains typographic quotes (“ ”); use ASCII double quotes (") instead',
        id="typographic-quotes",
    ),
    pytest.param(
        {"target_msgkey": json.dumps({f"user-{i}": f"key-{i}" for i in range(11)})},
        3029,
        "SINGLE_PUSH_TARGET_TOO_MUCH",
        "TargetMsgkey has 11 targets; at most 10",
        id="11-targets",
    ),
    pytest.param(
        {"expired_seconds": 0},
        3020,
        "EXPIREDSECONDS_WRONG",
        "ExpiredSeconds is required and must be at least 1",
        id="expired-0",
    ),
    pytest.param(
        {"expired_seconds": -5},
        3020,
        "EXPIREDSECONDS_WRONG",
        "ExpiredSeconds is required and must be at least 1",
        id="expired-negative",
    ),
    pytest.param(
        {"expired_seconds": 259201},
        3026,
        "EXPIREDTIME_TOO_LONG",
        "ExpiredSeconds 259201 exceeds the maximum 259200",
        id="expired-too-long",
    ),
    pytest.param(
        {"delivery_type": 4},
        3009,
        "DELIVERY_TYPE_NOT_SUPPORTED",
        "DeliveryType 4 is unknown; use 1 (Android device), 2 (iOS device) or 3 (user id)",
        id="delivery-type-unknown",
    ),
    pytest.param(
        {"delivery_type": 7},
        3009,
        "DELIVERY_TYPE_NOT_SUPPORTED",
        "DeliveryType 7 (harmonyos) is not supported yet; use 1 (Android device), "
        "2 (iOS device) or 3 (user id)",
        id="delivery-type-unsupported",
    ),
    pytest.param(
        {"delivery_type": None},
        3009,
        "DELIVERY_TYPE_NOT_SUPPORTED",
        "DeliveryType is required",
        id="no-delivery-type",
    ),
    pytest.param(
        {"extended_params": json.dumps({f"k{i}": "v" for i in range(21)})},
        3035,
        "EXTEND_PARAM_TO_MUCH",
        "ExtendedParams has 21 keys; at most 20 are allowed",
        id="21-extended-params",
    ),
    pytest.param(
        {"app_id": "ONEX000000000000"},
        3007,
        "APPID_WRONG",
        "AppId and WorkspaceId do not name the app this AccessKeyId belongs to",
        id="wrong-app-id",
    ),
    pytest.param(
        {"target_msgkey": None},
        3021,
        "TOKEN_OR_USERID_NULL",
        "TargetMsgkey has no target",
        id="no-target-msgkey",
    ),
    pytest.param(
        {"target_msgkey": "{}"},
        3021,
        "TOKEN_OR_USERID_NULL",
        "TargetMsgkey has no target",
        id="empty-target-msgkey",
    ),
    # Regressions from a new-user trial: these were stored before.
    pytest.param(
        {"target_msgkey": '{"eve\\u0001":"k"}'},
        3028,
        "INVALID_PARAM",
        "a target or msgKey in TargetMsgkey contains a control or invisible character",
        id="control-character-target",
    ),
    pytest.param(
        {"target_msgkey": '{"eve\\u0000":"k"}'},
        3028,
        "INVALID_PARAM",
        "TargetMsgkey has a key that contains a NUL character (\\u0000); text cannot hold one",
        id="nul-target",
    ),
    pytest.param(
        {"target_msgkey": '{"carol":1e400}'},
        3028,
        "INVALID_PARAM",
        f'{JSON_HINT}: the value of "carol" is too large a number',
        id="infinite-msg-key",
    ),
]


async def test_oversized_bind_and_report_fields_refused(tenant: Tenant) -> None:
    sdk = tenant.sdk()
    creds = await tenant.register()
    common = {
        "app_id": tenant.app_id,
        "workspace_id": tenant.workspace_id,
        "delivery_token": creds.delivery_token,
    }
    bound = await sdk.push_bind_async(
        models.PushBindRequest(**common, os_type=1, user_id="u", phone_number="1" * 33)
    )
    assert_refused(bound.body, 3028, "INVALID_PARAM", "PhoneNumber is longer than 32 characters")
    reported = await sdk.push_report_async(
        models.PushReportRequest(**common, os_type=1, model="m" * 257)
    )
    assert_refused(reported.body, 3028, "INVALID_PARAM", "Model is longer than 256 characters")
    reported = await sdk.push_report_async(
        models.PushReportRequest(
            **common, os_type=1, third_channel=6, third_channel_device_token="t" * 513
        )
    )
    assert_refused(
        reported.body,
        3028,
        "INVALID_PARAM",
        "ThirdChannelDeviceToken is longer than 512 characters",
    )
    # Regression: an OsType beyond 32 bits made PostgreSQL fail the write (HTTP 500).
    huge = "OsType must be between 0 and 2147483647, got 99999999999"
    bound = await sdk.push_bind_async(
        models.PushBindRequest(**common, os_type=99999999999, user_id="u")
    )
    assert_refused(bound.body, 3028, "INVALID_PARAM", huge)
    reported = await sdk.push_report_async(models.PushReportRequest(**common, os_type=99999999999))
    assert_refused(reported.body, 3028, "INVALID_PARAM", huge)
    state = await sdk.push_query_device_state_async(
        models.PushQueryDeviceStateRequest(
            app_id=tenant.app_id,
            workspace_id=tenant.workspace_id,
            target=creds.delivery_token,
            target_type=1,
        )
    )
    assert (state.body.data.manufacturer, state.body.data.third_token, state.body.data.user_id) == (
        "",
        "",
        "",
    )


@pytest.mark.parametrize(("overrides", "code", "name", "detail"), BAD_PUSHES)
async def test_bad_push_refused_and_nothing_stored(
    tenant: Tenant, overrides: dict[str, Any], code: int, name: str, detail: str
) -> None:
    response = await tenant.sdk().push_simple_async(push_request(tenant, **overrides))
    assert response.status_code == 200
    assert_refused(response.body, code, name, detail)
    assert await stored_counts(tenant) == (0, 0, 0)


async def test_reused_msg_key_refused_and_first_push_unchanged(tenant: Tenant) -> None:
    sdk = tenant.sdk()
    first = await sdk.push_simple_async(push_request(tenant))
    assert first.body.result_code == "OK"
    task_id = first.body.push_result.data
    before = await task_rows(tenant, task_id)
    assert before == [
        {
            "target": "user-1",
            "msg_key": "key-1",
            "device": None,
            "channel": "own",
            "status_channel": "common",
            "status_code": 1,
            "status_name": "NoBindInfo",
            "final": False,
            "detail": None,
        }
    ]

    again = await sdk.push_simple_async(push_request(tenant, title="Other", content="Other"))
    assert again.status_code == 200
    assert_refused(
        again.body,
        3028,
        "INVALID_PARAM",
        "a msgKey in TargetMsgkey was already used for that target in this app by a different "
        "push; msgKeys must be unique (an exact repeat of a push answers its first task id)",
    )
    assert await task_rows(tenant, task_id) == before
    assert await stored_counts(tenant) == (1, 1, 1)

    # Regression: a client whose first answer was lost (the server died after the commit)
    # retried the same push and got 3028. An exact repeat answers the first task id and
    # stores nothing more.
    repeat = await sdk.push_simple_async(push_request(tenant))
    assert (repeat.body.result_code, repeat.body.push_result.data) == ("OK", task_id)
    assert await stored_counts(tenant) == (1, 1, 1)

    # The same msgKey for another target is a different message: accepted.
    other = await sdk.push_simple_async(push_request(tenant, target_msgkey='{"user-2":"key-1"}'))
    assert other.body.result_code == "OK"
    assert await stored_counts(tenant) == (2, 2, 2)
