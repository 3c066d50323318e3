"""What every MPS action handler gets (a ``Call``) and the envelopes its answer goes out in.

Envelope families (reference 1.5):

- ``A``: ``ResultCode``/``ResultMessage`` + ``PushResult`` (the push family);
- ``B``: ``ResultCode``/``ResultMessage`` + ``ResultContent`` (queries, CancelPushScheduler);
- ``BS``: family B with ``Success`` at the top and ``Success``/``ResultMsg`` inside
  ``ResultContent`` (ListAnalysisCoreIndex); the handler returns ResultContent's ``Data``;
- ``C``: ``Success``/``Code``/``Msg``/``Data`` (template CRUD);
- ``CP``: family C whose handler returns the body's own fields (ListTemplatePage: ``Data``
  with ``CurrentPage``, ``PageSize`` and ``TotalSize`` beside it);
- ``D``: ``Success``/``Code``/``Message``/``Data`` (PushQueryDeviceState).

A business refusal is HTTP 200 with the MPS result code in the envelope, as MPS does; the SDK
returns it without raising.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from openmps.apps import KeyOwner
from openmps.errors import BusinessError
from openmps.mps.form import get_str
from openmps.runtime import Runtime

Form = Mapping[str, str]


@dataclass(frozen=True)
class Call:
    runtime: Runtime
    owner: KeyOwner
    form: Form


Handler = Callable[[Call], Awaitable[Any]]


def app_of(call: Call) -> int:
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


def success(family: str, request_id: str, data: Any) -> dict[str, Any]:
    if family == "A":
        return {
            "RequestId": request_id,
            "ResultCode": "OK",
            "ResultMessage": "",
            "PushResult": {"Success": True, "ResultMsg": "", "Data": data},
        }
    if family == "B":
        return {
            "RequestId": request_id,
            "ResultCode": "OK",
            "ResultMessage": "",
            "ResultContent": data,
        }
    if family == "BS":
        return {
            "RequestId": request_id,
            "Success": True,
            "ResultCode": "OK",
            "ResultMessage": "",
            "ResultContent": {"Success": True, "ResultMsg": "", "Data": data},
        }
    if family == "CP":
        return {"RequestId": request_id, "Success": True, "Code": "OK", "Msg": "", **data}
    text = "Msg" if family == "C" else "Message"
    return {"RequestId": request_id, "Success": True, "Code": "OK", text: "", "Data": data}


def failure(family: str, request_id: str, error: BusinessError) -> dict[str, Any]:
    if family == "A":
        return {
            "RequestId": request_id,
            "ResultCode": str(error.result_code),
            "ResultMessage": error.name,
            "PushResult": {"Success": False, "ResultMsg": error.detail},
        }
    if family in ("B", "BS"):
        body: dict[str, Any] = {
            "RequestId": request_id,
            "ResultCode": str(error.result_code),
            "ResultMessage": f"{error.name}: {error.detail}",
        }
        if family == "BS":
            body["Success"] = False
            body["ResultContent"] = {"Success": False, "ResultMsg": error.detail}
        return body
    text = "Msg" if family in ("C", "CP") else "Message"
    return {
        "RequestId": request_id,
        "Success": False,
        "Code": str(error.result_code),
        text: f"{error.name}: {error.detail}",
    }
