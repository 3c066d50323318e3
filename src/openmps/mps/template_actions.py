"""MPS template actions: template CRUD (envelope C) and the pushes made from a template
(PushTemplate, PushMultiple, PushBroadcast; envelope A). Rendering rules: openmps.templates."""

from __future__ import annotations

import json
from typing import Any

from openmps.errors import BusinessError
from openmps.mps.call import Call, Form, Handler, app_of
from openmps.mps.form import get_int, get_str, json_map, unflatten
from openmps.push import MAX_EXTENDED_PARAMS, BroadcastRequest, PushRequest
from openmps.templates import (
    GMT_FORMAT,
    TargetValues,
    TemplateSpec,
    TemplateView,
    apply,
    apply_multiple,
)


def template_data(view: TemplateView) -> dict[str, str]:
    """GetTemplate's ``Data`` and an item of ListTemplatePage's: every field a string."""

    def text(value: object) -> str:
        return "" if value is None else str(value)

    return {
        "Id": str(view.id),
        "Name": view.name,
        "Title": view.title,
        "Content": view.content,
        "DescInfo": text(view.desc_info),
        "Uri": text(view.uri),
        "Action": text(view.jump_action),
        "PushStyle": text(view.push_style),
        "ShowStyle": text(view.show_style),
        "IconUrls": text(view.icon_urls),
        "ImageUrls": text(view.image_urls),
        "Variables": ",".join(view.variables),
        "GmtCreate": view.created_at.strftime(GMT_FORMAT),
        "GmtModified": view.modified_at.strftime(GMT_FORMAT),
    }


def _id_or_name(form: Form) -> dict[str, str | None]:
    return {
        "template_id": get_str(form, "TemplateId", required=False),
        "name": get_str(form, "TemplateName", required=False),
    }


async def create_template(call: Call) -> str:
    app_pk = app_of(call)
    form = call.form
    # Variables is not read: it is always the placeholders the texts hold (docs/templates.md).
    spec = TemplateSpec(
        name=form.get("TemplateName"),
        title=form.get("Title"),
        content=form.get("Content"),
        desc_info=form.get("DescInfo") or None,
        uri=form.get("Uri") or None,
        icon_urls=form.get("IconUrls") or None,
        image_urls=form.get("ImageUrls") or None,
        push_style=get_int(form, "PushStyle", required=False),
        show_style=get_int(form, "ShowStyle", required=False),
        jump_action=get_int(form, "JumpAction", required=False),
    )
    view = await call.runtime.templates.create(app_pk, spec)
    return str(view.id)


async def get_template(call: Call) -> dict[str, str]:
    app_pk = app_of(call)
    view = await call.runtime.templates.get(app_pk, **_id_or_name(call.form))
    return template_data(view)


async def delete_template(call: Call) -> str:
    app_pk = app_of(call)
    view = await call.runtime.templates.delete(app_pk, **_id_or_name(call.form))
    return str(view.id)


async def list_template_page(call: Call) -> dict[str, Any]:
    app_pk = app_of(call)
    page = await call.runtime.templates.page(
        app_pk,
        page=get_int(call.form, "CurrentPage", required=False),
        page_size=get_int(call.form, "PageSize", required=False),
    )
    return {
        "CurrentPage": page.current_page,
        "PageSize": page.page_size,
        "TotalSize": page.total,
        "Data": [template_data(view) for view in page.templates],
    }


def _shared(form: Form) -> dict[str, Any]:
    """The fields of reference 4.1 every template push reads, as PushRequest arguments."""
    return {
        "delivery_type": get_int(form, "DeliveryType", required=False),
        "expired_seconds": get_int(form, "ExpiredSeconds", required=False),
        "extras": json_map(form, "ExtendedParams", max_keys=MAX_EXTENDED_PARAMS),
        "silent": get_int(form, "Silent", required=False),
        "push_action": get_int(form, "PushAction", required=False),
        "task_name": get_str(form, "TaskName", required=False),
        "strategy_type": get_int(form, "StrategyType", required=False),
        "strategy_content": get_str(form, "StrategyContent", required=False),
    }


async def push_template(call: Call) -> str:
    app_pk = app_of(call)
    form = call.form
    request = PushRequest(
        targets=json_map(form, "TargetMsgkey"),
        title=None,
        content=None,
        **_shared(form),
    )
    values = json_map(form, "TemplateKeyValue")
    rendered = await call.runtime.templates.render(
        app_pk, get_str(form, "TemplateName", required=False), values
    )
    return await call.runtime.submit(app_pk, apply(request, rendered))


def _entry_map(entry: dict[str, Any], key: str, where: str) -> dict[str, str] | None:
    """A JSON-map field of one TargetMsg entry: a JSON string (as the SDK sends it) or an
    object (``TargetMsg.1.TemplateKeyValue.name=v``, or a JSON ``TargetMsg``)."""
    value = entry.get(key)
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return json_map({f"{where}.{key}": text}, f"{where}.{key}")


def _entry_str(entry: dict[str, Any], key: str, where: str) -> str | None:
    value = entry.get(key)
    if value is None or isinstance(value, str):
        return value
    raise BusinessError(3028, "INVALID_PARAM", f"{where}.{key} must be a string")


def target_msgs(form: Form) -> list[TargetValues]:
    """``TargetMsg.<n>.Target/MsgKey/TemplateKeyValue/ExtendedParams`` in the order of n
    (reference 1.4 rule 5); a JSON array in ``TargetMsg`` itself is read the same way."""
    entries = unflatten(form, "TargetMsg")
    if entries is None:
        raise BusinessError(3021, "TOKEN_OR_USERID_NULL", "TargetMsg has no target")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise BusinessError(
            3028,
            "INVALID_PARAM",
            "TargetMsg must be a list: TargetMsg.1.Target, TargetMsg.1.MsgKey, ...",
        )
    out = []
    for number, entry in enumerate(entries, start=1):
        where = f"TargetMsg.{number}"
        out.append(
            TargetValues(
                target=_entry_str(entry, "Target", where),
                msg_key=_entry_str(entry, "MsgKey", where),
                values=_entry_map(entry, "TemplateKeyValue", where),
                extras=_entry_map(entry, "ExtendedParams", where),
            )
        )
    return out


async def push_multiple(call: Call) -> str:
    app_pk = app_of(call)
    form = call.form
    request = PushRequest(targets=None, title=None, content=None, **_shared(form))
    entries = target_msgs(form)
    template = await call.runtime.templates.find(
        app_pk, get_str(form, "TemplateName", required=False)
    )
    return await call.runtime.submit(app_pk, apply_multiple(request, template, entries))


async def push_broadcast(call: Call) -> str:
    app_pk = app_of(call)
    form = call.form
    shared = _shared(form)
    if shared["delivery_type"] == 3:
        raise BusinessError(
            3030,
            "BROADCAST_ONLY_SUPPORT_BY_DEVICE",
            "a broadcast goes to devices, not users: DeliveryType 1 (Android) or 2 (iOS)",
        )
    request = BroadcastRequest(
        msg_key=get_str(form, "Msgkey", required=False),
        title=None,
        content=None,
        push_status=get_int(form, "PushStatus", required=False),
        bind_period=get_int(form, "BindPeriod", required=False),
        unbind_period=get_int(form, "UnBindPeriod", required=False),
        android_channel=get_int(form, "AndroidChannel", required=False),
        **shared,
    )
    values = json_map(form, "TemplateKeyValue")
    rendered = await call.runtime.templates.render(
        app_pk, get_str(form, "TemplateName", required=False), values
    )
    return await call.runtime.submit(app_pk, apply(request, rendered))


# action -> (handler, envelope family)
HANDLERS: dict[str, tuple[Handler, str]] = {
    "CreateTemplate": (create_template, "C"),
    "GetTemplate": (get_template, "C"),
    "DeleteTemplate": (delete_template, "C"),
    "ListTemplatePage": (list_template_page, "CP"),
    "PushTemplate": (push_template, "A"),
    "PushMultiple": (push_multiple, "A"),
    "PushBroadcast": (push_broadcast, "A"),
}
