"""The engine and sessions, and the migration step that runs when a store is opened."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from openmps.errors import StoreError

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers (the CLI, status views) run beside the one writer. synchronous=FULL
    # makes a commit survive a power cut, not only a process crash: an accepted push is durable.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


MIGRATION_LOCK = 0x6F6D7073  # PostgreSQL advisory lock key held while migrating ("omps")


def upgrade(connection: Connection, revision: str = "head") -> None:
    """Migrate the schema on ``connection`` to ``revision`` (tests stop at earlier ones)."""
    if connection.dialect.name == "postgresql":
        # Scaled out, many processes start at once on one database: one migrates, the others
        # wait here (the lock ends with the transaction) and then find the schema at head.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


class Store:
    """Owns one engine. ``await Store.open(url)`` migrates the schema to head first."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        # SQLite has one writer at a time. Writers of this process queue here rather than on
        # the file lock, whose busy handler sleeps in steps of up to 100 ms.
        self._write_lock = asyncio.Lock() if engine.dialect.name == "sqlite" else None

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def insert(self, table: Any) -> Any:
        """This engine's INSERT, which offers ``on_conflict_do_nothing`` (SQLite, PostgreSQL)."""
        if self.is_sqlite:
            return sqlite.insert(table)
        return postgresql.insert(table)

    @classmethod
    async def open(cls, url: str, *, migrate: bool = True) -> Store:
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                try:
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreError(
                        f"cannot use {Path(path).parent} as the data directory: "
                        f"{os.strerror(exc.errno) if exc.errno else exc}. Pass a writable "
                        "directory with --data-dir."
                    ) from None
        # hide_parameters: an error text never carries the tokens a statement was given.
        engine = create_async_engine(
            url, pool_pre_ping=not url.startswith("sqlite"), hide_parameters=True
        )
        if engine.dialect.name == "sqlite":
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        try:
            if migrate:
                async with engine.begin() as conn:
                    await conn.run_sync(upgrade)
        except (SQLAlchemyError, OSError) as exc:
            await engine.dispose()
            raise StoreError(
                f"cannot open the store at {_safe_url(url)}: {exc}. Check --database-url / "
                "--data-dir and that the database is reachable."
            ) from exc
        return cls(engine)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session:
            yield session

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A session inside a write transaction, committed on exit (rolled back on error)."""
        if self._write_lock is None:
            async with self.sessions() as session, session.begin():
                yield session
            return
        async with self._write_lock, self.sessions() as session, session.begin():
            yield session

    async def analyze(self, table: str) -> None:
        """Refresh PostgreSQL's statistics of ``table`` now (after a bulk insert: until
        autovacuum gets to it the planner believes the table is as small as it was, and may
        scan a million rows to find a few thousand). Nothing on SQLite."""
        if self.is_sqlite:
            return
        async with self.engine.connect() as conn:
            await conn.execute(text(f'ANALYZE "{table}"'))
            await conn.commit()

    async def close(self) -> None:
        await self.engine.dispose()


def _safe_url(url: str) -> str:
    """The URL without its password, fit for a message or a log line."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
