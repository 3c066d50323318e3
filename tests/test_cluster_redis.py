"""The Redis building blocks of scale-out, against the real Redis at 127.0.0.1:6379.

``OPENMPS_TEST_REDIS_URL`` points elsewhere. A missing Redis fails these tests; they are not
skipped. Each test uses a key prefix of its own and deletes its keys afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from openmps.cluster.bus import MAX_BLOCK_MS, DispatchStream, StreamDepth, StreamEntry
from openmps.cluster.nonces import RedisNonceCache
from openmps.cluster.presence import Presence, Refreshed
from openmps.cluster.redis import check_node_id, check_prefix, connect, default_node_id, shown_url
from openmps.cluster.routing import FrameRouter, RoutedBatch, RoutedFrame, Subscription
from openmps.errors import ApiError, ConfigError
from openmps.gateway.hub import Hub, Link
from openmps.scaleout.dispatch import ClusterDispatcher
from openmps.scaleout.gateway import GatewayNode
from openmps.scaleout.node import ClusterNode
from openmps.scaleout.recovery import RecoverySweep
from openmps.statuswriter import StatusWriter
from openmps.store import Store
from tests.conftest import free_port
from tests.store_rows import pending_delivery

# Needs PostgreSQL and Redis: `make test-postgres` (and CI) runs it, `make test` does not.
pytestmark = pytest.mark.scale

REDIS_URL = os.environ.get("OPENMPS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REPO = Path(__file__).resolve().parents[1]


async def _purge(client: Redis, prefix: str) -> None:
    keys = [name async for name in client.scan_iter(match=f"{prefix}:*", count=1000)]
    if keys:
        await client.delete(*keys)


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def client(prefix: str) -> AsyncIterator[Redis]:
    redis = await connect(REDIS_URL)
    try:
        yield redis
    finally:
        await _purge(redis, prefix)
        await redis.aclose()


@pytest.fixture
async def other_client() -> AsyncIterator[Redis]:
    """A second connection pool: another process, as far as Redis can tell."""
    redis = await connect(REDIS_URL)
    try:
        yield redis
    finally:
        await redis.aclose()


# --- connection ---------------------------------------------------------------------------


async def test_connect_names_a_closed_port_and_the_fix() -> None:
    port = free_port()
    with pytest.raises(ConfigError) as caught:
        await connect(f"redis://127.0.0.1:{port}/0", retries=0)
    message = str(caught.value)
    assert message.startswith(f"cannot reach Redis at redis://127.0.0.1:{port}/0: ")
    assert f"Error 111 connecting to 127.0.0.1:{port}" in message
    assert ".." not in message
    assert message.endswith(
        ". Start Redis there (for example `redis-server --port 6379`), or set redis_url "
        "(OPENMPS_REDIS_URL) to a server this node can reach, with the password in the URL if "
        "it needs one"
    )


async def test_connect_hides_the_password_in_its_error() -> None:
    port = free_port()
    with pytest.raises(ConfigError) as caught:
        await connect(f"redis://app:s3cret@127.0.0.1:{port}/2", retries=0)
    assert str(caught.value).startswith(
        f"cannot reach Redis at redis://app:***@127.0.0.1:{port}/2: "
    )
    assert "s3cret" not in str(caught.value)


async def test_connect_refuses_a_url_that_is_not_redis() -> None:
    with pytest.raises(ConfigError) as caught:
        await connect("http://127.0.0.1:6379/0")
    assert str(caught.value).startswith("redis_url http://127.0.0.1:6379/0 is not a Redis URL (")
    assert str(caught.value).endswith(
        "); write it as redis://host:port/db (for example redis://127.0.0.1:6379/0), "
        "rediss://... for TLS, or unix:///path/to/redis.sock?db=0"
    )


async def test_connect_answers_ping_and_names_the_client(prefix: str) -> None:
    redis = await connect(REDIS_URL, client_name=f"{prefix}-node")
    try:
        assert await redis.ping() is True
        assert await redis.client_getname() == f"{prefix}-node"
    finally:
        await redis.aclose()


async def test_thousands_of_concurrent_commands_share_a_bounded_pool(prefix: str) -> None:
    # Regression: 4,000 devices leaving a gateway at once opened a connection each and failed
    # with "Too many connections"; they now wait for one of MAX_CONNECTIONS.
    from openmps.cluster.redis import MAX_CONNECTIONS

    name = f"{prefix}-pool"
    redis = await connect(REDIS_URL, client_name=name)
    try:
        keys = [f"{prefix}:k:{i}" for i in range(2000)]
        await asyncio.gather(*(redis.set(key, "1", ex=30) for key in keys))
        assert sum(await asyncio.gather(*(redis.exists(key) for key in keys))) == 2000
        listed = await redis.client_list()
        assert 1 <= sum(c["name"] == name for c in listed) <= MAX_CONNECTIONS
        await redis.delete(*keys)
    finally:
        await redis.aclose()


def test_shown_url_hides_only_the_password() -> None:
    assert shown_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert shown_url("redis://:pw@h:1/0") == "redis://:***@h:1/0"
    assert shown_url("rediss://user:pw@h:1/3?x=1") == "rediss://user:***@h:1/3?x=1"


def test_prefix_and_node_ids_are_checked() -> None:
    assert check_prefix("openmps-eu1") == "openmps-eu1"
    with pytest.raises(ConfigError) as caught:
        check_prefix("bad prefix")
    assert str(caught.value) == (
        "redis_prefix 'bad prefix' is not usable: use 1 to 64 letters, digits, '_', '.' or "
        "'-', starting with a letter or digit (for example 'openmps' or 'openmps-eu1')"
    )
    with pytest.raises(ConfigError) as caught:
        check_node_id("a:b")
    assert str(caught.value) == (
        "node_id 'a:b' is not usable: use 1 to 64 letters, digits, '_', '.' or '-', "
        "starting with a letter or digit (for example 'gw-1' or the host name)"
    )
    node = default_node_id()
    assert check_node_id(node) == node
    assert node.split("-")[-2] == str(os.getpid())
    assert default_node_id() != node


async def test_a_client_that_returns_bytes_is_refused(prefix: str) -> None:
    raw = Redis.from_url(REDIS_URL)
    try:
        for build in (
            lambda: RedisNonceCache(raw, window_s=1, prefix=prefix),
            lambda: Presence(raw, prefix=prefix),
            lambda: DispatchStream(raw, prefix=prefix),
            lambda: FrameRouter(raw, prefix=prefix),
        ):
            with pytest.raises(ValueError) as caught:
                build()
            assert str(caught.value) == (
                "the Redis client must decode responses: open it with connect()"
            )
    finally:
        await raw.aclose()


# --- nonces -------------------------------------------------------------------------------


async def test_nonce_repeat_is_refused_by_another_process(
    client: Redis, other_client: Redis, prefix: str
) -> None:
    node_a = RedisNonceCache(client, window_s=60, prefix=prefix)
    node_b = RedisNonceCache(other_client, window_s=60, prefix=prefix)

    await node_a.remember("AK1", "nonce-1", 0.0)
    with pytest.raises(ApiError) as caught:
        await node_b.remember("AK1", "nonce-1", 0.0)
    assert caught.value.http_status == 400
    assert caught.value.code == "SignatureNonceUsed"
    assert caught.value.message == (
        "the signature nonce 'nonce-1' was already used within the last 60 s; generate a new "
        "nonce for every request, including retries"
    )
    with pytest.raises(ApiError):
        await node_a.remember("AK1", "nonce-1", 0.0)

    # Another key id, or another nonce, is a different request.
    await node_b.remember("AK2", "nonce-1", 0.0)
    await node_b.remember("AK1", "nonce-2", 0.0)
    ttl_ms = await client.pttl(node_a.key_of("AK1", "nonce-1"))
    assert 59_000 < ttl_ms <= 60_000


async def test_nonce_is_free_again_after_the_window(client: Redis, prefix: str) -> None:
    nonces = RedisNonceCache(client, window_s=0.2, prefix=prefix)
    await nonces.remember("AK1", "n", 0.0)
    with pytest.raises(ApiError):
        await nonces.remember("AK1", "n", 0.0)
    await asyncio.sleep(0.3)
    await nonces.remember("AK1", "n", 0.0)


async def test_nonce_missing_is_refused(client: Redis, prefix: str) -> None:
    nonces = RedisNonceCache(client, window_s=60, prefix=prefix)
    for value in ("", "   "):
        with pytest.raises(ApiError) as caught:
            await nonces.remember("AK1", value, 0.0)
        assert (caught.value.http_status, caught.value.code) == (400, "MissingSignatureNonce")


async def test_nonce_written_by_our_own_lost_reply_still_passes(
    client: Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The client retries a SET whose reply was lost: it finds its own token, not a replay.
    monkeypatch.setattr("openmps.cluster.nonces.os.urandom", lambda n: b"\x01" * n)
    nonces = RedisNonceCache(client, window_s=60, prefix=prefix)
    await nonces.remember("AK1", "n", 0.0)
    await nonces.remember("AK1", "n", 0.0)


async def test_nonce_check_fails_closed_when_redis_is_down(prefix: str) -> None:
    dead = Redis.from_url(
        f"redis://127.0.0.1:{free_port()}/0", decode_responses=True, retry=Retry(NoBackoff(), 0)
    )
    try:
        with pytest.raises(ApiError) as caught:
            await RedisNonceCache(dead, window_s=60, prefix=prefix).remember("AK1", "n", 0.0)
    finally:
        await dead.aclose()
    assert (caught.value.http_status, caught.value.code) == (503, "ServiceUnavailable")
    assert caught.value.message.startswith(
        "replay protection is unavailable: the Redis server cannot be reached ("
    )


# --- presence -----------------------------------------------------------------------------


async def test_presence_attach_detach_and_lookup(
    client: Redis, other_client: Redis, prefix: str
) -> None:
    gw_a = Presence(client, prefix=prefix, ttl_s=30)
    gw_b = Presence(other_client, prefix=prefix, ttl_s=30)

    assert await gw_a.attach(1, "gw-a") is None
    assert await gw_a.attach(2, "gw-a") is None
    assert await gw_b.attach(3, "gw-b") is None
    assert await gw_b.node_of(1) == "gw-a"
    assert await gw_a.node_of(3) == "gw-b"
    assert await gw_a.node_of(4) is None
    assert await gw_b.nodes_of([1, 2, 3, 4]) == {1: "gw-a", 2: "gw-a", 3: "gw-b"}
    assert await gw_b.nodes_of([]) == {}
    assert await gw_b.online_devices("gw-a") == {1, 2}
    assert await gw_a.online_devices("gw-b") == {3}
    assert 29_000 < await client.pttl(f"{prefix}:presence:device:1") <= 30_000

    # Device 2 reconnects through gw-b: gw-b takes it, and gw-a's late detach leaves it be.
    assert await gw_b.attach(2, "gw-b") == "gw-a"
    assert await gw_a.online_devices("gw-a") == {1}
    assert await gw_a.detach(2, "gw-a") is False
    assert await gw_a.node_of(2) == "gw-b"
    assert await gw_b.online_devices("gw-b") == {2, 3}

    assert await gw_a.detach(1, "gw-a") is True
    assert await gw_a.node_of(1) is None
    assert await gw_a.online_devices("gw-a") == set()
    assert await gw_a.detach(1, "gw-a") is False


class _Quiet:
    """A link's socket that is never written to in these tests."""

    async def send(self, message: str) -> None:
        raise AssertionError(f"nothing is sent here, got {message!r}")


@contextlib.asynccontextmanager
async def _gateway_node(
    client: Redis, prefix: str, tmp_path: Path
) -> AsyncIterator[tuple[GatewayNode, Hub, list[Link]]]:
    """A gateway node "gw-new" over ``client`` with its hub; the list collects the links it
    closed because another node took their device."""
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'openmps.db'}")
    node = ClusterNode(
        client, node_id="gw-new", prefix=prefix, presence_ttl_s=30, stream_maxlen=1000
    )
    hub = Hub()
    gateway = GatewayNode(
        node, hub=hub, store=store, writer=StatusWriter(store, flush_interval_s=1, flush_max=9)
    )
    dropped: list[Link] = []

    def drop(link: Link) -> bool:
        dropped.append(link)
        hub.detach(link)
        return True

    gateway.drop = drop
    try:
        yield gateway, hub, dropped
    finally:
        await store.close()


@pytest.fixture
async def gateway_node(
    client: Redis, prefix: str, tmp_path: Path
) -> AsyncIterator[tuple[GatewayNode, Hub, list[Link]]]:
    async with _gateway_node(client, prefix, tmp_path) as found:
        yield found


async def test_a_link_still_announcing_itself_is_not_taken_for_a_takeover(
    gateway_node: tuple[GatewayNode, Hub, list[Link]], other_client: Redis, prefix: str
) -> None:
    # Regression: a device moving from a killed gateway (its entry still names "gw-old") was
    # closed with 4009 by its new gateway when the presence refresh ran between the link
    # joining the hub and its presence attach: the device SDK took 4009 as final and stopped.
    gateway, hub, dropped = gateway_node
    old = Presence(other_client, prefix=prefix, ttl_s=30)
    await old.attach(5, "gw-old")
    link = Link(5, _Quiet())
    hub.attach(link)
    opening = asyncio.create_task(gateway.opened(link))
    await asyncio.sleep(0)  # the attach is under way

    await gateway.refresh()
    await opening

    assert dropped == []
    assert await old.node_of(5) == "gw-new"
    await gateway.refresh()
    assert dropped == []

    # Now another node takes the device over: the next refresh closes this node's link.
    assert await old.attach(5, "gw-other") == "gw-new"
    await gateway.refresh()
    assert dropped == [link]
    assert hub.get(5) is None
    assert await old.node_of(5) == "gw-other"


async def test_presence_entries_expire_without_refresh(client: Redis, prefix: str) -> None:
    presence = Presence(client, prefix=prefix, ttl_s=0.3)
    await presence.attach(7, "gw-a")
    await presence.attach(8, "gw-a")
    assert await presence.nodes_of([7, 8]) == {7: "gw-a", 8: "gw-a"}

    await asyncio.sleep(0.45)

    assert await presence.node_of(7) is None
    assert await presence.nodes_of([7, 8]) == {}
    assert await presence.online_devices("gw-a") == set()
    assert await client.exists(f"{prefix}:presence:node:gw-a:devices") == 0


async def test_presence_refresh_keeps_entries_and_reports_takeovers(
    client: Redis, prefix: str
) -> None:
    presence = Presence(client, prefix=prefix, ttl_s=0.6)
    await presence.attach(1, "gw-a")
    await presence.attach(2, "gw-a")
    for _ in range(5):  # 1 s in all, well past the TTL
        await asyncio.sleep(0.2)
        assert await presence.refresh("gw-a", [1, 2]) == Refreshed(lost=[], restored=[])
    assert await presence.nodes_of([1, 2]) == {1: "gw-a", 2: "gw-a"}

    # An entry that expired during a long pause comes back; one gw-b took is reported.
    await client.delete(f"{prefix}:presence:device:1")
    await presence.attach(2, "gw-b")
    assert await presence.refresh("gw-a", [1, 2]) == Refreshed(lost=[2], restored=[1])
    assert await presence.nodes_of([1, 2]) == {1: "gw-a", 2: "gw-b"}
    assert await presence.online_devices("gw-a") == {1}


async def test_presence_refresh_of_many_devices_crosses_chunks(client: Redis, prefix: str) -> None:
    presence = Presence(client, prefix=prefix, ttl_s=30)
    pks = list(range(1, 2502))
    assert await presence.refresh("gw-a", pks) == Refreshed(lost=[], restored=pks)
    assert await presence.refresh("gw-a", pks) == Refreshed(lost=[], restored=[])
    assert await presence.nodes_of(pks) == dict.fromkeys(pks, "gw-a")
    assert await presence.online_devices("gw-a") == set(pks)
    assert await presence.leave("gw-a") == 2501
    assert await presence.nodes_of(pks) == {}


async def test_presence_node_liveness(client: Redis, other_client: Redis, prefix: str) -> None:
    short = Presence(client, prefix=prefix, ttl_s=0.3)
    long = Presence(other_client, prefix=prefix, ttl_s=30)
    await short.heartbeat("gw-a")
    await long.heartbeat("gw-b")
    assert await short.live_nodes() == ["gw-a", "gw-b"]

    await asyncio.sleep(0.45)
    assert await long.live_nodes() == ["gw-b"]

    await short.heartbeat("gw-a")
    assert await long.live_nodes() == ["gw-a", "gw-b"]


async def test_presence_leave_keeps_what_another_node_took(client: Redis, prefix: str) -> None:
    presence = Presence(client, prefix=prefix, ttl_s=30)
    await presence.heartbeat("gw-a")
    await presence.attach(1, "gw-a")
    await presence.attach(2, "gw-a")
    await presence.attach(2, "gw-b")
    await client.sadd(f"{prefix}:presence:node:gw-a:devices", 2)  # a stale member

    assert await presence.leave("gw-a") == 1
    assert await presence.nodes_of([1, 2]) == {2: "gw-b"}
    assert await presence.live_nodes() == []


# --- dispatch stream ----------------------------------------------------------------------


def _work(n: int) -> list[dict[str, object]]:
    return [{"kind": "vendor", "delivery": 1000 + i} for i in range(n)]


async def test_stream_claims_each_entry_once(client: Redis, prefix: str) -> None:
    stream = DispatchStream(client, prefix=prefix)
    ids = await stream.publish(_work(30))
    assert len(ids) == 30

    first = await stream.consume("worker-a", count=20, block_ms=None)
    second = await stream.consume("worker-b", count=20, block_ms=None)
    third = await stream.consume("worker-a", count=20, block_ms=100)

    assert [e.id for e in first] == ids[:20]
    assert [e.id for e in second] == ids[20:]
    assert third == []
    assert [e.data for e in first + second] == _work(30)
    assert await stream.depth() == StreamDepth(length=30, pending=30)


async def test_stream_concurrent_consumers_split_without_overlap(
    client: Redis, other_client: Redis, prefix: str
) -> None:
    await DispatchStream(client, prefix=prefix).publish(_work(200))
    streams = [DispatchStream(client, prefix=prefix), DispatchStream(other_client, prefix=prefix)]

    async def drain(stream: DispatchStream, name: str) -> list[StreamEntry]:
        taken: list[StreamEntry] = []
        while batch := await stream.consume(name, count=7, block_ms=50):
            taken.extend(batch)
            await stream.ack(entry.id for entry in batch)
            await asyncio.sleep(0)
        return taken

    got_a, got_b = await asyncio.gather(drain(streams[0], "a"), drain(streams[1], "b"))

    ids_a = {e.id for e in got_a}
    ids_b = {e.id for e in got_b}
    assert ids_a.isdisjoint(ids_b)
    assert len(ids_a) + len(ids_b) == 200
    assert sorted(int(e.data["delivery"]) for e in got_a + got_b) == list(range(1000, 1200))
    assert await streams[0].depth() == StreamDepth(length=0, pending=0)


async def test_stream_ack_removes_from_pending_and_stream(client: Redis, prefix: str) -> None:
    stream = DispatchStream(client, prefix=prefix)
    ids = await stream.publish(_work(5))
    await stream.consume("w", count=5, block_ms=None)
    assert await stream.depth() == StreamDepth(length=5, pending=5)

    assert await stream.ack(ids[:2]) == 2
    assert await stream.ack(ids[:2]) == 0
    assert await stream.ack([]) == 0
    depth = await stream.depth()
    assert depth == StreamDepth(length=3, pending=3)
    assert depth.waiting == 0
    pending = await client.xpending_range(stream.key, "workers", "-", "+", 10)
    assert [p["message_id"] for p in pending] == ids[2:]


async def test_stream_reclaims_a_dead_consumers_entries_after_min_idle(
    client: Redis, prefix: str
) -> None:
    stream = DispatchStream(client, prefix=prefix)
    ids = await stream.publish(_work(5))
    assert [e.id for e in await stream.consume("dead", count=3, block_ms=None)] == ids[:3]

    assert await stream.reclaim("alive", min_idle_ms=10_000) == []
    await asyncio.sleep(0.25)
    reclaimed = await stream.reclaim("alive", min_idle_ms=200)

    assert reclaimed == [StreamEntry(ids[i], _work(5)[i]) for i in range(3)]
    pending = await client.xpending_range(stream.key, "workers", "-", "+", 10)
    assert [(p["message_id"], p["consumer"]) for p in pending] == [(i, "alive") for i in ids[:3]]
    assert await stream.reclaim("alive", min_idle_ms=200) == []
    assert [e.id for e in await stream.consume("alive", count=10, block_ms=None)] == ids[3:]


async def test_stream_reclaim_is_bounded_by_count(client: Redis, prefix: str) -> None:
    stream = DispatchStream(client, prefix=prefix)
    ids = await stream.publish(_work(10))
    await stream.consume("dead", count=10, block_ms=None)
    first = await stream.reclaim("alive", min_idle_ms=0, count=4)
    rest = await stream.reclaim("alive", min_idle_ms=0, count=100)
    assert [e.id for e in first] == ids[:4]
    assert [e.id for e in rest] == ids  # min_idle 0 takes back our own four too


async def test_stream_drops_a_trimmed_pending_entry_on_reclaim(client: Redis, prefix: str) -> None:
    stream = DispatchStream(client, prefix=prefix)
    ids = await stream.publish(_work(3))
    await stream.consume("dead", count=3, block_ms=None)
    await client.xdel(stream.key, ids[1])  # what MAXLEN trimming does to an old entry

    reclaimed = await stream.reclaim("alive", min_idle_ms=0)
    assert [e.id for e in reclaimed] == [ids[0], ids[2]]
    assert await stream.depth() == StreamDepth(length=2, pending=2)


async def test_stream_drops_unreadable_entries(client: Redis, prefix: str) -> None:
    stream = DispatchStream(client, prefix=prefix)
    await stream.ensure_group()
    await client.xadd(stream.key, {"e": "not json"})
    await client.xadd(stream.key, {"other": "field"})
    await client.xadd(stream.key, {"e": '{"no":"kind"}'})
    good = await stream.publish([{"kind": "task", "task": 5}])

    assert await stream.consume("w", count=10, block_ms=None) == [
        StreamEntry(good[0], {"kind": "task", "task": 5})
    ]
    assert await stream.depth() == StreamDepth(length=1, pending=1)


async def test_stream_publish_refuses_entries_without_kind(client: Redis, prefix: str) -> None:
    stream = DispatchStream(client, prefix=prefix)
    with pytest.raises(ValueError) as caught:
        await stream.publish([{"kind": "task", "task": 1}, {"task": 2}])
    assert str(caught.value) == "a dispatch entry needs a string 'kind', got {'task': 2}"
    assert await client.exists(stream.key) == 0  # nothing was sent


async def test_stream_consume_checks_its_arguments(client: Redis, prefix: str) -> None:
    stream = DispatchStream(client, prefix=prefix)
    with pytest.raises(ValueError) as caught:
        await stream.consume("w", block_ms=0)
    assert str(caught.value) == f"block_ms must be None or between 1 and {MAX_BLOCK_MS}"
    assert MAX_BLOCK_MS == 10_000
    with pytest.raises(ConfigError):
        await stream.consume("bad name")


async def test_stream_recreates_a_lost_group(client: Redis, prefix: str) -> None:
    stream = DispatchStream(client, prefix=prefix)
    await stream.publish(_work(1))
    await stream.consume("w", count=1, block_ms=None)
    await client.delete(stream.key)  # FLUSHALL, or an operator's DEL

    ids = await stream.publish(_work(2))
    assert [e.id for e in await stream.consume("w", count=5, block_ms=None)] == ids
    assert await stream.depth() == StreamDepth(length=2, pending=2)


async def test_stream_depth_of_a_fresh_deployment(client: Redis, prefix: str) -> None:
    stream = DispatchStream(client, prefix=prefix)
    assert await stream.depth() == StreamDepth(length=0, pending=0)
    await stream.publish(_work(4))
    depth = await stream.depth()
    assert (depth.length, depth.pending, depth.waiting) == (4, 0, 4)


async def test_stream_maxlen_bounds_the_backlog(client: Redis, prefix: str) -> None:
    stream = DispatchStream(client, prefix=prefix, maxlen=100)
    await stream.publish(_work(1000))
    # MAXLEN ~ trims whole listpack nodes only: at least maxlen stay, and a node's worth more.
    assert 100 <= await client.xlen(stream.key) < 300


async def test_stream_prunes_idle_consumers_without_entries(client: Redis, prefix: str) -> None:
    stream = DispatchStream(client, prefix=prefix)
    ids = await stream.publish(_work(2))
    await stream.consume("busy", count=1, block_ms=None)
    await stream.consume("done", count=1, block_ms=None)
    await stream.ack(ids[1:])
    assert await stream.prune_consumers(min_idle_ms=0) == ["done"]
    names = [c["name"] for c in await client.xinfo_consumers(stream.key, "workers")]
    assert names == ["busy"]


async def test_stream_entries_of_killed_worker_processes_go_to_a_survivor(
    client: Redis, prefix: str
) -> None:
    stream = DispatchStream(client, prefix=prefix)
    ids = await stream.publish(_work(12))
    workers: list[asyncio.subprocess.Process] = []
    reports: list[dict[str, list[str]]] = []
    try:
        # Two worker processes, started one after the other so each takes four known entries;
        # each acks two, then is killed holding the other two.
        for name in ("dead-a", "dead-b"):
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.cluster_worker",
                REDIS_URL,
                prefix,
                name,
                "4",
                "2",
                cwd=REPO,
                stdout=asyncio.subprocess.PIPE,
            )
            workers.append(proc)
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
            reports.append(json.loads(line))
        for proc in workers:
            proc.send_signal(signal.SIGKILL)
            assert await proc.wait() == -signal.SIGKILL
    finally:
        for proc in workers:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    assert reports == [
        {"got": ids[0:4], "acked": ids[0:2]},
        {"got": ids[4:8], "acked": ids[4:6]},
    ]
    assert await stream.depth() == StreamDepth(length=8, pending=4)

    await asyncio.sleep(0.35)
    reclaimed = await stream.reclaim("survivor", min_idle_ms=300)
    fresh = await stream.consume("survivor", count=10, block_ms=None)

    assert [e.id for e in reclaimed] == ids[2:4] + ids[6:8]
    assert [e.data["delivery"] for e in reclaimed] == [1002, 1003, 1006, 1007]
    assert [e.id for e in fresh] == ids[8:12]
    assert await stream.ack(e.id for e in reclaimed + fresh) == 8
    assert await stream.depth() == StreamDepth(length=0, pending=0)
    assert await stream.prune_consumers(min_idle_ms=0) == ["dead-a", "dead-b", "survivor"]


# --- gateway routing ----------------------------------------------------------------------


async def _next(subscription: Subscription) -> RoutedBatch:
    return await asyncio.wait_for(anext(subscription), timeout=5)


async def test_route_reaches_the_right_node_only(
    client: Redis, other_client: Redis, prefix: str
) -> None:
    router = FrameRouter(client, prefix=prefix)
    listener = FrameRouter(other_client, prefix=prefix)
    frames = [
        RoutedFrame(1, 10, '{"type":"msg","id":"10","title":"a b"}'),
        RoutedFrame(2, 11, '{"type":"msg","id":"11","title":"ü 中"}'),
        RoutedFrame(1, -9, '{"type":"revoke","id":"9"}'),
    ]
    marker = [RoutedFrame(3, 12, '{"type":"msg","id":"12"}')]
    async with listener.listen("gw-a") as gw_a, listener.listen("gw-b") as gw_b:
        assert await router.route("gw-a", frames) == 1
        assert await router.route("gw-b", marker) == 1
        assert await _next(gw_a) == RoutedBatch(frames)
        # Had gw-b seen gw-a's message, it would have come before the marker.
        assert await _next(gw_b) == RoutedBatch(marker)

    assert await router.route("gw-a", frames) == 0  # nobody listens any more
    assert await router.route("gw-a", []) == 0


async def test_route_many_splits_large_batches(
    client: Redis, other_client: Redis, prefix: str
) -> None:
    router = FrameRouter(client, prefix=prefix, max_message_chars=1024)
    frames = [RoutedFrame(pk, 100 + pk, f'{{"type":"msg","id":"{100 + pk}"}}') for pk in range(60)]
    async with FrameRouter(other_client, prefix=prefix).listen("gw-a") as gw_a:
        assert await router.route_many({"gw-a": frames, "gw-none": frames[:1]}) == {
            "gw-a": 1,
            "gw-none": 0,
        }
        received: list[RoutedFrame] = []
        batches = 0
        while len(received) < 60:
            batch = await _next(gw_a)
            received.extend(batch.frames)
            batches += 1
    assert received == frames
    assert batches == 2  # 60 lines, 1,970 characters with their newlines: cut once


async def test_route_refuses_frames_with_a_newline(client: Redis, prefix: str) -> None:
    router = FrameRouter(client, prefix=prefix)
    with pytest.raises(ValueError) as caught:
        await router.route("gw-a", [RoutedFrame(5, 1, '{"a":\n1}')])
    assert str(caught.value) == "frame for device 5 contains a newline"
    assert router.channel("gw-a") == f"{prefix}:gateway:gw-a"


async def test_listen_reports_a_resync_after_the_subscription_broke(
    client: Redis, prefix: str
) -> None:
    name = f"{prefix}-listener"
    listener_client = await connect(REDIS_URL, client_name=name)
    router = FrameRouter(client, prefix=prefix)
    try:
        async with FrameRouter(listener_client, prefix=prefix).listen("gw-a") as gw_a:
            await router.route("gw-a", [RoutedFrame(1, 1, "{}")])
            assert await _next(gw_a) == RoutedBatch([RoutedFrame(1, 1, "{}")])

            killed = 0
            for info in await client.client_list(_type="pubsub"):
                if info["name"] == name:
                    killed += await client.client_kill_filter(_id=info["id"])
            assert killed == 1

            assert await _next(gw_a) == RoutedBatch([], resync=True)
            assert await router.route("gw-a", [RoutedFrame(2, 2, "{}")]) == 1
            assert await _next(gw_a) == RoutedBatch([RoutedFrame(2, 2, "{}")])
    finally:
        await listener_client.aclose()


class _Proxy:
    """A TCP relay to Redis that the test can cut and restore: a Redis outage for one client."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def cut(self) -> None:
        """Stop accepting and drop every relayed connection."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.close()
        if server is not None:
            await server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = urlsplit(REDIS_URL)
        up_reader, up_writer = await asyncio.open_connection(
            upstream.hostname, upstream.port or 6379
        )
        self._writers.update((writer, up_writer))

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self._writers.difference_update((writer, up_writer))


async def test_listen_comes_back_after_a_redis_outage(client: Redis, prefix: str) -> None:
    proxy = _Proxy(free_port())
    await proxy.start()
    listener_client = await connect(f"redis://127.0.0.1:{proxy.port}/0", retries=1)
    router = FrameRouter(client, prefix=prefix)
    try:
        async with FrameRouter(listener_client, prefix=prefix).listen("gw-a", poll_s=0.2) as gw_a:
            await proxy.cut()
            waiting = asyncio.ensure_future(anext(gw_a))
            await asyncio.sleep(1.0)  # reads fail and back off meanwhile
            assert not waiting.done()
            assert await router.route("gw-a", [RoutedFrame(1, 1, "{}")]) == 0  # lost

            await proxy.start()
            assert await asyncio.wait_for(waiting, timeout=10) == RoutedBatch([], resync=True)
            assert await router.route("gw-a", [RoutedFrame(2, 2, "{}")]) == 1
            assert await _next(gw_a) == RoutedBatch([RoutedFrame(2, 2, "{}")])
    finally:
        await listener_client.aclose()
        await proxy.cut()


async def test_a_link_whose_presence_attach_failed_is_announced_by_the_next_refresh(
    other_client: Redis, prefix: str, tmp_path: Path
) -> None:
    # Before: the refresh found the entry of the gateway the device came from and closed the
    # device's new link with 4009 (final for the device SDK).
    proxy = _Proxy(free_port())
    await proxy.start()
    node_client = await connect(f"redis://127.0.0.1:{proxy.port}/0", retries=1)
    old = Presence(other_client, prefix=prefix, ttl_s=30)
    await old.attach(5, "gw-old")
    try:
        async with _gateway_node(node_client, prefix, tmp_path) as (gateway, hub, dropped):
            link = Link(5, _Quiet())
            hub.attach(link)
            await proxy.cut()
            await gateway.opened(link)  # logs the failure; the device stays connected
            assert await old.node_of(5) == "gw-old"

            await proxy.start()
            await gateway.refresh()

            assert dropped == []
            assert hub.get(5) is link
            assert await old.node_of(5) == "gw-new"
            assert gateway.resyncs == 1  # frames routed to gw-old meanwhile are offered again
    finally:
        await node_client.aclose()
        await proxy.cut()


async def test_recovery_counts_quiet_time_from_its_own_first_sight(
    client: Redis, other_client: Redis, prefix: str, tmp_path: Path
) -> None:
    # Regression: a broadcast's rows carry the start of their transaction; one that took
    # longer than recovery_after_s to commit (a million rows on PostgreSQL: 36 s) had its
    # online devices' frames routed twice, by the api node and by the first sweep after it.
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'openmps.db'}")
    node = ClusterNode(
        client, node_id="sched-1", prefix=prefix, presence_ttl_s=30, stream_maxlen=1000
    )
    sweep = RecoverySweep(node, store=store, dispatcher=ClusterDispatcher(node), after_s=0.6)
    try:
        long_ago = datetime.now(UTC) - timedelta(hours=1)
        row = await pending_delivery(store, created=long_ago, updated=long_ago)
        device_pk, delivery_id = row.device_pk, row.delivery_id
        gateway = Presence(other_client, prefix=prefix, ttl_s=30)
        await gateway.heartbeat("gw-x")
        await gateway.attach(device_pk, "gw-x")
        async with FrameRouter(other_client, prefix=prefix).listen("gw-x") as gw_x:
            assert await sweep.sweep() == (0, 0)  # first sight: not stuck yet
            await asyncio.sleep(0.7)
            assert await sweep.sweep() == (0, 1)
            batch = await _next(gw_x)
            assert [(f.device_pk, f.delivery_id) for f in batch.frames] == [
                (device_pk, delivery_id)
            ]
            assert await sweep.sweep() == (0, 0)  # routed again just now: another spell first
    finally:
        await store.close()
