"""MPS actions: decode an action's form fields, call the service layer, build its envelope.

Envelope families (reference 1.5): A ``PushResult`` for the push family, C (``Success``,
``Code``, ``Message``, ``Data``) for PushQueryDeviceState. A business refusal is HTTP 200 with
the MPS result code in the envelope, as MPS does; the SDK returns it without raising.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from openmps.apps import KeyOwner
from openmps.errors import BusinessError
from openmps.mps.form import get_int, get_str, json_map
from openmps.push import MAX_EXTENDED_PARAMS, PushRequest
from openmps.runtime import Runtime

Form = Mapping[str, str]


@dataclass(frozen=True)
class Call:
    runtime: Runtime
    owner: KeyOwner
    form: Form


Handler = Callable[[Call], Awaitable[Any]]

# Every MPS action of the OpenAPI (reference 3); those without a handler answer "not supported".
MPS_ACTIONS = frozenset(
    {
        "PushSimple",
        "PushTemplate",
        "PushMultiple",
        "PushBroadcast",
        "PushBind",
        "PushUnBind",
        "PushReport",
        "PushQueryDeviceState",
        "RevokePushMessage",
        "RevokePushTask",
        "QueryPushAnalysisCoreIndex",
        "ListAnalysisCoreIndex",
        "QueryPushAnalysisTaskList",
        "QueryPushAnalysisTaskDetail",
        "QueryPushSchedulerList",
        "QueryMpsSchedulerList",
        "CancelPushScheduler",
        "CreateTemplate",
        "DeleteTemplate",
        "GetTemplate",
        "ListTemplatePage",
    }
)


def _app(call: Call) -> int:
    """The app the request names, which must be the access key's own (3003, 3007)."""
    app_id = get_str(call.form, "AppId", required=True, missing=(3003, "NEED_APPID_WORKSPACEID"))
    workspace = get_str(
        call.form, "WorkspaceId", required=True, missing=(3003, "NEED_APPID_WORKSPACEID")
    )
    if app_id != call.owner.app_id or workspace != call.owner.workspace_id:
        raise BusinessError(
            3007,
            "APPID_WRONG",
            "AppId and WorkspaceId do not name the app this AccessKeyId belongs to",
        )
    return call.owner.app_pk


async def push_simple(call: Call) -> str:
    app_pk = _app(call)
    form = call.form
    targets = json_map(form, "TargetMsgkey")
    extras = json_map(form, "ExtendedParams", max_keys=MAX_EXTENDED_PARAMS)
    request = PushRequest(
        delivery_type=get_int(form, "DeliveryType", required=False),
        targets=targets,
        expired_seconds=get_int(form, "ExpiredSeconds", required=False),
        title=form.get("Title"),
        content=form.get("Content"),
        extras=extras,
        silent=get_int(form, "Silent", required=False),
        push_action=get_int(form, "PushAction", required=False),
        push_style=get_int(form, "PushStyle", required=False),
        uri=get_str(form, "Uri", required=False),
        task_name=get_str(form, "TaskName", required=False),
        strategy_type=get_int(form, "StrategyType", required=False),
    )
    task_id = await call.runtime.pushes.push_simple(app_pk, request)
    return str(task_id)


async def push_bind(call: Call) -> str:
    app_pk = _app(call)
    token = get_str(call.form, "DeliveryToken", required=True, missing=(3001, "NEED_DELIVERYTOKEN"))
    user_id = get_str(call.form, "UserId", required=True, missing=(3012, "NEED_USERID"))
    os_type = get_int(call.form, "OsType", required=True)
    assert token is not None and user_id is not None and os_type is not None
    await call.runtime.devices.bind(
        app_pk,
        token,
        user_id,
        os_type=os_type,
        phone=get_str(call.form, "PhoneNumber", required=False),
    )
    return ""


async def push_unbind(call: Call) -> str:
    app_pk = _app(call)
    token = get_str(call.form, "DeliveryToken", required=True, missing=(3001, "NEED_DELIVERYTOKEN"))
    user_id = get_str(call.form, "UserId", required=True, missing=(3012, "NEED_USERID"))
    assert token is not None and user_id is not None
    await call.runtime.devices.unbind(app_pk, token, user_id)
    return ""


_REPORT_EXTRAS = ("AppVersion", "Channel", "ConnectType", "Imei", "Imsi", "Model", "PushVersion")


async def push_report(call: Call) -> str:
    app_pk = _app(call)
    form = call.form
    token = get_str(form, "DeliveryToken", required=True, missing=(3001, "NEED_DELIVERYTOKEN"))
    os_type = get_int(form, "OsType", required=True)
    assert token is not None and os_type is not None
    await call.runtime.devices.report(
        app_pk,
        token,
        os_type=os_type,
        third_channel=get_int(form, "ThirdChannel", required=False),
        third_token=get_str(form, "ThirdChannelDeviceToken", required=False),
        extra={k: form[k] for k in _REPORT_EXTRAS if form.get(k)},
    )
    return ""


async def revoke_push_message(call: Call) -> str:
    app_pk = _app(call)
    msg_key = get_str(call.form, "MessageId", required=True)
    target = get_str(call.form, "TargetId", required=True, missing=(3021, "TOKEN_OR_USERID_NULL"))
    assert msg_key is not None and target is not None
    stopped = await call.runtime.pushes.revoke_message(app_pk, msg_key, target)
    return str(stopped)


async def push_query_device_state(call: Call) -> dict[str, str]:
    app_pk = _app(call)
    target = get_str(call.form, "Target", required=True, missing=(3021, "TOKEN_OR_USERID_NULL"))
    assert target is not None
    state = await call.runtime.devices.state(
        app_pk, target, get_int(call.form, "TargetType", required=False)
    )
    return {
        "DeliveryToken": state.delivery_token,
        "DeviceId": state.device_id,
        "Manufacturer": state.manufacturer or "",
        "Platform": state.platform,
        "Statue": "1" if state.online else "0",
        "ThirdToken": state.third_token or "",
        "UserId": state.user_id or "",
    }


# action -> (handler, envelope family)
HANDLERS: dict[str, tuple[Handler, str]] = {
    "PushSimple": (push_simple, "A"),
    "PushBind": (push_bind, "A"),
    "PushUnBind": (push_unbind, "A"),
    "PushReport": (push_report, "A"),
    "RevokePushMessage": (revoke_push_message, "A"),
    "PushQueryDeviceState": (push_query_device_state, "C"),
}


def success(family: str, request_id: str, data: Any) -> dict[str, Any]:
    if family == "A":
        return {
            "RequestId": request_id,
            "ResultCode": "OK",
            "ResultMessage": "",
            "PushResult": {"Success": True, "ResultMsg": "", "Data": data},
        }
    return {"RequestId": request_id, "Success": True, "Code": "OK", "Message": "", "Data": data}


def failure(family: str, request_id: str, error: BusinessError) -> dict[str, Any]:
    if family == "A":
        return {
            "RequestId": request_id,
            "ResultCode": str(error.result_code),
            "ResultMessage": error.name,
            "PushResult": {"Success": False, "ResultMsg": error.detail},
        }
    return {
        "RequestId": request_id,
        "Success": False,
        "Code": str(error.result_code),
        "Message": f"{error.name}: {error.detail}",
    }
