"""The MPS OpenAPI front door: ``POST /``, signed, dispatched on ``x-acs-action``."""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from openmps.apps import KeyOwner
from openmps.errors import ApiError, BusinessError
from openmps.mps import signature
from openmps.mps.actions import HANDLERS
from openmps.mps.call import Call, failure, success
from openmps.mps.form import parse_form
from openmps.runtime import Runtime

logger = logging.getLogger(__name__)

API_VERSION = "2020-10-28"
router = APIRouter()


def _json(status: int, body: dict[str, object]) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type="application/json;charset=utf-8")


def _error(request_id: str, error: ApiError) -> JSONResponse:
    return _json(
        error.http_status,
        {
            "RequestId": request_id,
            "Code": error.code,
            "Message": error.message,
            "HostId": "openmps",
        },
    )


@router.post("/", include_in_schema=False)
async def mps_entry(request: Request) -> JSONResponse:
    request_id = str(uuid.uuid4()).upper()
    runtime: Runtime = request.app.state.runtime
    action = request.headers.get("x-acs-action", "")
    try:
        body = await request.body()
        owner = await _authenticate(runtime, request, body)
        if action not in HANDLERS:
            raise ApiError(
                404,
                "InvalidAction.NotFound",
                f"the action {action!r} does not exist in MPS {API_VERSION}",
            )
        handler, family = HANDLERS[action]
        try:
            data = await handler(Call(runtime, owner, parse_form(body)))
        except BusinessError as exc:
            logger.info("mps %s refused: %s %s", action, exc.result_code, exc.name)
            return _json(200, failure(family, request_id, exc))
        return _json(200, success(family, request_id, data))
    except ApiError as exc:
        logger.info("mps %s rejected: %s", action or "-", exc.code)
        return _error(request_id, exc)
    except Exception:
        logger.exception("mps %s failed: request=%s", action or "-", request_id)
        return _error(
            request_id,
            ApiError(500, "InternalError", "openmps failed to handle the request; see its log"),
        )


async def _authenticate(runtime: Runtime, request: Request, body: bytes) -> KeyOwner:
    headers = request.headers
    if not headers.get("x-acs-action"):
        raise ApiError(400, "MissingParameter", "the x-acs-action header names the action")
    version = headers.get("x-acs-version")
    if version != API_VERSION:
        raise ApiError(
            400, "InvalidVersion", f"x-acs-version must be {API_VERSION}, got {version!r}"
        )
    auth = signature.parse_authorization(headers.get("authorization"))
    owner = await runtime.keys.get(auth.access_key_id)
    if owner is None:
        raise ApiError(
            404,
            "InvalidAccessKeyId.NotFound",
            "the AccessKeyId is not known here; create one with `openmps app create`",
        )
    signature.verify(
        method=request.method,
        path=request.url.path or "/",
        query=dict(request.query_params),
        headers=dict(headers),
        body=body,
        secret=owner.secret,
        auth=auth,
    )
    signature.check_date(
        headers.get("x-acs-date"),
        now=datetime.now(UTC),
        window_s=runtime.settings.signature_window_s,
    )
    await runtime.nonces.remember(
        auth.access_key_id, headers.get("x-acs-signature-nonce", ""), time.time()
    )
    return owner
