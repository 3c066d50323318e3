"""MPS actions: decode an action's form fields, call the service layer; the envelope of each
action's answer is named by its family (openmps.mps.call)."""

from __future__ import annotations

from openmps.errors import BusinessError
from openmps.ids import parse_id
from openmps.mps.analytics_actions import HANDLERS as ANALYTICS_HANDLERS
from openmps.mps.call import Call, Handler, app_of
from openmps.mps.form import get_int, get_str, json_map
from openmps.mps.schedule_actions import HANDLERS as SCHEDULE_HANDLERS
from openmps.mps.template_actions import HANDLERS as TEMPLATE_HANDLERS
from openmps.push import MAX_EXTENDED_PARAMS, PushRequest

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


async def push_simple(call: Call) -> str:
    app_pk = app_of(call)
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
        strategy_content=get_str(form, "StrategyContent", required=False),
    )
    return await call.runtime.submit(app_pk, request)


async def push_bind(call: Call) -> str:
    app_pk = app_of(call)
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
    app_pk = app_of(call)
    token = get_str(call.form, "DeliveryToken", required=True, missing=(3001, "NEED_DELIVERYTOKEN"))
    user_id = get_str(call.form, "UserId", required=True, missing=(3012, "NEED_USERID"))
    assert token is not None and user_id is not None
    await call.runtime.devices.unbind(app_pk, token, user_id)
    return ""


_REPORT_EXTRAS = ("AppVersion", "Channel", "ConnectType", "Imei", "Imsi", "Model", "PushVersion")


async def push_report(call: Call) -> str:
    app_pk = app_of(call)
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
    app_pk = app_of(call)
    msg_key = get_str(call.form, "MessageId", required=True)
    target = get_str(call.form, "TargetId", required=True, missing=(3021, "TOKEN_OR_USERID_NULL"))
    assert msg_key is not None and target is not None
    stopped = await call.runtime.pushes.revoke_message(app_pk, msg_key, target)
    return str(stopped)


async def revoke_push_task(call: Call) -> str:
    app_pk = app_of(call)
    task_id = get_str(call.form, "TaskId", required=True)
    assert task_id is not None
    number = parse_id(task_id)
    if number is None:
        raise BusinessError(3028, "INVALID_PARAM", f"this app has no task {task_id}")
    stopped = await call.runtime.pushes.revoke_task(app_pk, number)
    return str(stopped)


async def push_query_device_state(call: Call) -> dict[str, str]:
    app_pk = app_of(call)
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
    "RevokePushTask": (revoke_push_task, "A"),
    "PushQueryDeviceState": (push_query_device_state, "D"),
}
HANDLERS.update(TEMPLATE_HANDLERS)
HANDLERS.update(ANALYTICS_HANDLERS)
HANDLERS.update(SCHEDULE_HANDLERS)
