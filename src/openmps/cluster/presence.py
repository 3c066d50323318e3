"""Presence in Redis: which gateway node holds each connected device, and which nodes live.

Keys (``p`` is the deployment prefix)::

    p:presence:device:<device pk>     string: the node holding the device; expires after ttl
    p:presence:node:<node>:devices    set of device pks the node attached; expires after ttl
    p:presence:nodes                  sorted set: node -> the time its heartbeat runs out
    p:presence:node:<node>:instance   string: the process beating as the node; expires after ttl

The device key is the truth; the per-node set is a cheap index of it (:meth:`online_devices`
reads both and drops members whose device key names another node). A holder keeps its entries
alive with :meth:`Presence.refresh` every ``ttl_s / 3`` seconds; when a node dies its entries
vanish within ``ttl_s``. Times in the node sorted set come from the Redis server's clock, so
skewed node clocks do not matter.

A device that reconnects to another node is taken over at once (:meth:`attach` returns the
previous holder); the old node's later :meth:`detach` leaves the new holder's entry alone.

A node id belongs to one process at a time: :meth:`claim` beats for the node as one process
(a random instance token) and refuses while another process's beat for that id is alive.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from openmps.cluster.redis import DEFAULT_PREFIX, check_node_id, check_prefix, decoded, key

MGET_CHUNK = 1000
"""Device keys per MGET (and per refresh script call): keeps each Redis call short."""

# KEYS: device key, this node's set. ARGV: node, ttl ms, device pk, other-set prefix, suffix.
_ATTACH = """
local old = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
if old and old ~= ARGV[1] then
  redis.call('SREM', ARGV[4] .. old .. ARGV[5], ARGV[3])
  return old
end
return false
"""

# KEYS: device key, this node's set. ARGV: node, device pk.
_DETACH = """
redis.call('SREM', KEYS[2], ARGV[2])
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""

# KEYS: this node's set, then device keys. ARGV: node, ttl ms, then the devices' pks.
# Returns {pks now held by another node, pks whose entry had expired and was written again}.
_REFRESH = """
local lost, restored = {}, {}
for i = 2, #KEYS do
  local cur = redis.call('GET', KEYS[i])
  if not cur or cur == ARGV[1] then
    redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
    redis.call('SADD', KEYS[1], ARGV[i + 1])
    if not cur then
      restored[#restored + 1] = ARGV[i + 1]
    end
  else
    redis.call('SREM', KEYS[1], ARGV[i + 1])
    lost[#lost + 1] = ARGV[i + 1]
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return {lost, restored}
"""

# KEYS: this node's set, then device keys. ARGV: node, then the devices' pks.
# Drops set members whose device key names another node (or none); returns the kept pks.
_PRUNE = """
local kept = {}
for i = 2, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    kept[#kept + 1] = ARGV[i]
  else
    redis.call('SREM', KEYS[1], ARGV[i])
  end
end
return kept
"""

# KEYS: node sorted set. ARGV: node, ttl ms. Times are the server's, in seconds.
_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]) / 1000, ARGV[1])
return 1
"""

# KEYS: node sorted set, the node's instance key. ARGV: node, ttl ms, instance token.
# Beats as that instance, unless another instance's beat for the node is still alive: then
# returns {that instance, its remaining ms} and changes nothing.
_CLAIM = """
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[3] then
  return {holder, redis.call('PTTL', KEYS[2])}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]) / 1000, ARGV[1])
return false
"""

# KEYS: node sorted set, then a node's device set (optional).
# Returns {live nodes, members of the device set (or -1 without one)}.
_CENSUS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local live = redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
local held = -1
if #KEYS > 1 then
  held = redis.call('SCARD', KEYS[2])
end
return {live, held}
"""

# KEYS: node sorted set.
_LIVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
"""

# KEYS: node sorted set, this node's set, its instance key. ARGV: node, device key prefix,
# instance token ('' for any). Forgets the node and every device entry that still names it;
# returns how many, or -1 (nothing done) when another instance holds the node id now.
_LEAVE = """
local holder = redis.call('GET', KEYS[3])
if ARGV[3] ~= '' and holder and holder ~= ARGV[3] then
  return -1
end
redis.call('DEL', KEYS[3])
redis.call('ZREM', KEYS[1], ARGV[1])
local removed = 0
for _, pk in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local dev = ARGV[2] .. pk
  if redis.call('GET', dev) == ARGV[1] then
    redis.call('DEL', dev)
    removed = removed + 1
  end
end
redis.call('DEL', KEYS[2])
return removed
"""


@dataclass(frozen=True, slots=True)
class Refreshed:
    """What :meth:`Presence.refresh` found."""

    lost: list[int]
    """Devices another node holds now: close this node's stale link to each."""
    restored: list[int]
    """Devices whose entry had expired (a pause longer than the TTL, or Redis lost its data)
    and was written again. Frames for them may have been dropped meanwhile while the device
    stayed connected: send each its pending deliveries from the store again."""


@dataclass(frozen=True, slots=True)
class Holder:
    """Another process whose beat for a node id is alive (:meth:`Presence.claim`)."""

    instance: str
    """Its instance token."""
    remaining_ms: int
    """How long its beat still lasts unless renewed, by the Redis server's clock."""


@dataclass(frozen=True, slots=True)
class Census:
    """Counts for metrics (:meth:`Presence.census`)."""

    live_nodes: int
    """Nodes whose heartbeat has not run out."""
    devices: int | None
    """Members of the node's device set; None when no node was asked about."""


def _chunks(items: Sequence[int], size: int) -> Iterable[Sequence[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Presence:
    """Where each connected device is held, and which gateway nodes are alive.

    ``ttl_s`` is how long an entry outlives its last refresh (device entries) or heartbeat
    (node liveness); refresh and beat every ``ttl_s / 3`` (:attr:`refresh_interval_s`) so
    that one late call does not make a live node look dead.
    """

    def __init__(self, client: Redis, *, prefix: str = DEFAULT_PREFIX, ttl_s: float = 30.0) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        self.ttl_s = ttl_s  # lifetime of an entry after its last refresh, seconds
        self._client = decoded(client)
        self._prefix = check_prefix(prefix)
        self._ttl_ms = max(1, round(ttl_s * 1000))
        self._nodes_key = key(self._prefix, "presence", "nodes")
        self._attach = client.register_script(_ATTACH)
        self._detach = client.register_script(_DETACH)
        self._refresh = client.register_script(_REFRESH)
        self._prune = client.register_script(_PRUNE)
        self._heartbeat = client.register_script(_HEARTBEAT)
        self._claim = client.register_script(_CLAIM)
        self._census = client.register_script(_CENSUS)
        self._live = client.register_script(_LIVE)
        self._leave = client.register_script(_LEAVE)

    @property
    def refresh_interval_s(self) -> float:
        """How often a holder should call :meth:`refresh` and :meth:`heartbeat`."""
        return self.ttl_s / 3

    def _instance_key(self, node: str) -> str:
        return key(self._prefix, "presence", "node", node, "instance")

    def _device_key(self, device_pk: int) -> str:
        return key(self._prefix, "presence", "device", device_pk)

    def _node_set(self, node: str) -> str:
        return key(self._prefix, "presence", "node", node, "devices")

    async def attach(self, device_pk: int, node: str) -> str | None:
        """Record that ``node`` holds the device now; return the node that held it before.

        ``None`` when no other node held it. A previous holder still has a stale link it may
        close; it is also dropped from that node's set at once.
        """
        check_node_id(node)
        old_set_prefix = key(self._prefix, "presence", "node", "")
        old = await self._attach(
            keys=[self._device_key(device_pk), self._node_set(node)],
            args=[node, self._ttl_ms, device_pk, old_set_prefix, ":devices"],
        )
        return str(old) if old else None

    async def detach(self, device_pk: int, node: str) -> bool:
        """Forget that ``node`` holds the device, unless another node took it meanwhile.

        True if the device entry was removed; False if it named another node or had expired.
        """
        removed = await self._detach(
            keys=[self._device_key(device_pk), self._node_set(node)], args=[node, device_pk]
        )
        return bool(removed)

    async def refresh(self, node: str, device_pks: Iterable[int]) -> Refreshed:
        """Renew the entries of the devices ``node`` holds (all of them, each call).

        Entries that expired are written again and reported as ``restored``. A device another
        node holds now is left to it, dropped from this node's set and reported as ``lost``.
        """
        check_node_id(node)
        node_set = self._node_set(node)
        pks = list(device_pks)
        found = Refreshed(lost=[], restored=[])
        for chunk in _chunks(pks, MGET_CHUNK):
            lost, restored = await self._refresh(
                keys=[node_set, *(self._device_key(pk) for pk in chunk)],
                args=[node, self._ttl_ms, *chunk],
            )
            found.lost.extend(int(pk) for pk in lost)
            found.restored.extend(int(pk) for pk in restored)
        if not pks:
            await self._client.pexpire(node_set, self._ttl_ms)
        return found

    async def node_of(self, device_pk: int) -> str | None:
        """The node holding the device, or None if no live node does."""
        node = await self._client.get(self._device_key(device_pk))
        return str(node) if node is not None else None

    async def nodes_of(self, device_pks: Iterable[int]) -> dict[int, str]:
        """device pk -> holding node, for the given devices that are online (others left out).

        One pipelined round trip of MGETs, ``MGET_CHUNK`` keys each: a broadcast's online set.
        """
        pks = list(device_pks)
        if not pks:
            return {}
        async with self._client.pipeline(transaction=False) as pipe:
            for chunk in _chunks(pks, MGET_CHUNK):
                pipe.mget([self._device_key(pk) for pk in chunk])
            replies = await pipe.execute()
        found: dict[int, str] = {}
        for chunk, nodes in zip(_chunks(pks, MGET_CHUNK), replies, strict=True):
            for pk, node in zip(chunk, nodes, strict=True):
                if node is not None:
                    found[pk] = str(node)
        return found

    async def online_devices(self, node: str) -> set[int]:
        """The devices ``node`` holds, checked against their device keys (stale ones dropped).

        Costs one SMEMBERS and a scripted GET per member: fine for the devices of one node.
        """
        node_set = self._node_set(node)
        members = sorted(int(pk) for pk in await self._client.smembers(node_set))
        held: set[int] = set()
        for chunk in _chunks(members, MGET_CHUNK):
            kept = await self._prune(
                keys=[node_set, *(self._device_key(pk) for pk in chunk)], args=[node, *chunk]
            )
            held.update(int(pk) for pk in kept)
        return held

    async def heartbeat(self, node: str) -> None:
        """Mark ``node`` alive for ``ttl_s`` more seconds (by the Redis server's clock)."""
        check_node_id(node)
        await self._heartbeat(keys=[self._nodes_key], args=[node, self._ttl_ms])

    async def claim(self, node: str, instance: str) -> Holder | None:
        """Beat for ``node`` as the process ``instance`` (a token of its own, random per
        process): ``None`` when done (as :meth:`heartbeat`, and the node id is this process's
        for ``ttl_s``). While another instance's beat for the node is alive, nothing is
        written and that :class:`Holder` is returned."""
        check_node_id(node)
        held = await self._claim(
            keys=[self._nodes_key, self._instance_key(node)], args=[node, self._ttl_ms, instance]
        )
        if not held:
            return None
        holder, remaining = held
        return Holder(instance=str(holder), remaining_ms=int(remaining))

    async def census(self, node: str | None = None) -> Census:
        """The number of live nodes and, for ``node``, the members of its device set (the
        devices it attached and still holds; SCARD, not checked against the device keys).
        One script call: cheap enough for every metrics scrape."""
        keys = [self._nodes_key]
        if node is not None:
            keys.append(self._node_set(node))
        live, held = await self._census(keys=keys)
        return Census(live_nodes=int(live), devices=int(held) if node is not None else None)

    async def live_nodes(self) -> list[str]:
        """Nodes whose last heartbeat is less than ``ttl_s`` old, sorted by name."""
        nodes = await self._live(keys=[self._nodes_key])
        return sorted(str(node) for node in nodes)

    async def leave(self, node: str, instance: str | None = None) -> int:
        """On a clean shutdown: forget the node and its device entries; return how many.

        Entries another node took over are kept. Without this call they expire after ``ttl_s``.
        With ``instance``, nothing is done (and -1 returned) when another instance holds the
        node id now (:meth:`claim`): its entries are not this process's to remove.
        """
        removed = await self._leave(
            keys=[self._nodes_key, self._node_set(node), self._instance_key(node)],
            args=[node, key(self._prefix, "presence", "device", ""), instance or ""],
        )
        return int(removed)
