"""The native REST API (``/v1``) and health checks.

Authentication: HTTP Basic with the app's AccessKeyId as user name and AccessKeySecret as
password (docs/rest.md). Device registration (``POST /v1/devices``) needs only the AppId and
WorkspaceId, which ship inside the app, as with MPS.

Every endpoint calls the same service method as its MPS action (openmps.mps.actions); the
models here check only the shape of a body (a wrong shape is FastAPI's 422), the service layer
checks its content: its refusal (a ``BusinessError``) is answered 400 by :func:`refused`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Security
from fastapi.openapi.models import HTTPBase as HTTPBaseModel
from fastapi.responses import JSONResponse
from fastapi.security.base import SecurityBase
from pydantic import BaseModel, ConfigDict, Field

from openmps.apps import KeyOwner, find_app
from openmps.channels.registry import VENDORS
from openmps.errors import BusinessError
from openmps.ids import parse_id
from openmps.push import BroadcastRequest, PushRequest, StatusRow
from openmps.runtime import Runtime
from openmps.templates import apply

router = APIRouter()

# The OpenAPI tags of this module's endpoints, in the order /docs shows them.
TAGS: list[dict[str, Any]] = [
    {"name": "pushes", "description": "Push messages (the MPS push actions)."},
    {"name": "messages", "description": "One message: its status, its revocation."},
    {"name": "tasks", "description": "One push task and the status of its deliveries."},
    {
        "name": "devices",
        "description": "Device registration, vendor reports and device state.",
    },
    {"name": "bindings", "description": "User ids bound to devices (PushBind, PushUnBind)."},
    {"name": "channels", "description": "Vendor channel settings and routing."},
    {"name": "templates", "description": "Message templates with #name# placeholders."},
    {"name": "schedules", "description": "Scheduled and cyclic push jobs."},
    {"name": "review", "description": "Pushes held for approval (status -1)."},
    {"name": "analytics", "description": "Arrivals, opens and ignores, per task and window."},
    {"name": "health", "description": "Liveness."},
]


class RestError(Exception):
    """A REST refusal, answered as ``{"error": ..., "message": ...}`` with its status."""

    def __init__(
        self, status: int, error: str, message: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.headers = headers


async def rest_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RestError)
    return JSONResponse(
        {"error": exc.error, "message": exc.message}, status_code=exc.status, headers=exc.headers
    )


# MPS result codes that mean "no such thing" (answered 404); every other refusal is a 400.
NOT_FOUND_CODES = frozenset({3022})  # TEMPLATE_NOT_EXIST


def refused(exc: BusinessError) -> JSONResponse:
    """The REST answer to a refusal of the service layer: 400 (404 for a code of
    ``NOT_FOUND_CODES``) with the MPS result name and code."""
    return JSONResponse(
        {"error": exc.name.lower(), "message": exc.detail, "code": exc.result_code},
        status_code=404 if exc.result_code in NOT_FOUND_CODES else 400,
    )


_refused = refused  # the name this helper had first


async def business_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    """A ``BusinessError`` a REST endpoint lets through (the MPS front door catches its own)."""
    assert isinstance(exc, BusinessError)
    return refused(exc)


def _not_found(error: str, message: str) -> JSONResponse:
    return JSONResponse({"error": error, "message": message}, status_code=404)


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(_runtime)]


class _BasicScheme(SecurityBase):
    """Declares HTTP Basic in the OpenAPI document (the Authorize button of /docs); the
    header itself is checked by ``_owner``, which answers our own 401."""

    def __init__(self) -> None:
        self.model = HTTPBaseModel(
            scheme="basic", description="AccessKeyId as user name, AccessKeySecret as password"
        )
        self.scheme_name = "basic"

    async def __call__(self) -> None:
        return None


_basic = _BasicScheme()


async def _owner(
    request: Request,
    runtime: RuntimeDep,
    _declared: Annotated[None, Security(_basic)],
) -> KeyOwner:
    unauthorized = RestError(
        401,
        "unauthorized",
        "send HTTP Basic auth: AccessKeyId as user, AccessKeySecret as password",
        headers={"WWW-Authenticate": 'Basic realm="openmps"'},
    )
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        raise unauthorized
    try:
        key_id, _, secret = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise unauthorized from None
    owner = await runtime.keys.get(key_id)
    if owner is None or not hmac.compare_digest(owner.secret.encode(), secret.encode()):
        raise unauthorized
    return owner


OwnerDep = Annotated[KeyOwner, Depends(_owner)]


# --- shapes --------------------------------------------------------------------------------

# An integer field: JSON integers only (no "1", 1.0 or true), within 32 bits.
Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]


class _Body(BaseModel):
    """A request body: exact JSON types, no field the endpoint does not know."""

    model_config = ConfigDict(strict=True, extra="forbid")


class ErrorBody(BaseModel):
    error: str = Field(description="the refusal, lower-cased (MPS result name for a 400)")
    message: str = Field(description="what is wrong and how to fix it")
    code: int | None = Field(None, description="the MPS result code (400 answers only)")


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "refused by the service layer (MPS result code)"},
    401: {"model": ErrorBody, "description": "missing or wrong HTTP Basic credentials"},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "this app has no such thing"}
}


class DeviceRegistration(BaseModel):
    app_id: str = Field(min_length=1, max_length=64)
    workspace_id: str = Field(min_length=1, max_length=64)
    platform: Literal["android", "ios"] = "android"


class PushBody(_Body):
    """PushSimple (reference 4.2); each field is the MPS field of the same name."""

    delivery_type: Int32 = Field(description="1 Android device, 2 iOS device, 3 user id")
    targets: dict[str, str] = Field(
        description="target (delivery token or user id) -> msgKey; at most 10 (TargetMsgkey)"
    )
    expired_seconds: Int32 = Field(description="how long the message is kept for the device")
    title: str
    content: str
    extras: dict[str, str] | None = Field(None, description="ExtendedParams; at most 20 keys")
    silent: Int32 | None = Field(None, description="1 silent, 0 (default) shown")
    push_action: Int32 | None = Field(None, description="0 open the uri (default), 1 an intent")
    push_style: Int32 | None = Field(None, description="0 default, 1 big text, 2 picture")
    uri: str | None = None
    task_name: str | None = None
    strategy_type: Int32 | None = Field(None, description="0 now (default), 1 scheduled, 2 cyclic")
    strategy_content: dict[str, Any] | None = Field(
        None, description="the StrategyContent object (reference 4.6), when strategy_type > 0"
    )


class BroadcastBody(_Body):
    """PushBroadcast (reference 4.5): a template to every device of a platform; title,
    content, uri and push style come from the template."""

    delivery_type: Int32 = Field(description="1 Android, 2 iOS")
    msg_key: str = Field(description="the message's unique msgKey (Msgkey)")
    expired_seconds: Int32
    template_name: str
    template_values: dict[str, str] | None = Field(
        None, description="placeholder -> value (TemplateKeyValue)"
    )
    extras: dict[str, str] | None = Field(None, description="ExtendedParams; at most 20 keys")
    silent: Int32 | None = None
    push_action: Int32 | None = Field(None, description="overrides the template's action")
    task_name: str | None = None
    strategy_type: Int32 | None = None
    strategy_content: dict[str, Any] | None = None
    push_status: Int32 | None = Field(None, description="0 bound (default), 1 all, 2 unbound")
    bind_period: Int32 | None = Field(None, description="1 7 d, 2 15 d, 3 60 d, 4 any (default)")
    unbind_period: Int32 | None = Field(None, description="as bind_period, for unbinding")
    android_channel: Int32 | None = Field(None, description="1 own channel only, 2 (default) any")


def _strategy(content: dict[str, Any] | None) -> str | None:
    """StrategyContent as MPS sends it: the JSON text of the object."""
    return None if content is None else json.dumps(content, ensure_ascii=False)


class TaskCreated(BaseModel):
    task_id: str


class PushAccepted(BaseModel):
    """What a push answers: one of the two."""

    task_id: str | None = Field(None, description="an immediate push: its task")
    schedule_id: str | None = Field(
        None, description="a scheduled or cyclic push: its job (GET /v1/schedules/{id})"
    )


def accepted(request: PushRequest | BroadcastRequest, answer: str) -> dict[str, str]:
    """The 201 body of a push, from what ``Runtime.submit`` answered: the task id of an
    immediate push, the job id of a scheduled or cyclic one (strategy_type 1 or 2)."""
    return {("task_id" if request.strategy_type in (None, 0) else "schedule_id"): answer}


class BindingBody(_Body):
    """PushBind (reference 5.1)."""

    delivery_token: str
    user_id: str
    os_type: Int32 = Field(description="1 Android, 2 iOS, 7 HarmonyOS")
    phone_number: str | None = None


class BindingCreated(BaseModel):
    delivery_token: str
    user_id: str
    unblocked: int = Field(description="messages to this user that waited for a binding")


class BindingRemoved(BaseModel):
    delivery_token: str
    user_id: str
    removed: bool = Field(description="false when the user was not bound to that device")


class ReportBody(_Body):
    """PushReport (reference 5.1), less the DeliveryToken, which is in the path."""

    os_type: Int32 = Field(description="1 Android, 2 iOS, 7 HarmonyOS")
    third_channel: Int32 | None = Field(None, description="the vendor (docs/vendor-channels.md)")
    third_channel_device_token: str | None = Field(None, description="the vendor's token")
    app_version: str | None = None
    channel: str | None = None
    connect_type: str | None = None
    imei: str | None = None
    imsi: str | None = None
    model: str | None = None
    push_version: str | None = None


# ReportBody field -> the PushReport field it is stored as (what PushQueryDeviceState reads).
_REPORT_FIELDS = {
    "app_version": "AppVersion",
    "channel": "Channel",
    "connect_type": "ConnectType",
    "imei": "Imei",
    "imsi": "Imsi",
    "model": "Model",
    "push_version": "PushVersion",
}


class Reported(BaseModel):
    delivery_token: str
    reported: bool


class DeviceStateOut(BaseModel):
    """PushQueryDeviceState's Data, in snake_case; ``online`` is its ``Statue``."""

    delivery_token: str
    device_id: str
    platform: str
    online: bool
    third_token: str | None
    user_id: str | None = Field(description="the user bound last, if any")
    manufacturer: str | None = Field(description="the model the device reported")


class RevokeMessageBody(_Body):
    """RevokePushMessage (reference 5.3)."""

    message_id: str = Field(description="the msgKey the message was pushed with")
    target_id: str = Field(description="the delivery token or user id it was pushed to")


class MessageRevoked(BaseModel):
    message_id: str
    target_id: str
    stopped: int = Field(description="deliveries still pending that will not happen now")


class DeliveryRow(BaseModel):
    """One delivery of a message (as ``openmps status TASK_ID --json`` shows it)."""

    target: str
    msg_key: str
    device: str | None
    channel: str
    status_channel: str
    status_code: int
    status_name: str
    final: bool
    detail: str | None


class TaskRevoked(BaseModel):
    task_id: str
    stopped: int = Field(description="deliveries still pending that will not happen now")


class TaskStatusOut(BaseModel):
    task_id: str
    deliveries: list[DeliveryRow]


class MessageStatusOut(BaseModel):
    task_id: str
    msg_key: str
    target: str
    delivery_type: int
    created_at: str
    expires_at: str
    revoked_at: str | None
    deliveries: list[DeliveryRow]


def _rows(rows: list[StatusRow]) -> list[dict[str, Any]]:
    return [row.as_json() for row in rows]


# --- health and device registration --------------------------------------------------------


@router.get("/healthz", tags=["health"])
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.post(
    "/v1/devices",
    status_code=201,
    tags=["devices"],
    responses={404: {"model": ErrorBody, "description": "no such app"}},
)
async def register_device(body: DeviceRegistration, runtime: RuntimeDep) -> Any:
    """Register a device (what the device SDK does first); no auth: the AppId ships in the
    app, as with MPS."""
    app_pk = await find_app(runtime.store, body.app_id, body.workspace_id)
    if app_pk is None:
        return _not_found(
            "unknown_app", "no app with that app_id and workspace_id; see `openmps app list`"
        )
    device = await runtime.devices.register(app_pk, body.platform)
    return {
        "delivery_token": device.delivery_token,
        "device_secret": device.device_secret,
        "platform": device.platform,
    }


# --- pushes --------------------------------------------------------------------------------


@router.post(
    "/v1/pushes",
    status_code=201,
    response_model=PushAccepted,
    response_model_exclude_none=True,
    tags=["pushes"],
    responses=_ERRORS,
)
async def push_simple(body: PushBody, owner: OwnerDep, runtime: RuntimeDep) -> Any:
    """PushSimple: one title and content to up to 10 targets."""
    request = PushRequest(
        delivery_type=body.delivery_type,
        targets=body.targets,
        expired_seconds=body.expired_seconds,
        title=body.title,
        content=body.content,
        extras=body.extras,
        silent=body.silent,
        push_action=body.push_action,
        push_style=body.push_style,
        uri=body.uri,
        task_name=body.task_name,
        strategy_type=body.strategy_type,
        strategy_content=_strategy(body.strategy_content),
    )
    return accepted(request, await runtime.submit(owner.app_pk, request))


@router.post(
    "/v1/pushes/broadcast",
    status_code=201,
    response_model=PushAccepted,
    response_model_exclude_none=True,
    tags=["pushes"],
    responses={**_ERRORS, 404: {"model": ErrorBody, "description": "no such template"}},
)
async def push_broadcast(body: BroadcastBody, owner: OwnerDep, runtime: RuntimeDep) -> Any:
    """PushBroadcast: one message from a template to every device of a platform that matches
    the audience."""
    request = BroadcastRequest(
        delivery_type=body.delivery_type,
        msg_key=body.msg_key,
        expired_seconds=body.expired_seconds,
        title=None,
        content=None,
        extras=body.extras,
        silent=body.silent,
        push_action=body.push_action,
        task_name=body.task_name,
        strategy_type=body.strategy_type,
        strategy_content=_strategy(body.strategy_content),
        push_status=body.push_status,
        bind_period=body.bind_period,
        unbind_period=body.unbind_period,
        android_channel=body.android_channel,
    )
    rendered = await runtime.templates.render(
        owner.app_pk, body.template_name, body.template_values
    )
    return accepted(request, await runtime.submit(owner.app_pk, apply(request, rendered)))


# --- bindings and devices ------------------------------------------------------------------


@router.post(
    "/v1/bindings",
    status_code=201,
    response_model=BindingCreated,
    tags=["bindings"],
    responses=_ERRORS,
)
async def bind(body: BindingBody, owner: OwnerDep, runtime: RuntimeDep) -> Any:
    """PushBind: bind a user id to a device; messages waiting for that user go to it now."""
    unblocked = await runtime.devices.bind(
        owner.app_pk,
        body.delivery_token,
        body.user_id,
        os_type=body.os_type,
        phone=body.phone_number,
    )
    return {"delivery_token": body.delivery_token, "user_id": body.user_id, "unblocked": unblocked}


@router.delete(
    "/v1/bindings/{user_id:path}",
    response_model=BindingRemoved,
    tags=["bindings"],
    responses=_ERRORS,
)
async def unbind(
    user_id: str,
    delivery_token: Annotated[str, Query(description="the device to unbind the user from")],
    owner: OwnerDep,
    runtime: RuntimeDep,
) -> Any:
    """PushUnBind: remove the binding of a user id to a device."""
    removed = await runtime.devices.unbind(owner.app_pk, delivery_token, user_id)
    return {"delivery_token": delivery_token, "user_id": user_id, "removed": removed}


@router.post(
    "/v1/devices/{delivery_token}/report",
    response_model=Reported,
    tags=["devices"],
    responses=_ERRORS,
)
async def report(
    delivery_token: str, body: ReportBody, owner: OwnerDep, runtime: RuntimeDep
) -> Any:
    """PushReport: the device's vendor channel and token, and what it says of itself."""
    fields = body.model_dump()
    await runtime.devices.report(
        owner.app_pk,
        delivery_token,
        os_type=body.os_type,
        third_channel=body.third_channel,
        third_token=body.third_channel_device_token,
        extra={mps: fields[name] for name, mps in _REPORT_FIELDS.items() if fields[name]},
    )
    return {"delivery_token": delivery_token, "reported": True}


@router.get(
    "/v1/devices/{target:path}",
    response_model=DeviceStateOut,
    tags=["devices"],
    responses=_ERRORS,
)
async def device_state(
    target: str,
    owner: OwnerDep,
    runtime: RuntimeDep,
    target_type: Annotated[
        int | None, Query(description="3: target is a user id; else a delivery token")
    ] = None,
) -> Any:
    """PushQueryDeviceState: a device (or the device a user was bound to last)."""
    state = await runtime.devices.state(owner.app_pk, target, target_type)
    return {
        "delivery_token": state.delivery_token,
        "device_id": state.device_id,
        "platform": state.platform,
        "online": state.online,
        "third_token": state.third_token,
        "user_id": state.user_id,
        "manufacturer": state.manufacturer,
    }


# --- messages and tasks --------------------------------------------------------------------


@router.post(
    "/v1/messages/revoke",
    response_model=MessageRevoked,
    tags=["messages"],
    responses=_ERRORS,
)
async def revoke_message(body: RevokeMessageBody, owner: OwnerDep, runtime: RuntimeDep) -> Any:
    """RevokePushMessage: stop a message of the last 7 days; a device that has it is told."""
    stopped = await runtime.pushes.revoke_message(owner.app_pk, body.message_id, body.target_id)
    return {"message_id": body.message_id, "target_id": body.target_id, "stopped": stopped}


@router.get(
    "/v1/messages/{msg_key:path}",
    response_model=MessageStatusOut,
    tags=["messages"],
    responses={401: _ERRORS[401], **_NOT_FOUND},
)
async def message_status(
    msg_key: str,
    target: Annotated[str, Query(description="the delivery token or user id pushed to")],
    owner: OwnerDep,
    runtime: RuntimeDep,
) -> Any:
    """One message (a msgKey and its target) and the status of each of its deliveries."""
    found = await runtime.pushes.message_status(owner.app_pk, msg_key, target)
    if found is None:
        return _not_found(
            "unknown_message", f"this app has no message {msg_key!r} to target {target!r}"
        )
    message, rows = found
    return {
        "task_id": str(message.task_pk),
        "msg_key": message.msg_key,
        "target": message.target,
        "delivery_type": message.delivery_type,
        "created_at": message.created_at.isoformat(),
        "expires_at": message.expires_at.isoformat(),
        "revoked_at": message.revoked_at.isoformat() if message.revoked_at else None,
        "deliveries": _rows(rows),
    }


@router.get(
    "/v1/tasks/{task_id}",
    response_model=TaskStatusOut,
    tags=["tasks"],
    responses={401: _ERRORS[401], **_NOT_FOUND},
)
async def task_status(task_id: str, owner: OwnerDep, runtime: RuntimeDep) -> Any:
    """The status of every delivery of a task."""
    number = parse_id(task_id)
    rows = None
    if number is not None:
        rows = await runtime.pushes.task_status(number, app_pk=owner.app_pk)
    if rows is None:
        return _not_found("unknown_task", f"this app has no task {task_id!r}")
    return {"task_id": task_id, "deliveries": _rows(rows)}


@router.post(
    "/v1/tasks/{task_id}/revoke",
    response_model=TaskRevoked,
    tags=["tasks"],
    responses={**_ERRORS, **_NOT_FOUND},
)
async def revoke_task(task_id: str, owner: OwnerDep, runtime: RuntimeDep) -> Any:
    """RevokePushTask: stop every message of a task of the last 7 days (a multiple push,
    a broadcast); devices that have them are told."""
    number = parse_id(task_id)
    if number is None:
        return _not_found("unknown_task", f"this app has no task {task_id!r}")
    stopped = await runtime.pushes.revoke_task(owner.app_pk, number)
    return {"task_id": task_id, "stopped": stopped}


# --- vendor channels -----------------------------------------------------------------------


class ChannelBody(BaseModel):
    settings: dict[str, Any]
    base_url: str | None = None


class PolicyBody(BaseModel):
    policy: Literal["own_first", "vendor_first"]


@router.get("/v1/channels", tags=["channels"], responses={401: _ERRORS[401]})
async def list_channels(owner: OwnerDep, runtime: RuntimeDep) -> Any:
    """The app's vendor channels, every secret shown as ``<hidden>``."""
    return {"channels": await runtime.vendor_settings.describe(owner.app_pk)}


@router.put("/v1/channels/{vendor}", tags=["channels"], responses=_ERRORS)
async def set_channel(vendor: str, body: ChannelBody, owner: OwnerDep, runtime: RuntimeDep) -> Any:
    """Store a vendor channel's settings (docs/vendor-channels.md)."""
    await runtime.vendor_settings.set(owner.app_pk, vendor, body.settings, base_url=body.base_url)
    runtime.vendor_dispatcher.forget_channel(owner.app_pk, vendor)
    return {"vendor": vendor, "stored": True}


@router.delete("/v1/channels/{vendor}", tags=["channels"], responses=_ERRORS)
async def delete_channel(vendor: str, owner: OwnerDep, runtime: RuntimeDep) -> Any:
    """Remove a vendor channel's settings."""
    if vendor not in VENDORS:
        raise BusinessError(
            3028, "INVALID_PARAM", f"unknown vendor {vendor!r}; one of: {', '.join(VENDORS)}"
        )
    await runtime.vendor_settings.remove(owner.app_pk, vendor)
    runtime.vendor_dispatcher.forget_channel(owner.app_pk, vendor)
    return {"vendor": vendor, "removed": True}


@router.put("/v1/routing", tags=["channels"], responses={401: _ERRORS[401]})
async def set_routing(body: PolicyBody, owner: OwnerDep, runtime: RuntimeDep) -> Any:
    """Choose the own channel or the vendor token first (docs/vendor-channels.md)."""
    await runtime.vendor_settings.set_policy(owner.app_pk, body.policy)
    return {"policy": body.policy}
