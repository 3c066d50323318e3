"""MPS actions on scheduled and cyclic pushes (reference 5.4, 5.5): QueryPushSchedulerList,
QueryMpsSchedulerList and CancelPushScheduler, all in envelope family B."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from openmps.mps.call import Call, Handler, app_of
from openmps.mps.form import get_int, get_str
from openmps.schedule_jobs import EXECUTED_STATUS, KIND_TYPES, ScheduledJob
from openmps.schedule_rules import from_ms, invalid, to_ms

DEFAULT_PAGE_SIZE = 500  # reference 5.4
MAX_PAGE_SIZE = 500
# CreateType is undocumented (reference 9.4; probably console or API): every job of openmps
# is made through an API, and says 1.
CREATE_TYPE_API = 1


def _time(call: Call, key: str, *, required: bool) -> datetime | None:
    ms = get_int(call.form, key, required=required)
    if ms is None:
        return None
    try:
        return from_ms(ms)
    except OverflowError:
        raise invalid(f"{key} {ms} is out of range (milliseconds since 1970-01-01 UTC)") from None


def item(job: ScheduledJob) -> dict[str, Any]:
    """One entry of ``ResultContent.Data.List``, typed as the SDK models read it."""
    return {
        "UniqueId": job.unique_id,
        "ParentId": job.parent_id,
        "PushTime": to_ms(job.fire_at),
        "PushTitle": job.title or "",
        "PushContent": job.content or "",
        "Type": KIND_TYPES[job.kind],
        "DeliveryType": job.delivery_type,
        "StrategyType": job.strategy_type,
        "ExecutedStatus": EXECUTED_STATUS[job.state],
        "GmtCreate": to_ms(job.created_at),
        "CreateType": CREATE_TYPE_API,
    }


async def _query(call: Call, *, times_required: bool) -> dict[str, Any]:
    app_pk = app_of(call)
    start = _time(call, "StartTime", required=times_required)
    end = _time(call, "EndTime", required=times_required)
    push_type = get_int(call.form, "Type", required=False)
    if push_type is not None and push_type not in KIND_TYPES.values():
        raise invalid(
            f"Type must be 0 (simple), 1 (template), 2 (multiple) or 3 (broadcast), got {push_type}"
        )
    page = get_int(call.form, "PageNumber", required=False, default=1)
    size = get_int(call.form, "PageSize", required=False, default=DEFAULT_PAGE_SIZE)
    assert page is not None and size is not None
    if page < 1:
        raise invalid(f"PageNumber starts at 1, got {page}")
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise invalid(f"PageSize must be 1 to {MAX_PAGE_SIZE}, got {size}")
    total, jobs = await call.runtime.scheduler.query(
        app_pk,
        start=start,
        end=end,
        push_type=push_type,
        unique_id=get_str(call.form, "UniqueId", required=False),
        page=page,
        page_size=size,
    )
    return {"Data": {"TotalCount": total, "List": [item(job) for job in jobs]}}


async def query_push_scheduler_list(call: Call) -> dict[str, Any]:
    return await _query(call, times_required=True)


async def query_mps_scheduler_list(call: Call) -> dict[str, Any]:
    return await _query(call, times_required=False)


async def cancel_push_scheduler(call: Call) -> str:
    """Cancel the comma-separated UniqueIds, all or none; the number of jobs that will now
    not fire. ``Type`` is undocumented (reference 5.5) and ignored."""
    app_pk = app_of(call)
    ids = get_str(call.form, "UniqueIds", required=True)
    assert ids is not None
    get_int(call.form, "Type", required=False)
    return str(await call.runtime.scheduler.cancel(app_pk, ids.split(",")))


# action -> (handler, envelope family)
HANDLERS: dict[str, tuple[Handler, str]] = {
    "QueryPushSchedulerList": (query_push_scheduler_list, "B"),
    "QueryMpsSchedulerList": (query_mps_scheduler_list, "B"),
    "CancelPushScheduler": (cancel_push_scheduler, "B"),
}
