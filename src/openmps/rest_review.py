"""REST: review of held pushes (status -1), docs/review.md. Review has no MPS action."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel

from openmps.errors import BusinessError
from openmps.ids import parse_id
from openmps.rest import OwnerDep, RestError, RuntimeDep

router = APIRouter(tags=["review"])

_STATUS = {"TASK_NOT_FOUND": 404, "NOT_PENDING": 409}


class RuleBody(BaseModel):
    rule: Literal["none", "broadcast", "batch", "all"]


def _task(task_id: str) -> int:
    number = parse_id(task_id)
    if number is None:
        raise RestError(404, "task_not_found", f"this app has no task {task_id!r}")
    return number


def _refused(exc: BusinessError) -> RestError:
    return RestError(_STATUS.get(exc.name, 400), exc.name.lower(), exc.detail)


@router.get("/v1/review")
async def held(owner: OwnerDep, runtime: RuntimeDep) -> Any:
    """The app's review rule and the pushes waiting for approval, oldest first."""
    tasks = await runtime.reviews.held(owner.app_pk)
    return {
        "rule": await runtime.reviews.rule(owner.app_pk),
        "held": [task.as_json() for task in tasks],
    }


@router.put("/v1/review/rule")
async def set_rule(body: RuleBody, owner: OwnerDep, runtime: RuntimeDep) -> Any:
    """Which pushes wait for approval: none, broadcast, batch (multiple and broadcast), all."""
    await runtime.reviews.set_rule(owner.app_pk, body.rule)
    return {"rule": body.rule}


@router.post("/v1/tasks/{task_id}/approve")
async def approve(task_id: str, owner: OwnerDep, runtime: RuntimeDep) -> Any:
    """Release a held push: its targets take their usual status and it is sent."""
    try:
        released = await runtime.reviews.approve(owner.app_pk, _task(task_id))
    except BusinessError as exc:
        raise _refused(exc) from None
    return {"task_id": task_id, "review": "approved", "released": released}


@router.post("/v1/tasks/{task_id}/reject")
async def reject(task_id: str, owner: OwnerDep, runtime: RuntimeDep) -> Any:
    """Refuse a held push: never sent; its targets end final with status -1."""
    try:
        stopped = await runtime.reviews.reject(owner.app_pk, _task(task_id))
    except BusinessError as exc:
        raise _refused(exc) from None
    return {"task_id": task_id, "review": "rejected", "stopped": stopped}
