"""The native REST API (``/v1``) and health checks.

Authentication: HTTP Basic with the app's AccessKeyId as user name and AccessKeySecret as
password (docs/rest.md). Device registration (``POST /v1/devices``) needs only the AppId and
WorkspaceId, which ship inside the app, as with MPS.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from openmps.apps import KeyOwner, find_app
from openmps.channels.registry import VENDORS
from openmps.errors import BusinessError
from openmps.runtime import Runtime

router = APIRouter()


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


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(_runtime)]


async def _owner(request: Request, runtime: RuntimeDep) -> KeyOwner:
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


class DeviceRegistration(BaseModel):
    app_id: str = Field(min_length=1, max_length=64)
    workspace_id: str = Field(min_length=1, max_length=64)
    platform: Literal["android", "ios"] = "android"


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.post("/v1/devices", status_code=201)
async def register_device(body: DeviceRegistration, runtime: RuntimeDep) -> Any:
    app_pk = await find_app(runtime.store, body.app_id, body.workspace_id)
    if app_pk is None:
        return JSONResponse(
            {
                "error": "unknown_app",
                "message": "no app with that app_id and workspace_id; see `openmps app list`",
            },
            status_code=404,
        )
    device = await runtime.devices.register(app_pk, body.platform)
    return {
        "delivery_token": device.delivery_token,
        "device_secret": device.device_secret,
        "platform": device.platform,
    }


class ChannelBody(BaseModel):
    settings: dict[str, Any]
    base_url: str | None = None


class PolicyBody(BaseModel):
    policy: Literal["own_first", "vendor_first"]


def _refused(exc: BusinessError) -> JSONResponse:
    return JSONResponse({"error": exc.name.lower(), "message": exc.detail}, status_code=400)


@router.get("/v1/channels")
async def list_channels(owner: OwnerDep, runtime: RuntimeDep) -> Any:
    return {"channels": await runtime.vendor_settings.describe(owner.app_pk)}


@router.put("/v1/channels/{vendor}")
async def set_channel(vendor: str, body: ChannelBody, owner: OwnerDep, runtime: RuntimeDep) -> Any:
    try:
        await runtime.vendor_settings.set(
            owner.app_pk, vendor, body.settings, base_url=body.base_url
        )
    except BusinessError as exc:
        return _refused(exc)
    runtime.vendor_dispatcher.forget_channel(owner.app_pk, vendor)
    return {"vendor": vendor, "stored": True}


@router.delete("/v1/channels/{vendor}")
async def delete_channel(vendor: str, owner: OwnerDep, runtime: RuntimeDep) -> Any:
    if vendor not in VENDORS:
        return _refused(
            BusinessError(
                3028, "INVALID_PARAM", f"unknown vendor {vendor!r}; one of: {', '.join(VENDORS)}"
            )
        )
    await runtime.vendor_settings.remove(owner.app_pk, vendor)
    runtime.vendor_dispatcher.forget_channel(owner.app_pk, vendor)
    return {"vendor": vendor, "removed": True}


@router.put("/v1/routing")
async def set_routing(body: PolicyBody, owner: OwnerDep, runtime: RuntimeDep) -> Any:
    await runtime.vendor_settings.set_policy(owner.app_pk, body.policy)
    return {"policy": body.policy}


@router.get("/v1/tasks/{task_id}")
async def task_status(task_id: str, owner: OwnerDep, runtime: RuntimeDep) -> Any:
    rows = None
    if task_id.isdigit() and len(task_id) < 19:
        rows = await runtime.pushes.task_status(int(task_id), app_pk=owner.app_pk)
    if rows is None:
        return JSONResponse(
            {"error": "unknown_task", "message": f"this app has no task {task_id!r}"},
            status_code=404,
        )
    return {"task_id": task_id, "deliveries": [row.as_json() for row in rows]}
