"""The group-commit intake, in process: one push the store cannot take fails only its caller."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from openmps.apps import create_app, find_app
from openmps.push import PushRequest
from openmps.runtime import Runtime
from openmps.settings import Settings


def request(title: str, key: str) -> PushRequest:
    return PushRequest(
        delivery_type=3,
        targets={"user-1": key},
        expired_seconds=300,
        title=title,
        content="C",
    )


async def test_a_push_the_store_refuses_does_not_fail_the_others_of_its_batch(
    tmp_path: Path,
) -> None:
    # Regression (second trial): on PostgreSQL a NUL in one TaskName failed the whole batched
    # transaction: 92 valid pushes of other clients answered 500. A lone surrogate is what the
    # store refuses here (the front doors refuse both before they reach the intake).
    runtime = await Runtime.open(Settings(data_dir=tmp_path, database_url=None, gateway_port=0))
    try:
        await runtime.start()
        creds = await create_app(runtime.store, "t")
        app_pk = await find_app(runtime.store, creds.app_id, creds.workspace_id)
        assert app_pk is not None
        pushes = [runtime.pushes.push(app_pk, request("T", f"k{i}")) for i in range(20)]
        pushes.insert(7, runtime.pushes.push(app_pk, request("\ud800", "bad")))
        results = await asyncio.gather(*pushes, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        assert len(failed) == 1 and isinstance(failed[0], UnicodeEncodeError)
        assert results[7] is failed[0]
        task_ids = [r for r in results if isinstance(r, int)]
        assert len(set(task_ids)) == 20
        with pytest.raises(UnicodeEncodeError):
            await runtime.pushes.push(app_pk, request("\ud800", "bad-2"))
    finally:
        await runtime.stop()
