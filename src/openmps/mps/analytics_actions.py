"""The MPS analytics actions (reference 7): decode the form, ask openmps.analytics, shape the
answer the way the SDK's models read it (docs/analytics.md has the definitions)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from openmps.analytics import Counts, TaskEntry, page_of, task_number, to_ms
from openmps.errors import BusinessError
from openmps.mps.call import Call, Handler, app_of
from openmps.mps.form import get_int, get_str


async def _core(call: Call) -> Counts:
    """The core index the form asks for, after the checks of reference 7.2."""
    form = call.form
    app_pk = app_of(call)
    analytics = call.runtime.analytics
    window = analytics.window(
        get_int(form, "StartTime", required=False), get_int(form, "EndTime", required=False)
    )
    scope = analytics.scope(
        platform=form.get("Platform"),
        channel=form.get("Channel"),
        type_=form.get("Type"),
        task_id=form.get("TaskId"),
    )
    return await analytics.core(app_pk, window, scope)


async def query_push_analysis_core_index(call: Call) -> dict[str, Any]:
    """Family B; the numbers are JSON numbers (the SDK model types them float)."""
    counts = await _core(call)
    return {
        "Data": {
            "PushTotalNum": float(counts.total),
            "PushNum": float(counts.success),
            "ArrivalNum": float(counts.arrivals),
            "ArrivalRate": float(counts.arrival_rate),
            "OpenNum": float(counts.opens),
            "OpenRate": float(counts.open_rate),
            "IgnoreNum": float(counts.ignores),
            "IgnoreRate": float(counts.ignore_rate),
        }
    }


def number_text(value: int | Decimal) -> str:
    """A count or a rate as ListAnalysisCoreIndex sends it: ``3``, ``66.67``, ``50.5``, ``100``."""
    if isinstance(value, int):
        return str(value)
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return text or "0"


async def list_analysis_core_index(call: Call) -> dict[str, str]:
    """Family BS: the handler returns ``ResultContent.Data``; the numbers are strings."""
    counts = await _core(call)
    return {
        "PushTotalNum": number_text(counts.total),
        "PushNum": number_text(counts.success),
        "ArrivalNum": number_text(counts.arrivals),
        "ArrivalRate": number_text(counts.arrival_rate),
        "OpenNum": number_text(counts.opens),
        "OpenRate": number_text(counts.open_rate),
        "IgnoreNum": number_text(counts.ignores),
        "IgnoreRate": number_text(counts.ignore_rate),
    }


def _task_item(entry: TaskEntry) -> dict[str, Any]:
    return {
        "TaskId": str(entry.task_id),
        "TaskName": entry.task_name or "",
        "TemplateId": "" if entry.template_id is None else str(entry.template_id),
        "TemplateName": entry.template_name or "",
        "Type": entry.type_number,
        "GmtCreate": to_ms(entry.created_at),
    }


async def query_push_analysis_task_list(call: Call) -> dict[str, Any]:
    """Family B: ``Data`` is the page of batch tasks created from StartTime's day on."""
    form = call.form
    app_pk = app_of(call)
    analytics = call.runtime.analytics
    start_ms = get_int(form, "StartTime", required=True)
    assert start_ms is not None
    page, page_size = page_of(
        get_int(form, "PageNumber", required=False), get_int(form, "PageSize", required=False)
    )
    entries = await analytics.task_list(
        app_pk,
        since=analytics.day_start(start_ms, "StartTime"),
        task_id=task_number(form.get("TaskId")),
        task_name=get_str(form, "TaskName", required=False),
        page=page,
        page_size=page_size,
    )
    return {
        "Data": [
            {**_task_item(entry), "List": [_task_item(later) for later in entry.fired]}
            for entry in entries
        ]
    }


def duration_text(ms: int) -> str:
    """A duration in seconds, to the millisecond: ``0``, ``1.5``, ``0.042``."""
    seconds, rest = divmod(ms, 1000)
    return f"{seconds}.{rest:03d}".rstrip("0").rstrip(".")


async def query_push_analysis_task_detail(call: Call) -> dict[str, Any]:
    """Family B: one task's numbers; an unknown task (or another app's) is 3028."""
    app_pk = app_of(call)
    text = get_str(call.form, "TaskId", required=True)
    task_id = task_number(text)
    assert task_id is not None
    detail = await call.runtime.analytics.task_detail(app_pk, task_id)
    if detail is None:
        raise BusinessError(3028, "INVALID_PARAM", f"this app has no task {task_id}")
    counts = detail.counts
    return {
        "Data": {
            "TaskId": detail.task_id,
            "StartTime": to_ms(detail.start),
            "EndTime": to_ms(detail.end),
            "Duration": duration_text(detail.duration_ms),
            "PushNum": float(counts.total),
            "PushSuccessNum": float(counts.success),
            "PushArrivalNum": float(counts.arrivals),
        }
    }


# action -> (handler, envelope family)
HANDLERS: dict[str, tuple[Handler, str]] = {
    "QueryPushAnalysisCoreIndex": (query_push_analysis_core_index, "B"),
    "ListAnalysisCoreIndex": (list_analysis_core_index, "BS"),
    "QueryPushAnalysisTaskList": (query_push_analysis_task_list, "B"),
    "QueryPushAnalysisTaskDetail": (query_push_analysis_task_detail, "B"),
}
