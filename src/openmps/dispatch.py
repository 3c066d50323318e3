"""Dispatch: hands committed deliveries to the channel that carries them.

Own channel: a delivery whose device is connected goes out at once; one whose
device is offline waits in the store and goes out when the device connects (the gateway reads
pending deliveries on every connect). Vendor channels: the delivery goes to the vendor
dispatcher, which batches, sends, retries and records outcomes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from openmps.gateway.hub import Hub
from openmps.vendor_dispatch import VendorDispatcher, VendorJob


@dataclass(frozen=True, slots=True)
class Job:
    """One committed delivery ready to go out."""

    delivery_id: int
    device_pk: int
    frame: str


def message_body(payload: Mapping[str, Any], *, msg_key: str, task_id: int, expires_ms: int) -> str:
    """The JSON members of a ``msg`` frame shared by every device of a message, without braces."""
    body = {
        "msg_key": msg_key,
        "task_id": str(task_id),
        "title": payload["title"],
        "content": payload["content"],
        "extras": payload.get("extras") or {},
        "silent": bool(payload.get("silent")),
        "push_action": int(payload.get("push_action") or 0),
        "uri": payload.get("uri"),
        "expires_at": expires_ms,
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))[1:-1]


def message_frame(delivery_id: int, body: str) -> str:
    """A ``msg`` frame (gateway protocol v1) for one delivery of a message."""
    return f'{{"type":"msg","id":"{delivery_id}",{body}}}'


AnyJob = Job | VendorJob


class Dispatch(Protocol):
    """How the service layer hands committed deliveries on, and asks who is online.

    :class:`Dispatcher` does it inside one process (the hub, the vendor dispatcher);
    ``openmps.scaleout.dispatch.ClusterDispatcher`` does it across processes through Redis.
    """

    async def online_among(self, device_pks: Iterable[int]) -> set[int]:
        """Those of ``device_pks`` connected to a gateway now."""
        ...

    async def online_devices(self) -> list[int]:
        """Every device connected to a gateway now."""
        ...

    async def submit(self, jobs: Iterable[AnyJob]) -> None:
        """Send committed deliveries: own-channel jobs to connected devices (others wait in
        the store for their device), vendor jobs to the vendor channels."""
        ...

    async def revoke(self, sent: Iterable[tuple[int, int]]) -> None:
        """Tell connected devices to remove notifications of revoked (device, delivery)s."""
        ...


class Dispatcher:
    """:class:`Dispatch` in one process: the hub holds every connected device."""

    def __init__(self, hub: Hub, vendors: VendorDispatcher | None = None) -> None:
        self._hub = hub  # devices connected to this process
        self._vendors = vendors  # vendor channels; None where nothing is sent (the CLI)
        self.offered = 0  # jobs handed to a connected device since start

    def is_online(self, device_pk: int) -> bool:
        return self._hub.is_online(device_pk)

    async def online_among(self, device_pks: Iterable[int]) -> set[int]:
        return {pk for pk in device_pks if self._hub.is_online(pk)}

    async def online_devices(self) -> list[int]:
        """The devices connected to this process."""
        return [link.device_pk for link in self._hub.links()]

    async def submit(self, jobs: Iterable[AnyJob]) -> None:
        to_vendors: list[VendorJob] = []
        for job in jobs:
            if isinstance(job, VendorJob):
                to_vendors.append(job)
            elif self._hub.offer(job.device_pk, job.delivery_id, job.frame):
                self.offered += 1
        if to_vendors and self._vendors is not None:
            self._vendors.submit(to_vendors)

    async def revoke(self, sent: Iterable[tuple[int, int]]) -> None:
        for device_pk, delivery_id in sent:
            self._hub.offer(device_pk, -delivery_id, revoke_frame(delivery_id))


def revoke_frame(delivery_id: int) -> str:
    """A ``revoke`` frame (gateway protocol v1) for one delivery."""
    return f'{{"type":"revoke","id":"{delivery_id}"}}'
