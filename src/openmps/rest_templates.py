"""The REST API of templates and of the pushes made from them (docs/templates.md).

The same service layer as the MPS actions (openmps.templates, ``Runtime.submit``): the models
here check the shape of a body (FastAPI's 422), the service its content. A refusal is answered
by ``openmps.rest.refused``: 400 ``{"error": <MPS name lower-cased>, "message", "code"}``, 404
``template_not_exist`` for an unknown template.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from openmps.errors import BusinessError
from openmps.push import PushRequest
from openmps.rest import (
    ErrorBody,
    Int32,
    OwnerDep,
    PushAccepted,
    RuntimeDep,
    accepted,
    refused,
)
from openmps.templates import TargetValues, TemplateSpec, TemplateView, apply, apply_multiple

router = APIRouter()


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "refused by the service layer (MPS result code)"},
    401: {"model": ErrorBody, "description": "missing or wrong HTTP Basic credentials"},
    404: {"model": ErrorBody, "description": "this app has no such template (3022)"},
}


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class TemplateBody(_Body):
    """CreateTemplate (reference 5.7); each field is the MPS field of the same name."""

    name: str = Field(description="TemplateName: unique in the app, no commas, 128 characters")
    title: str = Field(description="may hold #placeholders#")
    content: str = Field(description="may hold #placeholders#")
    desc_info: str | None = None
    uri: str | None = Field(None, description="may hold #placeholders#")
    icon_urls: str | None = None
    image_urls: str | None = None
    push_style: Int32 | None = Field(None, description="0 default, 1 big text, 2 picture")
    show_style: Int32 | None = None
    jump_action: Int32 | None = Field(
        None, description="0 open the uri, 1 an intent; the default PushAction of its pushes"
    )


def _template_json(view: TemplateView) -> dict[str, Any]:
    return {
        "id": str(view.id),
        "name": view.name,
        "title": view.title,
        "content": view.content,
        "desc_info": view.desc_info,
        "uri": view.uri,
        "icon_urls": view.icon_urls,
        "image_urls": view.image_urls,
        "push_style": view.push_style,
        "show_style": view.show_style,
        "jump_action": view.jump_action,
        "variables": view.variables,
        "created_at": view.created_at.isoformat(),
        "modified_at": view.modified_at.isoformat(),
    }


class _PushFields(_Body):
    """The fields of reference 4.1 (as ``POST /v1/pushes`` names them)."""

    template_name: str = Field(description="TemplateName")
    delivery_type: Int32 = Field(description="1 Android device, 2 iOS device, 3 user id")
    expired_seconds: Int32 = Field(description="how long the message is kept for the device")
    extras: dict[str, str] | None = Field(None, description="ExtendedParams; at most 20 keys")
    silent: Int32 | None = Field(None, description="1 silent, 0 (default) shown")
    push_action: Int32 | None = Field(
        None, description="0 open the uri, 1 an intent; default: the template's jump_action"
    )
    task_name: str | None = None
    strategy_type: Int32 | None = Field(None, description="0 (default) now; 1 and 2 not yet")
    strategy_content: dict[str, Any] | None = None

    def request(self, targets: dict[str, str] | None) -> PushRequest:
        strategy = self.strategy_content
        return PushRequest(
            delivery_type=self.delivery_type,
            targets=targets,
            expired_seconds=self.expired_seconds,
            title=None,
            content=None,
            extras=self.extras,
            silent=self.silent,
            push_action=self.push_action,
            task_name=self.task_name,
            strategy_type=self.strategy_type,
            strategy_content=(
                None if strategy is None else json.dumps(strategy, ensure_ascii=False)
            ),
        )


class TemplatePushBody(_PushFields):
    """PushTemplate (reference 4.3)."""

    targets: dict[str, str] = Field(description="target -> msgKey; at most 10 (TargetMsgkey)")
    template_values: dict[str, str] | None = Field(
        None, description="placeholder -> value (TemplateKeyValue); unused names are ignored"
    )


class TargetMsgBody(_Body):
    target: str
    msg_key: str
    template_values: dict[str, str] | None = Field(None, description="TemplateKeyValue")
    extras: dict[str, str] | None = Field(None, description="this target's own; at most 9 keys")


class MultiplePushBody(_PushFields):
    """PushMultiple (reference 4.4)."""

    target_msg: list[TargetMsgBody] = Field(description="one entry per target; at most 100")


@router.post("/v1/templates", status_code=201, tags=["templates"], responses=_ERRORS)
async def create_template(body: TemplateBody, owner: OwnerDep, runtime: RuntimeDep) -> Any:
    """CreateTemplate."""
    spec = TemplateSpec(
        name=body.name,
        title=body.title,
        content=body.content,
        desc_info=body.desc_info,
        uri=body.uri,
        icon_urls=body.icon_urls,
        image_urls=body.image_urls,
        push_style=body.push_style,
        show_style=body.show_style,
        jump_action=body.jump_action,
    )
    try:
        view = await runtime.templates.create(owner.app_pk, spec)
    except BusinessError as exc:
        return refused(exc)
    return _template_json(view)


@router.get("/v1/templates", tags=["templates"], responses=_ERRORS)
async def list_templates(
    owner: OwnerDep,
    runtime: RuntimeDep,
    page: Annotated[int, Query(description="from 1")] = 1,
    page_size: Annotated[int, Query(description="1 to 100")] = 10,
) -> Any:
    """ListTemplatePage: the app's templates, oldest first."""
    try:
        found = await runtime.templates.page(owner.app_pk, page=page, page_size=page_size)
    except BusinessError as exc:
        return refused(exc)
    return {
        "templates": [_template_json(view) for view in found.templates],
        "page": found.current_page,
        "page_size": found.page_size,
        "total": found.total,
    }


@router.get("/v1/templates/{name:path}", tags=["templates"], responses=_ERRORS)
async def get_template(name: str, owner: OwnerDep, runtime: RuntimeDep) -> Any:
    """GetTemplate by name."""
    try:
        view = await runtime.templates.get(owner.app_pk, name=name)
    except BusinessError as exc:
        return refused(exc)
    return _template_json(view)


@router.delete("/v1/templates/{name:path}", tags=["templates"], responses=_ERRORS)
async def delete_template(name: str, owner: OwnerDep, runtime: RuntimeDep) -> Any:
    """DeleteTemplate by name; pushes already made from it are not changed."""
    try:
        view = await runtime.templates.delete(owner.app_pk, name=name)
    except BusinessError as exc:
        return refused(exc)
    return {"id": str(view.id), "name": view.name, "removed": True}


@router.post(
    "/v1/pushes/template",
    status_code=201,
    response_model=PushAccepted,
    response_model_exclude_none=True,
    tags=["pushes"],
    responses=_ERRORS,
)
async def push_template(body: TemplatePushBody, owner: OwnerDep, runtime: RuntimeDep) -> Any:
    """PushTemplate: a template filled with one set of values, to up to 10 targets."""
    try:
        rendered = await runtime.templates.render(
            owner.app_pk, body.template_name, body.template_values
        )
        request = apply(body.request(body.targets), rendered)
        answer = await runtime.submit(owner.app_pk, request)
    except BusinessError as exc:
        return refused(exc)
    return accepted(request, answer)


@router.post(
    "/v1/pushes/multiple",
    status_code=201,
    response_model=PushAccepted,
    response_model_exclude_none=True,
    tags=["pushes"],
    responses=_ERRORS,
)
async def push_multiple(body: MultiplePushBody, owner: OwnerDep, runtime: RuntimeDep) -> Any:
    """PushMultiple: a template filled with each target's own values, up to 100 targets."""
    entries = [
        TargetValues(e.target, e.msg_key, e.template_values, e.extras) for e in body.target_msg
    ]
    try:
        template = await runtime.templates.find(owner.app_pk, body.template_name)
        request = apply_multiple(body.request(None), template, entries)
        answer = await runtime.submit(owner.app_pk, request)
    except BusinessError as exc:
        return refused(exc)
    return accepted(request, answer)
