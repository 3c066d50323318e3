"""Schema migrations on the engine under test (SQLite, or PostgreSQL with
``OPENMPS_TEST_DATABASE_URL``): an existing store moves to head with its rows intact."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from openmps.apps import create_app
from openmps.store import App, Delivery, Device, Message, Store, Task
from openmps.store.db import upgrade
from tests.conftest import TEST_DATABASE_URL, _postgres


@pytest.fixture
async def database_url(tmp_path: Path) -> AsyncIterator[str]:
    if not TEST_DATABASE_URL:
        yield f"sqlite+aiosqlite:///{tmp_path / 'openmps.db'}"
        return
    name = f"openmps_test_{uuid.uuid4().hex[:12]}"
    await _postgres(TEST_DATABASE_URL, f'CREATE DATABASE "{name}"')
    try:
        yield TEST_DATABASE_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        await _postgres(TEST_DATABASE_URL, f'DROP DATABASE "{name}" WITH (FORCE)')


async def _migrate_to(url: str, revision: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(upgrade, revision)
    finally:
        await engine.dispose()


async def _foreign_keys(store: Store, table: str) -> list[tuple[list[str], str]]:
    def read(conn: Connection) -> list[dict[str, Any]]:
        return list(inspect(conn).get_foreign_keys(table))

    async with store.engine.connect() as conn:
        keys = await conn.run_sync(read)
    return sorted((key["constrained_columns"], key["referred_table"]) for key in keys)


async def _indexes(store: Store, table: str) -> list[str]:
    def read(conn: Connection) -> list[str]:
        return sorted(str(index["name"]) for index in inspect(conn).get_indexes(table))

    async with store.engine.connect() as conn:
        return await conn.run_sync(read)


async def test_deliveries_lose_their_foreign_keys_and_keep_their_rows(database_url: str) -> None:
    await _migrate_to(database_url, "0004")
    store = await Store.open(database_url, migrate=False)
    try:
        assert await _foreign_keys(store, "deliveries") == [
            (["device_pk"], "devices"),
            (["message_pk"], "messages"),
        ]
        app = await create_app(store, "migrated")
        now = datetime.now(UTC)
        async with store.write() as session:
            app_pk = await session.scalar(select(App.id).where(App.app_id == app.app_id))
            device = Device(
                app_pk=app_pk,
                delivery_token="tok-1",
                secret_hash="h",
                platform="android",
                created_at=now,
            )
            task = Task(
                request_id="req-1",
                app_pk=app_pk,
                kind="simple",
                delivery_type=3,
                created_at=now,
                expires_at=now + timedelta(hours=1),
            )
            session.add_all([device, task])
            await session.flush()
            message = Message(
                task_pk=task.id,
                app_pk=app_pk,
                msg_key="k-1",
                target="tok-1",
                delivery_type=3,
                payload={"title": "t"},
                created_at=now,
                expires_at=now + timedelta(hours=1),
            )
            session.add(message)
            await session.flush()
            session.add(
                Delivery(
                    message_pk=message.id,
                    device_pk=device.id,
                    route="own",
                    status_channel="common",
                    code=1,
                    final=False,
                    expires_at=now + timedelta(hours=1),
                    updated_at=now,
                )
            )
            ids = (message.id, device.id)
    finally:
        await store.close()

    store = await Store.open(database_url)  # to head: 0005 drops the two keys
    try:
        assert await _foreign_keys(store, "deliveries") == []
        assert await _indexes(store, "deliveries") == [
            "ix_deliveries_device_pending",
            "ix_deliveries_message_device",
            "ix_deliveries_pending_expiry",
            "ix_deliveries_pending_route",
        ]
        assert await _foreign_keys(store, "messages") == [
            (["app_pk"], "apps"),
            (["task_pk"], "tasks"),
        ]
        async with store.session() as session:
            rows = (
                await session.execute(
                    select(Delivery.message_pk, Delivery.device_pk, Delivery.code, Delivery.final)
                )
            ).all()
        assert [tuple(row) for row in rows] == [(*ids, 1, False)]
    finally:
        await store.close()
