"""The REST API's push and device operations (docs/rest.md): each endpoint with its exact
answers and refusals, and the same operation through the MPS SDK and through REST storing the
same result, since both call one service layer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from datetime import datetime
from typing import Any

import httpx
from alibabacloud_mpaas20201028 import models

from openmps.client import DeviceClient, DeviceCredentials, PushMessage
from tests.conftest import Tenant, eventually, new_tenant
from tests.test_e2e_push import task_rows

STEP_S = 10.0


# --- helpers --------------------------------------------------------------------------------


async def rest(
    tenant: Tenant,
    method: str,
    path: str,
    body: Any = None,
    *,
    params: dict[str, Any] | None = None,
    auth: tuple[str, str] | None = None,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """One REST call, as the tenant's app unless ``auth`` (or an Authorization header) says."""
    send_auth = auth or (tenant.creds.access_key_id, tenant.creds.access_key_secret)
    async with httpx.AsyncClient(base_url=tenant.server.api_url) as http:
        return await http.request(
            method,
            path,
            json=body,
            params=params,
            content=content,
            headers=headers,
            auth=None if headers and "authorization" in headers else send_auth,
        )


def push_body(targets: dict[str, str], **fields: Any) -> dict[str, Any]:
    return {
        "delivery_type": 1,
        "targets": targets,
        "expired_seconds": 300,
        "title": "Hello",
        "content": "Hi there!",
        **fields,
    }


async def rest_push(tenant: Tenant, targets: dict[str, str], **fields: Any) -> str:
    response = await rest(tenant, "POST", "/v1/pushes", push_body(targets, **fields))
    assert response.status_code == 201, response.text
    assert list(response.json()) == ["task_id"]
    task_id: str = response.json()["task_id"]
    assert task_id.isdigit()
    return task_id


async def sdk_push(tenant: Tenant, targets: dict[str, str], **fields: Any) -> Any:
    response = await tenant.sdk().push_simple_async(
        models.PushSimpleRequest(
            app_id=tenant.app_id,
            workspace_id=tenant.workspace_id,
            target_msgkey=json.dumps(targets),
            **fields,
        )
    )
    return response.body


async def sdk_bind(tenant: Tenant, creds: DeviceCredentials, user_id: str) -> None:
    response = await tenant.sdk().push_bind_async(
        models.PushBindRequest(
            app_id=tenant.app_id,
            workspace_id=tenant.workspace_id,
            delivery_token=creds.delivery_token,
            os_type=1 if creds.platform == "android" else 2,
            user_id=user_id,
        )
    )
    assert response.body.result_code == "OK"


async def sdk_state(tenant: Tenant, target: str, target_type: int) -> Any:
    response = await tenant.sdk().push_query_device_state_async(
        models.PushQueryDeviceStateRequest(
            app_id=tenant.app_id,
            workspace_id=tenant.workspace_id,
            target=target,
            target_type=target_type,
        )
    )
    return response.body


async def next_message(device: DeviceClient) -> PushMessage:
    return await asyncio.wait_for(anext(aiter(device)), STEP_S)


def shown(message: PushMessage) -> tuple[Any, ...]:
    """What a device shows of a message (not its ids)."""
    return (
        message.title,
        message.content,
        message.extras,
        message.silent,
        message.push_action,
        message.uri,
    )


def row(
    target: str,
    msg_key: str,
    device: str | None,
    code: int,
    name: str,
    *,
    final: bool,
    detail: str | None = None,
) -> dict[str, object]:
    return {
        "target": target,
        "msg_key": msg_key,
        "device": device,
        "channel": "own",
        "status_channel": "common",
        "status_code": code,
        "status_name": name,
        "final": final,
        "detail": detail,
    }


def refusal(error: str, message: str, code: int) -> dict[str, object]:
    return {"error": error, "message": message, "code": code}


UNKNOWN_DEVICE = refusal(
    "invalid_param",
    "DeliveryToken is not a device of this app; the device gets its token when it registers "
    "with the gateway",
    3028,
)


# --- POST /v1/pushes --------------------------------------------------------------------------


async def test_rest_push_to_a_bound_user_reaches_the_device_as_an_mps_push_does(
    tenant: Tenant,
) -> None:
    creds = await tenant.register("android")
    await sdk_bind(tenant, creds, "alice")
    fields = {
        "delivery_type": 3,
        "expired_seconds": 300,
        "title": "Hello",
        "content": "Hi there!",
        "task_name": "greeting",
        "silent": 0,
        "push_action": 1,
        "push_style": 1,
        "uri": "app://inbox",
    }
    async with tenant.device(creds) as device:
        task_id = await rest_push(
            tenant, {"alice": "rest-1"}, extras={"k": "v", "n": "1"}, **fields
        )
        by_rest = await next_message(device)
        sdk = await sdk_push(
            tenant,
            {"alice": "mps-1"},
            extended_params=json.dumps({"k": "v", "n": 1}),
            **fields,
        )
        assert sdk.result_code == "OK"
        by_mps = await next_message(device)
    assert (by_rest.msg_key, by_rest.task_id) == ("rest-1", task_id)
    assert (by_mps.msg_key, by_mps.task_id) == ("mps-1", sdk.push_result.data)
    assert (
        shown(by_rest)
        == shown(by_mps)
        == ("Hello", "Hi there!", {"k": "v", "n": "1"}, False, 1, "app://inbox")
    )

    token = creds.delivery_token
    await eventually(
        lambda: _rows_are(tenant, task_id, [row("alice", "rest-1", token, 2, "Acked", final=True)])
    )
    await eventually(
        lambda: _rows_are(
            tenant, sdk.push_result.data, [row("alice", "mps-1", token, 2, "Acked", final=True)]
        )
    )


async def _rows_are(tenant: Tenant, task_id: str, expected: list[dict[str, object]]) -> bool:
    return await task_rows(tenant, task_id) == expected


async def test_rest_push_to_devices_stores_a_message_per_target(tenant: Tenant) -> None:
    a, b = await tenant.register("android"), await tenant.register("android")
    task_id = await rest_push(tenant, {a.delivery_token: "k-a", b.delivery_token: "k-b"})
    assert await task_rows(tenant, task_id) == [
        row(
            a.delivery_token, "k-a", a.delivery_token, 0, "DeviceNotOnlineOrNoResponse", final=False
        ),
        row(
            b.delivery_token, "k-b", b.delivery_token, 0, "DeviceNotOnlineOrNoResponse", final=False
        ),
    ]
    # An exact repeat answers the first task id (as PushSimple does), a changed one is refused.
    again = await rest(
        tenant, "POST", "/v1/pushes", push_body({a.delivery_token: "k-a", b.delivery_token: "k-b"})
    )
    assert (again.status_code, again.json()) == (201, {"task_id": task_id})
    changed = await rest(
        tenant, "POST", "/v1/pushes", push_body({a.delivery_token: "k-a"}, title="Other")
    )
    assert changed.status_code == 400
    assert changed.json()["error"] == "invalid_param"
    assert changed.json()["code"] == 3028


async def test_rest_push_refusals_are_the_mps_refusals(tenant: Tenant) -> None:
    creds = await tenant.register("android")
    token = creds.delivery_token
    cases: list[tuple[dict[str, Any], dict[str, Any], str, str | None, int]] = [
        (
            {"expired_seconds": 0},
            {"expired_seconds": 0},
            "expiredseconds_wrong",
            "ExpiredSeconds is required and must be at least 1",
            3020,
        ),
        (
            {"delivery_type": 9},
            {"delivery_type": 9},
            "delivery_type_not_supported",
            "DeliveryType 9 is unknown; use 1 (Android device), 2 (iOS device) or 3 (user id)",
            3009,
        ),
        (
            {"title": " "},
            {"title": " "},
            "payload_not_enough",
            "Title is required",
            3024,
        ),
        (
            {"silent": 2},
            {"silent": 2},
            "invalid_param",
            "Silent must be 0 or 1, got 2",
            3028,
        ),
        (
            {"extras": {str(i): "v" for i in range(21)}},
            {"extended_params": json.dumps({str(i): "v" for i in range(21)})},
            "extend_param_to_much",
            None,  # the two doors name the field in their own words
            3035,
        ),
    ]
    sdk_defaults = {
        "delivery_type": 1,
        "expired_seconds": 300,
        "title": "Hello",
        "content": "Hi there!",
    }
    for number, (rest_fields, sdk_fields, error, message, code) in enumerate(cases):
        key = f"refused-{number}"
        response = await rest(tenant, "POST", "/v1/pushes", push_body({token: key}, **rest_fields))
        body = await sdk_push(tenant, {token: key}, **{**sdk_defaults, **sdk_fields})
        assert response.status_code == 400, rest_fields
        assert (body.result_code, body.result_message) == (str(code), error.upper())
        if message is None:
            assert (response.json()["error"], response.json()["code"]) == (error, code)
        else:
            assert response.json() == refusal(error, message, code)
            assert body.push_result.result_msg == message
    too_many = await rest(
        tenant, "POST", "/v1/pushes", push_body({f"t{i}": f"k{i}" for i in range(11)})
    )
    assert (too_many.status_code, too_many.json()) == (
        400,
        refusal("single_push_target_too_much", "TargetMsgkey has 11 targets; at most 10", 3029),
    )
    none = await rest(tenant, "POST", "/v1/pushes", push_body({}))
    assert (none.status_code, none.json()) == (
        400,
        refusal("token_or_userid_null", "TargetMsgkey has no target", 3021),
    )


async def test_rest_scheduled_push_answers_its_schedule_id(tenant: Tenant) -> None:
    creds = await tenant.register("android")
    token = creds.delivery_token
    fire_ms = (int(time.time()) + 3600) * 1000
    response = await rest(
        tenant,
        "POST",
        "/v1/pushes",
        push_body({token: "k-later"}, strategy_type=1, strategy_content={"fixedTime": fire_ms}),
    )
    assert response.status_code == 201, response.text
    assert list(response.json()) == ["schedule_id"]
    by_rest = await rest(tenant, "GET", f"/v1/schedules/{response.json()['schedule_id']}")
    sdk = await sdk_push(
        tenant,
        {token: "k-later-mps"},
        delivery_type=1,
        expired_seconds=300,
        title="Hello",
        content="Hi there!",
        strategy_type=1,
        strategy_content=json.dumps({"fixedTime": fire_ms}),
    )
    assert sdk.result_code == "OK"
    by_mps = await rest(tenant, "GET", f"/v1/schedules/{sdk.push_result.data}")
    assert by_rest.status_code == by_mps.status_code == 200
    fields = ("strategy_type", "type", "delivery_type", "fire_at", "state", "title", "content")
    assert [by_rest.json()[f] for f in fields] == [by_mps.json()[f] for f in fields]
    assert by_rest.json()["fire_at"] == by_mps.json()["fire_at"] is not None
    unplanned = await rest(
        tenant, "POST", "/v1/pushes", push_body({token: "k-never"}, strategy_type=1)
    )
    assert unplanned.status_code == 400
    assert (unplanned.json()["error"], unplanned.json()["code"]) == ("invalid_param", 3028)


async def test_rest_push_bodies_of_the_wrong_shape_are_422(tenant: Tenant) -> None:
    async def detail(body: Any = None, content: bytes | None = None) -> list[tuple[Any, ...]]:
        response = await rest(
            tenant,
            "POST",
            "/v1/pushes",
            body,
            content=content,
            headers={"content-type": "application/json"} if content is not None else None,
        )
        assert response.status_code == 422, response.text
        return [(tuple(e["loc"]), e["type"]) for e in response.json()["detail"]]

    good = push_body({"t": "k"})
    assert await detail(content=b'{"delivery_type": 1,') == [(("body", 20), "json_invalid")]
    missing = {k: v for k, v in good.items() if k not in ("title", "targets")}
    assert await detail(missing) == [
        (("body", "targets"), "missing"),
        (("body", "title"), "missing"),
    ]
    assert await detail({**good, "expired_seconds": "300"}) == [
        (("body", "expired_seconds"), "int_type")
    ]
    assert await detail({**good, "delivery_type": 1.5}) == [(("body", "delivery_type"), "int_type")]
    assert await detail({**good, "silent": True}) == [(("body", "silent"), "int_type")]
    assert await detail({**good, "targets": {"t": 1}}) == [
        (("body", "targets", "t"), "string_type")
    ]
    assert await detail({**good, "targets": ["t"]}) == [(("body", "targets"), "dict_type")]
    assert await detail({**good, "extras": {"k": {"x": 1}}}) == [
        (("body", "extras", "k"), "string_type")
    ]
    assert await detail({**good, "expire_seconds": 300}) == [
        (("body", "expire_seconds"), "extra_forbidden")
    ]
    assert await detail({**good, "expired_seconds": 2**31}) == [
        (("body", "expired_seconds"), "less_than_equal")
    ]
    assert await detail([good]) == [(("body",), "model_attributes_type")]


async def test_rest_needs_the_apps_basic_credentials(tenant: Tenant) -> None:
    other = await new_tenant(tenant.server)
    unauthorized = {
        "error": "unauthorized",
        "message": "send HTTP Basic auth: AccessKeyId as user, AccessKeySecret as password",
    }
    body = push_body({"t": "k"})
    answers = [
        await rest(tenant, "POST", "/v1/pushes", body, headers={"authorization": ""}),
        await rest(tenant, "POST", "/v1/pushes", body, headers={"authorization": "Basic !!"}),
        await rest(tenant, "POST", "/v1/pushes", body, headers={"authorization": "Bearer x"}),
        await rest(tenant, "POST", "/v1/pushes", body, auth=(tenant.creds.access_key_id, "wrong")),
        await rest(
            tenant,
            "POST",
            "/v1/pushes",
            body,
            auth=(tenant.creds.access_key_id, other.creds.access_key_secret),
        ),
        await rest(tenant, "POST", "/v1/pushes", body, auth=("no-such-key", "x")),
        await rest(tenant, "GET", "/v1/devices/x", auth=("no-such-key", "x")),
        await rest(tenant, "POST", "/v1/bindings", {}, auth=("no-such-key", "x")),
        await rest(tenant, "GET", "/v1/messages/k", params={"target": "t"}, auth=("k", "x")),
    ]
    for response in answers:
        assert (response.status_code, response.json()) == (401, unauthorized)
        assert response.headers["www-authenticate"] == 'Basic realm="openmps"'


# --- bindings ---------------------------------------------------------------------------------


async def test_rest_bind_then_mps_push_reaches_the_device(tenant: Tenant) -> None:
    creds = await tenant.register("android")
    token = creds.delivery_token
    bound = await rest(
        tenant,
        "POST",
        "/v1/bindings",
        {"delivery_token": token, "user_id": "bob", "os_type": 1, "phone_number": "+4915100000"},
    )
    assert (bound.status_code, bound.json()) == (
        201,
        {"delivery_token": token, "user_id": "bob", "unblocked": 0},
    )
    async with tenant.device(creds) as device:
        sdk = await sdk_push(
            tenant,
            {"bob": "to-bob"},
            delivery_type=3,
            expired_seconds=300,
            title="Hello",
            content="Bob!",
        )
        assert sdk.result_code == "OK"
        message = await next_message(device)
    assert (message.msg_key, message.content) == ("to-bob", "Bob!")
    state = await sdk_state(tenant, "bob", 3)
    assert (state.data.delivery_token, state.data.user_id) == (token, "bob")
    # Binding again changes nothing and is not an error (as PushBind).
    again = await rest(
        tenant, "POST", "/v1/bindings", {"delivery_token": token, "user_id": "bob", "os_type": 1}
    )
    assert (again.status_code, again.json()) == (
        201,
        {"delivery_token": token, "user_id": "bob", "unblocked": 0},
    )


async def test_rest_bind_sends_what_waited_for_the_user(tenant: Tenant) -> None:
    creds = await tenant.register("ios")
    task_id = await rest_push(tenant, {"erin": "k-wait"}, delivery_type=3)
    assert await task_rows(tenant, task_id) == [
        row("erin", "k-wait", None, 1, "NoBindInfo", final=False)
    ]
    bound = await rest(
        tenant,
        "POST",
        "/v1/bindings",
        {"delivery_token": creds.delivery_token, "user_id": "erin", "os_type": 2},
    )
    assert (bound.status_code, bound.json()) == (
        201,
        {"delivery_token": creds.delivery_token, "user_id": "erin", "unblocked": 1},
    )
    async with tenant.device(creds) as device:
        message = await next_message(device)
    assert (message.msg_key, message.task_id) == ("k-wait", task_id)


async def test_rest_bind_refusals(tenant: Tenant) -> None:
    creds = await tenant.register("android")
    other = await new_tenant(tenant.server)
    foreign = await other.register("android")

    async def bind(body: dict[str, Any]) -> httpx.Response:
        return await rest(tenant, "POST", "/v1/bindings", body)

    unknown = await bind({"delivery_token": "no-such-token", "user_id": "u", "os_type": 1})
    assert (unknown.status_code, unknown.json()) == (400, UNKNOWN_DEVICE)
    of_other_app = await bind(
        {"delivery_token": foreign.delivery_token, "user_id": "u", "os_type": 1}
    )
    assert (of_other_app.status_code, of_other_app.json()) == (400, UNKNOWN_DEVICE)
    blank = await bind({"delivery_token": creds.delivery_token, "user_id": " ", "os_type": 1})
    assert (blank.status_code, blank.json()) == (
        400,
        refusal("need_userid", "UserId is required", 3012),
    )
    no_token = await bind({"delivery_token": "", "user_id": "u", "os_type": 1})
    assert (no_token.status_code, no_token.json()) == (
        400,
        refusal("need_deliverytoken", "DeliveryToken is required", 3001),
    )
    long_phone = await bind(
        {
            "delivery_token": creds.delivery_token,
            "user_id": "u",
            "os_type": 1,
            "phone_number": "1" * 33,
        }
    )
    assert (long_phone.status_code, long_phone.json()) == (
        400,
        refusal("invalid_param", "PhoneNumber is longer than 32 characters", 3028),
    )
    missing = await bind({"delivery_token": creds.delivery_token, "user_id": "u"})
    assert missing.status_code == 422
    assert [(e["loc"], e["type"]) for e in missing.json()["detail"]] == [
        (["body", "os_type"], "missing")
    ]
    wrong = await bind({"delivery_token": creds.delivery_token, "user_id": 7, "os_type": 1})
    assert [(e["loc"], e["type"]) for e in wrong.json()["detail"]] == [
        (["body", "user_id"], "string_type")
    ]


async def test_rest_unbind(tenant: Tenant) -> None:
    creds = await tenant.register("android")
    token = creds.delivery_token
    await sdk_bind(tenant, creds, "carol/work")  # a user id with a slash: percent-encoded
    path = "/v1/bindings/carol%2Fwork"
    removed = await rest(tenant, "DELETE", path, params={"delivery_token": token})
    assert (removed.status_code, removed.json()) == (
        200,
        {"delivery_token": token, "user_id": "carol/work", "removed": True},
    )
    again = await rest(tenant, "DELETE", path, params={"delivery_token": token})
    assert (again.status_code, again.json()) == (
        200,
        {"delivery_token": token, "user_id": "carol/work", "removed": False},
    )
    task_id = await rest_push(tenant, {"carol/work": "k-unbound"}, delivery_type=3)
    assert await task_rows(tenant, task_id) == [
        row("carol/work", "k-unbound", None, 1, "NoBindInfo", final=False)
    ]
    unknown = await rest(
        tenant, "DELETE", "/v1/bindings/u", params={"delivery_token": "no-such-token"}
    )
    assert (unknown.status_code, unknown.json()) == (400, UNKNOWN_DEVICE)
    no_token = await rest(tenant, "DELETE", "/v1/bindings/u")
    assert no_token.status_code == 422
    assert [(e["loc"], e["type"]) for e in no_token.json()["detail"]] == [
        (["query", "delivery_token"], "missing")
    ]


async def test_mps_unbind_of_a_rest_binding(tenant: Tenant) -> None:
    creds = await tenant.register("android")
    token = creds.delivery_token
    bound = await rest(
        tenant, "POST", "/v1/bindings", {"delivery_token": token, "user_id": "dan", "os_type": 1}
    )
    assert bound.status_code == 201
    response = await tenant.sdk().push_un_bind_async(
        models.PushUnBindRequest(
            app_id=tenant.app_id,
            workspace_id=tenant.workspace_id,
            delivery_token=token,
            user_id="dan",
        )
    )
    assert response.body.result_code == "OK"
    state = await rest(tenant, "GET", f"/v1/devices/{token}")
    assert (state.status_code, state.json()["user_id"]) == (200, None)


# --- devices: report and state ----------------------------------------------------------------


def from_mps(data: dict[str, str]) -> dict[str, Any]:
    """PushQueryDeviceState's Data as GET /v1/devices/{target} gives it."""
    return {
        "delivery_token": data["DeliveryToken"],
        "device_id": data["DeviceId"],
        "platform": data["Platform"],
        "online": data["Statue"] == "1",
        "third_token": data["ThirdToken"] or None,
        "user_id": data["UserId"] or None,
        "manufacturer": data["Manufacturer"] or None,
    }


async def test_rest_report_and_state_match_the_mps_actions(tenant: Tenant) -> None:
    by_rest, by_mps = await tenant.register("android"), await tenant.register("android")
    reported = await rest(
        tenant,
        "POST",
        f"/v1/devices/{by_rest.delivery_token}/report",
        {
            "os_type": 1,
            "third_channel": 2,
            "third_channel_device_token": "hms-token-0001",
            "model": "Mate 60",
            "app_version": "1.2.3",
        },
    )
    assert (reported.status_code, reported.json()) == (
        200,
        {"delivery_token": by_rest.delivery_token, "reported": True},
    )
    sdk = await tenant.sdk().push_report_async(
        models.PushReportRequest(
            app_id=tenant.app_id,
            workspace_id=tenant.workspace_id,
            delivery_token=by_mps.delivery_token,
            os_type=1,
            third_channel=2,
            third_channel_device_token="hms-token-0002",
            model="Mate 60",
            app_version="1.2.3",
        )
    )
    assert sdk.body.result_code == "OK"
    await sdk_bind(tenant, by_rest, "frank")
    bound = await rest(
        tenant,
        "POST",
        "/v1/bindings",
        {"delivery_token": by_mps.delivery_token, "user_id": "grace", "os_type": 1},
    )
    assert bound.status_code == 201

    async with tenant.device(by_rest):
        for creds, user, vendor_token in (
            (by_rest, "frank", "hms-token-0001"),
            (by_mps, "grace", "hms-token-0002"),
        ):
            token = creds.delivery_token
            mps_state = await sdk_state(tenant, token, 1)
            assert (mps_state.success, mps_state.code) == (True, "OK")
            state = await rest(tenant, "GET", f"/v1/devices/{token}", params={"target_type": 1})
            assert state.status_code == 200
            online = creds is by_rest
            assert (
                state.json()
                == from_mps(mps_state.data.to_map())
                == {
                    "delivery_token": token,
                    "device_id": mps_state.data.device_id,
                    "platform": "android",
                    "online": online,
                    "third_token": vendor_token,
                    "user_id": user,
                    "manufacturer": "Mate 60",
                }
            )
            by_user = await rest(tenant, "GET", f"/v1/devices/{user}", params={"target_type": 3})
            assert by_user.json() == state.json()
            assert (await rest(tenant, "GET", f"/v1/devices/{token}")).json() == state.json()


async def test_rest_device_state_refusals(tenant: Tenant) -> None:
    creds = await tenant.register("ios")
    other = await new_tenant(tenant.server)
    foreign = await other.register("android")
    plain = await rest(tenant, "GET", f"/v1/devices/{creds.delivery_token}")
    assert (plain.status_code, plain.json()) == (
        200,
        {
            "delivery_token": creds.delivery_token,
            "device_id": plain.json()["device_id"],
            "platform": "ios",
            "online": False,
            "third_token": None,
            "user_id": None,
            "manufacturer": None,
        },
    )
    no_device = refusal("invalid_param", "Target not found: no such device", 3028)
    for target in ("no-such-token", foreign.delivery_token):
        response = await rest(tenant, "GET", f"/v1/devices/{target}")
        assert (response.status_code, response.json()) == (400, no_device)
        mps = await sdk_state(tenant, target, 1)
        assert (mps.code, mps.message) == (
            "3028",
            "INVALID_PARAM: Target not found: no such device",
        )
    no_user = await rest(tenant, "GET", "/v1/devices/nobody", params={"target_type": 3})
    assert (no_user.status_code, no_user.json()) == (
        400,
        refusal("invalid_param", "Target not found: user has no bound device", 3028),
    )
    bad_type = await rest(tenant, "GET", "/v1/devices/x", params={"target_type": "user"})
    assert bad_type.status_code == 422
    assert [(e["loc"], e["type"]) for e in bad_type.json()["detail"]] == [
        (["query", "target_type"], "int_parsing")
    ]


async def test_rest_report_refusals(tenant: Tenant) -> None:
    creds = await tenant.register("android")
    path = f"/v1/devices/{creds.delivery_token}/report"
    unknown = await rest(tenant, "POST", "/v1/devices/no-such-token/report", {"os_type": 1})
    assert (unknown.status_code, unknown.json()) == (400, UNKNOWN_DEVICE)
    vendor = await rest(tenant, "POST", path, {"os_type": 1, "third_channel": 99})
    assert vendor.status_code == 400
    assert (vendor.json()["error"], vendor.json()["code"]) == ("invalid_param", 3028)
    assert vendor.json()["message"].startswith("ThirdChannel 99 is unknown; one of ")
    long_model = await rest(tenant, "POST", path, {"os_type": 1, "model": "m" * 257})
    assert (long_model.status_code, long_model.json()) == (
        400,
        refusal("invalid_param", "Model is longer than 256 characters", 3028),
    )
    shape = await rest(tenant, "POST", path, {"os_type": 1, "Model": "x"})
    assert shape.status_code == 422
    assert [(e["loc"], e["type"]) for e in shape.json()["detail"]] == [
        (["body", "Model"], "extra_forbidden")
    ]


# --- messages ---------------------------------------------------------------------------------


async def test_message_status(tenant: Tenant) -> None:
    creds = await tenant.register("android")
    token = creds.delivery_token
    task_id = await rest_push(tenant, {token: "k/1", "t-other": "k/1"}, expired_seconds=120)
    response = await rest(tenant, "GET", "/v1/messages/k%2F1", params={"target": token})
    assert response.status_code == 200
    body = response.json()
    created = datetime.fromisoformat(body.pop("created_at"))
    expires = datetime.fromisoformat(body.pop("expires_at"))
    assert (expires - created).total_seconds() == 120
    assert created.utcoffset() is not None
    assert body == {
        "task_id": task_id,
        "msg_key": "k/1",
        "target": token,
        "delivery_type": 1,
        "revoked_at": None,
        "deliveries": [row(token, "k/1", token, 0, "DeviceNotOnlineOrNoResponse", final=False)],
    }
    unknown_device = await rest(tenant, "GET", "/v1/messages/k%2F1", params={"target": "t-other"})
    assert unknown_device.json()["deliveries"] == [
        row("t-other", "k/1", None, 99999999, "NONE", final=True, detail="unknown_device")
    ]
    async with tenant.device(creds) as device:
        await next_message(device)

    async def acked() -> bool:
        got = await rest(tenant, "GET", "/v1/messages/k%2F1", params={"target": token})
        return bool(got.json()["deliveries"] == [row(token, "k/1", token, 2, "Acked", final=True)])

    await eventually(acked)


async def test_message_status_of_an_unknown_message_is_404(tenant: Tenant) -> None:
    creds = await tenant.register("android")
    await rest_push(tenant, {creds.delivery_token: "mine"})
    other = await new_tenant(tenant.server)
    for who, key, target in (
        (tenant, "nope", creds.delivery_token),
        (tenant, "mine", "someone-else"),
        (other, "mine", creds.delivery_token),
    ):
        response = await rest(who, "GET", f"/v1/messages/{key}", params={"target": target})
        assert (response.status_code, response.json()) == (
            404,
            {
                "error": "unknown_message",
                "message": f"this app has no message {key!r} to target {target!r}",
            },
        )
    no_target = await rest(tenant, "GET", "/v1/messages/mine")
    assert no_target.status_code == 422
    assert [(e["loc"], e["type"]) for e in no_target.json()["detail"]] == [
        (["query", "target"], "missing")
    ]


async def test_rest_revoke_message(tenant: Tenant) -> None:
    creds = await tenant.register("android")
    token = creds.delivery_token
    task_id = await rest_push(tenant, {token: "k-rev"})
    revoked = await rest(
        tenant, "POST", "/v1/messages/revoke", {"message_id": "k-rev", "target_id": token}
    )
    assert (revoked.status_code, revoked.json()) == (
        200,
        {"message_id": "k-rev", "target_id": token, "stopped": 1},
    )
    gone = [
        row(token, "k-rev", token, 0, "DeviceNotOnlineOrNoResponse", final=True, detail="revoked")
    ]
    assert await task_rows(tenant, task_id) == gone
    status = (await rest(tenant, "GET", "/v1/messages/k-rev", params={"target": token})).json()
    assert status["revoked_at"] is not None and status["deliveries"] == gone
    again = await rest(
        tenant, "POST", "/v1/messages/revoke", {"message_id": "k-rev", "target_id": token}
    )
    assert (again.status_code, again.json()) == (
        200,
        {"message_id": "k-rev", "target_id": token, "stopped": 0},
    )
    async with tenant.device(creds) as device:
        got: list[PushMessage] = []
        with contextlib.suppress(TimeoutError):
            got.append(await asyncio.wait_for(anext(aiter(device)), 1.0))
    assert got == []


async def test_rest_revoke_message_refusals(tenant: Tenant) -> None:
    creds = await tenant.register("android")
    await rest_push(tenant, {creds.delivery_token: "k-foreign"})
    other = await new_tenant(tenant.server)
    no_message = refusal(
        "invalid_param", "no message with that MessageId and TargetId in this app", 3028
    )
    for who, key in ((tenant, "nope"), (other, "k-foreign")):
        response = await rest(
            who,
            "POST",
            "/v1/messages/revoke",
            {"message_id": key, "target_id": creds.delivery_token},
        )
        assert (response.status_code, response.json()) == (400, no_message)
    blank = await rest(tenant, "POST", "/v1/messages/revoke", {"message_id": "k", "target_id": " "})
    assert (blank.status_code, blank.json()) == (
        400,
        refusal("token_or_userid_null", "TargetId is required", 3021),
    )
    missing = await rest(tenant, "POST", "/v1/messages/revoke", {"message_id": "k"})
    assert missing.status_code == 422
    assert [(e["loc"], e["type"]) for e in missing.json()["detail"]] == [
        (["body", "target_id"], "missing")
    ]


# --- tasks ------------------------------------------------------------------------------------


async def test_task_of_another_app_is_404(tenant: Tenant) -> None:
    creds = await tenant.register("android")
    task_id = await rest_push(tenant, {creds.delivery_token: "k-mine"})
    other = await new_tenant(tenant.server)
    for who, task in ((other, task_id), (tenant, "abc"), (tenant, "9" * 30)):
        response = await rest(who, "GET", f"/v1/tasks/{task}")
        assert (response.status_code, response.json()) == (
            404,
            {"error": "unknown_task", "message": f"this app has no task {task!r}"},
        )


async def test_rest_revoke_task(tenant: Tenant) -> None:
    a, b = await tenant.register("android"), await tenant.register("android")
    task_id = await rest_push(tenant, {a.delivery_token: "k-1", b.delivery_token: "k-2"})
    other = await new_tenant(tenant.server)
    foreign = await rest(other, "POST", f"/v1/tasks/{task_id}/revoke")
    assert (foreign.status_code, foreign.json()) == (
        400,
        refusal("invalid_param", f"this app has no task {task_id}", 3028),
    )
    not_a_task = await rest(tenant, "POST", "/v1/tasks/abc/revoke")
    assert (not_a_task.status_code, not_a_task.json()) == (
        404,
        {"error": "unknown_task", "message": "this app has no task 'abc'"},
    )
    revoked = await rest(tenant, "POST", f"/v1/tasks/{task_id}/revoke")
    assert (revoked.status_code, revoked.json()) == (200, {"task_id": task_id, "stopped": 2})
    assert await task_rows(tenant, task_id) == [
        row(
            t.delivery_token,
            k,
            t.delivery_token,
            0,
            "DeviceNotOnlineOrNoResponse",
            final=True,
            detail="revoked",
        )
        for t, k in ((a, "k-1"), (b, "k-2"))
    ]
    again = await rest(tenant, "POST", f"/v1/tasks/{task_id}/revoke")
    assert (again.status_code, again.json()) == (200, {"task_id": task_id, "stopped": 0})


# --- broadcast --------------------------------------------------------------------------------


async def create_template(tenant: Tenant, name: str, title: str, content: str) -> None:
    response = await tenant.sdk().create_template_async(
        models.CreateTemplateRequest(
            app_id=tenant.app_id,
            workspace_id=tenant.workspace_id,
            template_name=name,
            title=title,
            content=content,
        )
    )
    assert response.body.success is True, response.body


async def test_rest_broadcast_reaches_devices_as_an_mps_broadcast_does(tenant: Tenant) -> None:
    await create_template(tenant, "news", "News for #who#", "#what# today")
    creds = await tenant.register("android")
    await tenant.register("ios")  # another platform: not in the audience
    async with tenant.device(creds) as device:
        response = await rest(
            tenant,
            "POST",
            "/v1/pushes/broadcast",
            {
                "delivery_type": 1,
                "msg_key": "b-rest",
                "expired_seconds": 300,
                "template_name": "news",
                "template_values": {"who": "all", "what": "Sun"},
                "extras": {"k": "v"},
                "push_status": 1,
            },
        )
        assert response.status_code == 201, response.text
        task_id = response.json()["task_id"]
        by_rest = await next_message(device)
        sdk = await tenant.sdk().push_broadcast_async(
            models.PushBroadcastRequest(
                app_id=tenant.app_id,
                workspace_id=tenant.workspace_id,
                delivery_type=1,
                msgkey="b-mps",
                expired_seconds=300,
                template_name="news",
                template_key_value=json.dumps({"who": "all", "what": "Sun"}),
                extended_params=json.dumps({"k": "v"}),
                push_status=1,
            )
        )
        assert sdk.body.result_code == "OK", sdk.body.push_result.result_msg
        by_mps = await next_message(device)
    assert (by_rest.msg_key, by_rest.task_id) == ("b-rest", task_id)
    assert by_mps.msg_key == "b-mps"
    assert (
        shown(by_rest) == shown(by_mps) == ("News for all", "Sun today", {"k": "v"}, False, 0, None)
    )
    status = await rest(tenant, "GET", "/v1/messages/b-rest", params={"target": "*"})
    assert status.status_code == 200
    assert (status.json()["task_id"], len(status.json()["deliveries"])) == (task_id, 1)


async def test_rest_broadcast_refusals(tenant: Tenant) -> None:
    await create_template(tenant, "hello", "Hello #name#", "Hi")
    base = {
        "delivery_type": 1,
        "msg_key": "b-1",
        "expired_seconds": 300,
        "template_name": "hello",
        "template_values": {"name": "x"},
    }

    async def broadcast(**fields: Any) -> httpx.Response:
        return await rest(tenant, "POST", "/v1/pushes/broadcast", {**base, **fields})

    no_template = await broadcast(template_name="nope")
    assert (no_template.status_code, no_template.json()) == (
        404,
        refusal("template_not_exist", "this app has no template with TemplateName 'nope'", 3022),
    )
    no_value = await broadcast(template_values={})
    assert (no_value.status_code, no_value.json()) == (
        400,
        refusal(
            "templatekv_not_enough",
            "TemplateKeyValue has no value for the placeholder name of template 'hello'",
            3023,
        ),
    )
    to_users = await broadcast(delivery_type=3)
    assert (to_users.status_code, to_users.json()["error"], to_users.json()["code"]) == (
        400,
        "broadcast_only_support_by_device",
        3030,
    )
    period = await broadcast(bind_period=9)
    assert (period.status_code, period.json()) == (
        400,
        refusal("invalid_param", "BindPeriod must be one of 1, 2, 3, 4, got 9", 3028),
    )
    missing = await rest(
        tenant, "POST", "/v1/pushes/broadcast", {k: v for k, v in base.items() if k != "msg_key"}
    )
    assert missing.status_code == 422
    assert [(e["loc"], e["type"]) for e in missing.json()["detail"]] == [
        (["body", "msg_key"], "missing")
    ]
