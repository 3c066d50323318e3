"""Review (status -1): which pushes of an app wait for approval before they go out.

An app's ``review_rule`` names the kinds of push that are held (docs/review.md):

- ``none``: nothing is held (the default);
- ``broadcast``: every PushBroadcast;
- ``batch``: every PushMultiple and PushBroadcast;
- ``all``: every push.

A held push is stored like any other, with status -1 (WaitingForVerify) on each of its
targets, and nothing is sent. Approval gives the targets the status they would have had and
sends; rejection makes them final (status -1 kept, detail ``rejected``); a held push whose
validity runs out expires like any other.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select

from openmps.store import App

REVIEW_RULES = ("none", "broadcast", "batch", "all")
REVIEW_PENDING = "pending"
REVIEW_APPROVED = "approved"
REVIEW_REJECTED = "rejected"

_HELD_KINDS = {
    "none": frozenset(),
    "broadcast": frozenset({"broadcast"}),
    "batch": frozenset({"multiple", "broadcast"}),
    "all": frozenset({"simple", "template", "multiple", "broadcast"}),
}


def needs_review(rule: str, kind: str) -> bool:
    """Whether a push of ``kind`` waits for approval under ``rule``."""
    return kind in _HELD_KINDS.get(rule, frozenset())


async def review_rules(session: Any, apps: Iterable[int]) -> dict[int, str]:
    """The review rule of each app (one query)."""
    rows = (await session.execute(select(App.id, App.review_rule).where(App.id.in_(apps)))).all()
    return {app_pk: rule or "none" for app_pk, rule in rows}
