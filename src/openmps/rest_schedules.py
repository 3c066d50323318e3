"""REST endpoints of scheduled and cyclic pushes (docs/scheduling.md): list, read, cancel.

Jobs are made by a push with a ``strategy_type`` of 1 or 2; these endpoints only look at them
and cancel them. Errors are ``{"error", "message"}`` as everywhere in ``/v1``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from openmps.rest import OwnerDep, RestError, RuntimeDep
from openmps.schedule_jobs import KIND_TYPES, JobNotPending, ScheduledJob, UnknownJob
from openmps.schedule_rules import invalid, utc_instant

router = APIRouter()

Kind = Literal["simple", "template", "multiple", "broadcast"]


def _instant(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def job_json(job: ScheduledJob) -> dict[str, Any]:
    return {
        "unique_id": job.unique_id,
        "parent_id": job.parent_id,
        "strategy_type": job.strategy_type,
        "type": job.kind,
        "delivery_type": job.delivery_type,
        "fire_at": _instant(job.fire_at),
        "state": job.state,
        "title": job.title,
        "content": job.content,
        "time_zone": job.time_zone,
        "task_id": None if job.task_id is None else str(job.task_id),
        "detail": job.detail,
        "created_at": _instant(job.created_at),
        "executed_at": _instant(job.executed_at),
    }


def _aware(name: str, value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise invalid(f"{name} needs a UTC offset or Z, such as 2024-06-14T08:00:00Z")
    return None if value is None else utc_instant(value, name)  # 400 past year 9999 in UTC


@router.get("/v1/schedules", tags=["schedules"])
async def list_schedules(
    owner: OwnerDep,
    runtime: RuntimeDep,
    start: datetime | None = None,
    end: datetime | None = None,
    type: Kind | None = None,
    unique_id: str | None = None,
    page: Annotated[int, Query(ge=1)] = 1,
    page_size: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    total, jobs = await runtime.scheduler.query(
        owner.app_pk,
        start=_aware("start", start),
        end=_aware("end", end),
        push_type=None if type is None else KIND_TYPES[type],
        unique_id=unique_id,
        page=page,
        page_size=page_size,
    )
    return {
        "total": total,
        "page": page,
        "page_size": page_size,
        "schedules": [job_json(job) for job in jobs],
    }


@router.get("/v1/schedules/{unique_id}", tags=["schedules"])
async def get_schedule(unique_id: str, owner: OwnerDep, runtime: RuntimeDep) -> dict[str, Any]:
    found = await runtime.scheduler.get(owner.app_pk, unique_id)
    if found is None:
        raise RestError(404, "unknown_schedule", f"this app has no scheduled push {unique_id!r}")
    job, occurrences = found
    body = job_json(job)
    if job.is_cycle:
        body["occurrences"] = [job_json(occurrence) for occurrence in occurrences]
    return body


@router.delete("/v1/schedules/{unique_id}", tags=["schedules"])
async def cancel_schedule(unique_id: str, owner: OwnerDep, runtime: RuntimeDep) -> dict[str, Any]:
    try:
        cancelled = await runtime.scheduler.cancel(owner.app_pk, [unique_id])
    except UnknownJob as exc:
        raise RestError(404, "unknown_schedule", exc.detail) from None
    except JobNotPending as exc:
        raise RestError(409, "not_pending", exc.detail) from None
    return {"unique_id": unique_id, "cancelled": cancelled}
