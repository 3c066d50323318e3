"""The hub: which device is connected to this process, and the ordered outbox of each link.

A link starts SYNCING: pending messages are read from the store and sent first, oldest first;
live messages offered meanwhile wait in the outbox and follow, without those already sent.
Then the link is LIVE and offered frames go out at once. Nothing here touches the store: a link
reports each message frame it wrote through its ``on_sent`` callback (the gateway hands it the
status writer's ``sent``, which only notes the time in memory).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Protocol

logger = logging.getLogger(__name__)


class Sender(Protocol):
    """The socket side of a link (a websockets connection satisfies it)."""

    async def send(self, message: str) -> None: ...


class LinkState(enum.Enum):
    SYNCING = "syncing"
    LIVE = "live"
    CLOSED = "closed"


class Link:
    """One connected device: its socket and the frames waiting to go out on it, in order."""

    __slots__ = ("_flushing", "_on_sent", "_outbox", "device_pk", "sender", "state")

    def __init__(
        self,
        device_pk: int,
        sender: Sender,
        *,
        on_sent: Callable[[int, int], None] | None = None,
    ) -> None:
        self.device_pk = device_pk  # which device this link belongs to
        self.sender = sender  # where frames are written
        # Called with (delivery id, device pk) after a message frame was written; not for
        # revoke frames (offered with the negated delivery id). None: nobody is told.
        self._on_sent = on_sent
        self.state = LinkState.SYNCING  # see the module docstring
        self._outbox: deque[tuple[int, str]] | None = None  # (delivery id, frame) not yet sent
        self._flushing = False  # a flush task is running for this link

    def offer(self, delivery_id: int, frame: str) -> None:
        if self.state is LinkState.CLOSED:
            return
        if self._outbox is None:
            self._outbox = deque()
        self._outbox.append((delivery_id, frame))
        if self.state is LinkState.LIVE and not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().create_task(self._flush(()))

    async def go_live(self, sent: Iterable[int]) -> None:
        """End the sync: send what was offered meanwhile, skipping ``sent`` delivery ids."""
        self.state = LinkState.LIVE
        if self._outbox and not self._flushing:
            self._flushing = True
            await self._flush(frozenset(sent))

    async def _flush(self, skip: Iterable[int]) -> None:
        skip = frozenset(skip)
        try:
            while self._outbox and self.state is LinkState.LIVE:
                delivery_id, frame = self._outbox.popleft()
                if delivery_id in skip:
                    continue
                await self.sender.send(frame)
                if delivery_id > 0 and self._on_sent is not None:
                    self._on_sent(delivery_id, self.device_pk)
        except Exception as exc:  # the link broke; pending messages go out on reconnect
            logger.debug("send to device %d failed: %r", self.device_pk, exc)
            self.state = LinkState.CLOSED
        finally:
            self._flushing = False
            if not self._outbox:
                self._outbox = None


class Hub:
    """device pk -> its live link, for this process."""

    def __init__(self) -> None:
        self._links: dict[int, Link] = {}

    def __len__(self) -> int:
        return len(self._links)

    def attach(self, link: Link) -> Link | None:
        """Make ``link`` the device's link; returns the link it replaces, if any."""
        old = self._links.get(link.device_pk)
        self._links[link.device_pk] = link
        if old is not None:
            old.state = LinkState.CLOSED
        return old

    def detach(self, link: Link) -> None:
        link.state = LinkState.CLOSED
        if self._links.get(link.device_pk) is link:
            del self._links[link.device_pk]

    def get(self, device_pk: int) -> Link | None:
        return self._links.get(device_pk)

    def is_online(self, device_pk: int) -> bool:
        return device_pk in self._links

    def offer(self, device_pk: int, delivery_id: int, frame: str) -> bool:
        """Queue a frame for the device if it is connected here; True if it was."""
        link = self._links.get(device_pk)
        if link is None:
            return False
        link.offer(delivery_id, frame)
        return True

    def links(self) -> list[Link]:
        return list(self._links.values())
