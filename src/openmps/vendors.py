"""Per-app vendor channel settings and the routing rule that picks a delivery's channel.

Routing (docs/vendor-channels.md): a device with a vendor token that its app has settings for
goes through that vendor, except that under the default policy ``own_first`` a device online
on the own channel gets it there. iOS devices with an APNs token always go through APNs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update

from openmps.channels.base import ChannelConfig
from openmps.channels.registry import PUBLIC_SETTINGS, VENDORS, channel_class, vendor_of
from openmps.errors import BusinessError, ConfigError
from openmps.store import App, ChannelSettings, Store

ROUTE_OWN = "own"
POLICIES = ("own_first", "vendor_first")
CACHE_S = 2.0  # how long routing trusts what it read of an app's channel settings


@dataclass(frozen=True, slots=True)
class DeviceRoute:
    """What routing needs to know of a device."""

    device_pk: int
    platform: str
    third_channel: int | None
    third_token: str | None


class VendorSettings:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._cache: dict[int, tuple[float, str, frozenset[str]]] = {}  # app -> (at, policy, set)

    async def set(
        self, app_pk: int, vendor: str, values: dict[str, Any], *, base_url: str | None
    ) -> None:
        """Check the settings by building the channel, then store them (replacing old ones)."""
        if vendor not in VENDORS:
            raise BusinessError(
                3028, "INVALID_PARAM", f"unknown vendor {vendor!r}; one of: {', '.join(VENDORS)}"
            )
        cls = channel_class(vendor)
        known = PUBLIC_SETTINGS[vendor] | cls.secret_keys
        unknown = sorted(set(values) - known)
        if unknown:
            raise BusinessError(
                3028,
                "INVALID_PARAM",
                f"unknown {vendor} setting(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}",
            )
        config = ChannelConfig(vendor, values, base_url, cls.secret_keys)
        try:
            channel = cls.create(config)
        except ConfigError as exc:
            raise BusinessError(3028, "INVALID_PARAM", str(exc)) from exc
        await channel.close()
        now = datetime.now(UTC)
        async with self._store.write() as session:
            await session.execute(
                self._store.insert(ChannelSettings)
                .values(
                    app_pk=app_pk, vendor=vendor, settings=values, base_url=base_url, updated_at=now
                )
                .on_conflict_do_update(
                    index_elements=["app_pk", "vendor"],
                    set_={"settings": values, "base_url": base_url, "updated_at": now},
                )
            )
        self._cache.pop(app_pk, None)

    async def remove(self, app_pk: int, vendor: str) -> None:
        async with self._store.write() as session:
            row = await session.scalar(
                select(ChannelSettings).where(
                    ChannelSettings.app_pk == app_pk, ChannelSettings.vendor == vendor
                )
            )
            if row is not None:
                await session.delete(row)
        self._cache.pop(app_pk, None)

    async def set_policy(self, app_pk: int, policy: str) -> None:
        if policy not in POLICIES:
            raise BusinessError(
                3028, "INVALID_PARAM", f"policy must be {' or '.join(POLICIES)}, got {policy!r}"
            )
        async with self._store.write() as session:
            await session.execute(update(App).where(App.id == app_pk).values(route_policy=policy))
        self._cache.pop(app_pk, None)

    async def load(self, app_pk: int, vendor: str) -> ChannelConfig | None:
        async with self._store.session() as session:
            row = await session.scalar(
                select(ChannelSettings).where(
                    ChannelSettings.app_pk == app_pk, ChannelSettings.vendor == vendor
                )
            )
        if row is None:
            return None
        return ChannelConfig(vendor, row.settings, row.base_url, channel_class(vendor).secret_keys)

    async def describe(self, app_pk: int) -> list[dict[str, Any]]:
        """Each vendor's settings with every secret value hidden."""
        async with self._store.session() as session:
            rows = (
                await session.scalars(
                    select(ChannelSettings)
                    .where(ChannelSettings.app_pk == app_pk)
                    .order_by(ChannelSettings.vendor)
                )
            ).all()
        out = []
        for row in rows:
            public = PUBLIC_SETTINGS.get(row.vendor, frozenset())
            out.append(
                {
                    "vendor": row.vendor,
                    "settings": {
                        k: (v if k in public else "<hidden>") for k, v in row.settings.items()
                    },
                    "base_url": row.base_url,
                    "updated_at": row.updated_at.isoformat(),
                }
            )
        return out

    async def routing(self, app_pk: int) -> tuple[str, frozenset[str]]:
        """(policy, vendors with settings) of an app, cached for a moment."""
        hit = self._cache.get(app_pk)
        now = time.monotonic()
        if hit is not None and now - hit[0] < CACHE_S:
            return hit[1], hit[2]
        async with self._store.session() as session:
            policy = await session.scalar(select(App.route_policy).where(App.id == app_pk))
            vendors = (
                await session.scalars(
                    select(ChannelSettings.vendor).where(ChannelSettings.app_pk == app_pk)
                )
            ).all()
        entry = (now, policy or "own_first", frozenset(vendors))
        self._cache[app_pk] = entry
        return entry[1], entry[2]


def choose_route(
    device: DeviceRoute, *, policy: str, configured: frozenset[str], online: bool
) -> str:
    """The channel a delivery to ``device`` goes through: ``own`` or a vendor key."""
    vendor = vendor_of(device.third_channel, device.platform) if device.third_token else None
    if vendor is None or vendor not in configured:
        return ROUTE_OWN
    if device.platform == "ios" or policy == "vendor_first" or not online:
        return vendor
    return ROUTE_OWN


__all__ = ["POLICIES", "ROUTE_OWN", "DeviceRoute", "VendorSettings", "choose_route"]
