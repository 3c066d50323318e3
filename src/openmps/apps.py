"""Apps and their access keys: creation, listing, and the key lookup the front doors use."""

from __future__ import annotations

import secrets
import string
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import func, select

from openmps.store import AccessKey, App, Store

_ALNUM = string.ascii_letters + string.digits


def _random(alphabet: str, length: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def new_app_id() -> str:
    """An mPaaS-shaped AppId: ``ONEX`` and 12 upper-case hex digits."""
    return "ONEX" + secrets.token_hex(6).upper()


@dataclass(frozen=True)
class AppCredentials:
    """What a new app's owner needs; the secret is shown once and never logged."""

    app_id: str
    workspace_id: str
    access_key_id: str
    access_key_secret: str = field(repr=False)
    name: str = ""

    def as_json(self) -> dict[str, str]:
        return {
            "app_id": self.app_id,
            "workspace_id": self.workspace_id,
            "access_key_id": self.access_key_id,
            "access_key_secret": self.access_key_secret,
        }


@dataclass(frozen=True)
class AppInfo:
    pk: int
    app_id: str
    workspace_id: str
    name: str
    access_key_ids: tuple[str, ...]
    created_at: datetime


@dataclass(frozen=True)
class KeyOwner:
    """The app an access key belongs to, with the secret needed to check signatures."""

    app_pk: int
    app_id: str
    workspace_id: str
    secret: str = field(repr=False)


async def create_app(
    store: Store, name: str, *, app_id: str | None = None, workspace_id: str = "default"
) -> AppCredentials:
    now = datetime.now(UTC)
    app = App(app_id=app_id or new_app_id(), workspace_id=workspace_id, name=name, created_at=now)
    key = AccessKey(key_id="LTAI" + _random(_ALNUM, 20), secret=_random(_ALNUM, 30), created_at=now)
    async with store.write() as session:
        session.add(app)
        await session.flush()
        key.app_pk = app.id
        session.add(key)
    return AppCredentials(app.app_id, app.workspace_id, key.key_id, key.secret, name)


async def count_apps(store: Store) -> int:
    async with store.session() as session:
        return int(await session.scalar(select(func.count()).select_from(App)) or 0)


async def list_apps(store: Store) -> list[AppInfo]:
    async with store.session() as session:
        apps = (await session.scalars(select(App).order_by(App.id))).all()
        keys = (await session.execute(select(AccessKey.app_pk, AccessKey.key_id))).all()
    by_app: dict[int, list[str]] = {}
    for app_pk, key_id in keys:
        by_app.setdefault(app_pk, []).append(key_id)
    return [
        AppInfo(a.id, a.app_id, a.workspace_id, a.name, tuple(by_app.get(a.id, ())), a.created_at)
        for a in apps
    ]


async def find_app(store: Store, app_id: str, workspace_id: str) -> int | None:
    """The primary key of the app with that AppId and WorkspaceId, or None."""
    async with store.session() as session:
        return await session.scalar(
            select(App.id).where(App.app_id == app_id, App.workspace_id == workspace_id)
        )


class KeyRing:
    """Access key lookups, cached for ``ttl_s`` so a signed request costs no query.

    A key created by ``openmps app create`` in another process is found at once (misses are
    not cached); a deleted key keeps working for at most ``ttl_s``.
    """

    def __init__(self, store: Store, *, ttl_s: float = 30.0) -> None:
        self._store = store  # where keys live
        self._ttl_s = ttl_s  # how long a found key is trusted without a new query
        self._cache: dict[str, tuple[float, KeyOwner]] = {}  # key id -> (found at, owner)

    async def get(self, key_id: str) -> KeyOwner | None:
        now = time.monotonic()
        hit = self._cache.get(key_id)
        if hit is not None and now - hit[0] < self._ttl_s:
            return hit[1]
        async with self._store.session() as session:
            row = (
                await session.execute(
                    select(AccessKey.secret, App.id, App.app_id, App.workspace_id)
                    .join(App, App.id == AccessKey.app_pk)
                    .where(AccessKey.key_id == key_id)
                )
            ).first()
        if row is None:
            self._cache.pop(key_id, None)
            return None
        owner = KeyOwner(app_pk=row[1], app_id=row[2], workspace_id=row[3], secret=row[0])
        self._cache[key_id] = (now, owner)
        return owner
