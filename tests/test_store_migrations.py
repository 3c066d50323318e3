"""Schema migrations on the engine under test (SQLite, or PostgreSQL with
``OPENMPS_TEST_DATABASE_URL``): an existing store moves to head with its rows intact."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from openmps.store import Delivery, Store
from openmps.store.db import upgrade
from tests.store_rows import pending_delivery
from tests.test_e2e_schedules import store_of_its_own


@pytest.fixture
async def database_url(tmp_path: Path) -> AsyncIterator[str]:
    async with store_of_its_own(tmp_path) as url:
        yield url


async def _migrate_to(url: str, revision: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(upgrade, revision)
    finally:
        await engine.dispose()


async def _foreign_keys(store: Store, table: str) -> list[tuple[list[str], str]]:
    def read(conn: Connection) -> list[tuple[list[str], str]]:
        keys = inspect(conn).get_foreign_keys(table)
        return sorted((key["constrained_columns"], key["referred_table"]) for key in keys)

    async with store.engine.connect() as conn:
        return await conn.run_sync(read)


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
        now = datetime.now(UTC)
        row = await pending_delivery(store, created=now, updated=now)
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
        assert [tuple(r) for r in rows] == [(row.message_pk, row.device_pk, 1, False)]
    finally:
        await store.close()


async def test_analyze_gives_postgresql_the_rows_of_a_fresh_table(database_url: str) -> None:
    store = await Store.open(database_url)
    try:
        now = datetime.now(UTC)
        await pending_delivery(store, created=now, updated=now)
        await store.analyze("deliveries")
        async with store.session() as session:
            if store.is_sqlite:  # nothing to do there: no statistics table was made
                found = await session.scalar(
                    text("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'")
                )
                assert found == 0
            else:
                rows = await session.scalar(
                    text("SELECT reltuples FROM pg_class WHERE relname = 'deliveries'")
                )
                assert rows == 1.0
    finally:
        await store.close()
