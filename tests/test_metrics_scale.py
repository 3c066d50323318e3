"""Scaled out: the Redis levels of ``/metrics``, own-channel acks counted once, and the refusal
of a node id that a live process already uses. Real Redis (and PostgreSQL for the processes).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from openmps.cluster.presence import Presence
from openmps.cluster.redis import connect
from openmps.errors import ConfigError
from openmps.fakes.fcm import FakeFCM
from openmps.metrics import Metrics, VendorMetrics
from openmps.scaleout.node import ClusterNode
from tests.conftest import eventually, free_port
from tests.scale_cluster import (
    REDIS_URL,
    App,
    Cluster,
    Inbox,
    Node,
    cluster_of,
    fcm_device,
    fcm_fake,
    purge,
    use_fcm,
)
from tests.test_e2e_vendors import FakeHost

# Needs PostgreSQL and Redis: `make test-postgres` (and CI) runs it, `make test` does not.
pytestmark = pytest.mark.scale

CLUSTER_GAUGES = (
    "openmps_dispatch_stream_length",
    "openmps_dispatch_stream_pending",
    "openmps_cluster_live_nodes",
    "openmps_presence_devices",
)
NODE_LOG = "openmps.scaleout.node"
OWN_ACKED = 'openmps_deliveries_total{channel="own",code="2",status_channel="common"}'


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def redis(prefix: str) -> AsyncIterator[Redis]:
    client = await connect(REDIS_URL)
    try:
        yield client
    finally:
        await purge(client, prefix)
        await client.aclose()


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with cluster_of(tmp_path) as made:
        yield made


@pytest.fixture(scope="module")
def fcm() -> Iterator[tuple[FakeHost, FakeFCM]]:
    with fcm_fake() as made:
        yield made


def _node(client: Redis, prefix: str, node_id: str, ttl_s: float = 30.0) -> ClusterNode:
    return ClusterNode(
        client, node_id=node_id, prefix=prefix, presence_ttl_s=ttl_s, stream_maxlen=1000
    )


def _metrics(node: ClusterNode, roles: set[str], timeout_s: float = 1.0) -> Metrics:
    """The metrics of a runtime that is idle but for ``node``: what the scrape asks Redis."""
    runtime = SimpleNamespace(
        cluster=node,
        roles=frozenset(roles),
        hub=[],
        pushes=SimpleNamespace(queued=0),
        vendor_dispatcher=SimpleNamespace(metrics=VendorMetrics(), queued=0, retrying=0),
        writer=SimpleNamespace(written=0),
    )
    return Metrics(runtime, cluster_timeout_s=timeout_s)  # type: ignore[arg-type]


def _lines(body: bytes, *names: str) -> list[str]:
    """The lines of ``body`` (HELP and TYPE included) about the named metrics, in order."""
    return [
        line
        for line in body.decode().splitlines()
        if any(line.split(" ")[2 if line.startswith("#") else 0].startswith(n) for n in names)
    ]


# --- the Redis levels, read at scrape time -----------------------------------------------------


async def test_stream_depth_and_presence_counts_are_read_at_each_scrape(
    redis: Redis, prefix: str
) -> None:
    node = _node(redis, prefix, "gw-a")
    await node.start()
    try:
        await node.stream.publish([{"kind": "vendor", "deliveries": [n]} for n in (1, 2, 3)])
        held = await node.stream.consume("worker-x", count=2, block_ms=None)
        other = Presence(redis, prefix=prefix, ttl_s=30)
        await other.heartbeat("gw-b")
        for device_pk, holder in ((1, "gw-a"), (2, "gw-a"), (3, "gw-b")):
            await other.attach(device_pk, holder)
        gateway, worker = _metrics(node, {"api", "gateway"}), _metrics(node, {"worker"})

        assert _lines(await gateway.scrape(), *CLUSTER_GAUGES) == [
            "# HELP openmps_dispatch_stream_length Entries in the dispatch stream: published and "
            "not yet done (deployment-wide)",
            "# TYPE openmps_dispatch_stream_length gauge",
            "openmps_dispatch_stream_length 3.0",
            "# HELP openmps_dispatch_stream_pending Dispatch stream entries a worker received and "
            "has not acked (deployment-wide)",
            "# TYPE openmps_dispatch_stream_pending gauge",
            "openmps_dispatch_stream_pending 2.0",
            "# HELP openmps_cluster_live_nodes Nodes whose heartbeat has not run out "
            "(deployment-wide)",
            "# TYPE openmps_cluster_live_nodes gauge",
            "openmps_cluster_live_nodes 2.0",
            "# HELP openmps_presence_devices Devices this gateway node holds in presence",
            "# TYPE openmps_presence_devices gauge",
            "openmps_presence_devices 2.0",
        ]
        # A node without the gateway role holds no devices: no presence line.
        assert [
            line for line in _lines(await worker.scrape(), *CLUSTER_GAUGES) if "#" not in line
        ] == [
            "openmps_dispatch_stream_length 3.0",
            "openmps_dispatch_stream_pending 2.0",
            "openmps_cluster_live_nodes 2.0",
        ]

        # Each scrape reads again: one entry done, one device gone, one node left.
        await node.stream.ack([held[0].id])
        await other.detach(2, "gw-a")
        await other.leave("gw-b")
        body = await gateway.scrape()
        assert [line for line in _lines(body, *CLUSTER_GAUGES) if "#" not in line] == [
            "openmps_dispatch_stream_length 2.0",
            "openmps_dispatch_stream_pending 1.0",
            "openmps_cluster_live_nodes 1.0",
            "openmps_presence_devices 1.0",
        ]
        # The levels of the runtime itself are still there.
        assert "openmps_connected_devices 0.0" in body.decode().splitlines()
    finally:
        await node.close()


async def _silent_server() -> tuple[asyncio.Server, int]:
    """A TCP server that takes connections and never answers: a Redis that hangs."""

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(4096):
            pass
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    return server, int(server.sockets[0].getsockname()[1])


async def test_a_hanging_redis_costs_its_levels_not_the_scrape(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    server, port = await _silent_server()
    client = Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=30)
    node = _node(client, prefix, "gw-a")
    metrics = _metrics(node, {"gateway"}, timeout_s=0.2)
    try:
        with caplog.at_level(logging.WARNING, logger="openmps.metrics"):
            started = time.monotonic()
            body = await metrics.scrape()
            took = time.monotonic() - started
    finally:
        await client.aclose()
        server.close()
    assert took < 1.0
    assert _lines(body, *CLUSTER_GAUGES) == []
    assert "openmps_connected_devices 0.0" in body.decode().splitlines()
    assert sorted(r.getMessage() for r in caplog.records) == [
        "metrics: Redis gave no dispatch stream depth within 0.2 s",
        "metrics: Redis gave no presence counts within 0.2 s",
    ]


async def test_a_redis_that_refuses_connections_costs_its_levels_not_the_scrape(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = Redis(
        host="127.0.0.1", port=free_port(), decode_responses=True, retry=Retry(NoBackoff(), 0)
    )
    node = _node(client, prefix, "worker-a")
    metrics = _metrics(node, {"worker"})
    try:
        with caplog.at_level(logging.WARNING, logger="openmps.metrics"):
            body = await metrics.scrape()
    finally:
        await client.aclose()
    assert _lines(body, *CLUSTER_GAUGES) == []
    assert 'openmps_pushes_accepted_total{kind="simple"} 0.0' in body.decode().splitlines()
    assert sorted(r.getMessage().split(":")[1] for r in caplog.records) == [
        " Redis gave no dispatch stream depth",
        " Redis gave no presence counts",
    ]


# --- one live process per node id --------------------------------------------------------------


def _in_use(node_id: str, prefix: str, ttl: str) -> str:
    return (
        f"node id {node_id!r} is in use: another live process beats under it in Redis "
        f"(prefix {prefix!r}). Give every process its own --node-id (OPENMPS_NODE_ID), or leave "
        "it out for a unique default; to reuse this id, stop the other process first (one that "
        f"was killed frees it within presence_ttl_s, {ttl} s)"
    )


async def test_a_node_id_in_use_by_a_live_process_is_refused(redis: Redis, prefix: str) -> None:
    first = _node(await connect(REDIS_URL), prefix, "gw-1", ttl_s=0.6)
    await first.start()
    second = _node(await connect(REDIS_URL), prefix, "gw-1", ttl_s=0.6)
    try:
        started = time.monotonic()
        with pytest.raises(ConfigError) as caught:
            await second.join()
        # Refused at the first's next beat (every ttl / 3), without waiting out the TTL.
        assert time.monotonic() - started < 0.5
        assert str(caught.value) == _in_use("gw-1", prefix, "0.6")
        # The refused process took nothing: the first still holds the id and its beat.
        await second.close()
        assert await Presence(redis, prefix=prefix, ttl_s=0.6).live_nodes() == ["gw-1"]
        assert await redis.get(f"{prefix}:presence:node:gw-1:instance") == first.instance
    finally:
        await first.close()
    assert await redis.exists(f"{prefix}:presence:node:gw-1:instance") == 0


async def test_a_killed_processes_node_id_is_taken_over_once_its_beat_runs_out(
    redis: Redis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A process killed right after a beat: its entry is there, and nobody renews it.
    dead = Presence(redis, prefix=prefix, ttl_s=0.8)
    assert await dead.claim("worker-1", "killed0123456789") is None
    restarted = _node(await connect(REDIS_URL), prefix, "worker-1", ttl_s=0.8)
    try:
        with caplog.at_level(logging.INFO, logger=NODE_LOG):
            started = time.monotonic()
            await restarted.start()
            took = time.monotonic() - started
        assert 0.3 < took < 1.5
        assert [r.getMessage().split(" (")[0] for r in caplog.records if r.name == NODE_LOG] == [
            "node id 'worker-1' is held by another process's heartbeat",
            "node id 'worker-1' taken over: the other heartbeat ran out",
        ]
        assert await redis.get(f"{prefix}:presence:node:worker-1:instance") == restarted.instance
        assert await dead.live_nodes() == ["worker-1"]
    finally:
        await restarted.close()


async def test_a_node_id_left_cleanly_is_free_at_once(
    redis: Redis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    first = _node(await connect(REDIS_URL), prefix, "api-1")
    await first.start()
    await first.close()
    again = _node(await connect(REDIS_URL), prefix, "api-1")
    try:
        with caplog.at_level(logging.INFO, logger=NODE_LOG):
            started = time.monotonic()
            await again.start()
        assert time.monotonic() - started < 0.2
        assert [r for r in caplog.records if r.name == NODE_LOG] == []
    finally:
        await again.close()


def _incarnation(cluster: Cluster, template: Node, n: int) -> Node:
    """Another process declared like ``template``: same node id and arguments, own log."""
    node = Node(
        template.name,
        template.roles,
        cluster.work / f"{template.name}-{n}.log",
        list(template.args),
        dict(template.env),
    )
    cluster.nodes[f"{template.name}#{n}"] = node  # stopped by cluster_of if left running
    return node


async def test_serve_refuses_a_duplicate_node_id_and_restarts_after_a_kill(
    cluster: Cluster,
) -> None:
    # A TTL longer than a process takes to start, so that the restart below finds the
    # killed process's beat still there.
    worker = cluster.node("worker-1", "worker", OPENMPS_PRESENCE_TTL_S="8")
    cluster.start(worker)

    duplicate = _incarnation(cluster, worker, 2)
    duplicate.launch()
    assert duplicate.process is not None
    code = await asyncio.to_thread(duplicate.process.wait, 30)
    duplicate.process = None
    stderr = duplicate.log.read_text().splitlines()
    assert (code, stderr[-1]) == (2, "error: " + _in_use("worker-1", cluster.prefix, "8"))
    assert worker.alive

    # Killed: a restart under the same id waits for the old beat to run out.
    await asyncio.to_thread(worker.kill)
    restarted = _incarnation(cluster, worker, 3)
    started = time.monotonic()
    await asyncio.to_thread(restarted.start)
    assert time.monotonic() - started < 15
    assert "node id 'worker-1' taken over: the other heartbeat ran out" in restarted.log.read_text()

    # Stopped cleanly: the id is free at once. (A stop sent at once after the ready line can
    # reach a process without an HTTP port before it handles signals: give it a moment.)
    await asyncio.sleep(1)
    assert await asyncio.to_thread(restarted.stop) == 0
    again = _incarnation(cluster, worker, 4)
    await asyncio.to_thread(again.start)
    assert "held by another process" not in again.log.read_text()
    await asyncio.sleep(1)
    assert await asyncio.to_thread(again.stop) == 0


# --- /metrics of real processes ----------------------------------------------------------------


async def _scrape(url: str) -> list[str]:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{url}/metrics")
    assert response.status_code == 200
    return response.text.splitlines()


def _values(lines: list[str], *names: str) -> list[str]:
    return [line for line in lines if line.split(" ")[0].split("{")[0] in names]


async def test_metrics_of_a_scaled_deployment(
    cluster: Cluster, fcm: tuple[FakeHost, FakeFCM]
) -> None:
    host, fake = fcm
    api = cluster.node("api-1", "api")
    gw_ops = free_port()
    gw = cluster.node("gw-1", "gateway", OPENMPS_OPS_PORT=str(gw_ops))
    cluster.start(api, gw)
    gw_url = f"http://127.0.0.1:{gw_ops}"
    app = App(await cluster.app())
    await use_fcm(app, api, fake, host)
    vendor_device = await fcm_device(app, api, "fcm-metrics-scale-0001")
    creds = await app.register(api)
    names = (*CLUSTER_GAUGES, "openmps_connected_devices")

    assert _values(await _scrape(api.api_url), *names) == [
        "openmps_connected_devices 0.0",
        "openmps_dispatch_stream_length 0.0",
        "openmps_dispatch_stream_pending 0.0",
        "openmps_cluster_live_nodes 2.0",
    ]
    assert OWN_ACKED + " 0.0" in await _scrape(gw_url)

    inbox = Inbox(app.device([gw], creds, auto_ack=False))
    try:
        await inbox.client.connect()

        async def gateway_shows(expected: list[str]) -> bool:
            return _values(await _scrape(gw_url), *names) == expected

        await eventually(
            lambda: gateway_shows(
                [
                    "openmps_connected_devices 1.0",
                    "openmps_dispatch_stream_length 0.0",
                    "openmps_dispatch_stream_pending 0.0",
                    "openmps_cluster_live_nodes 2.0",
                    "openmps_presence_devices 1.0",
                ]
            )
        )

        # No worker runs: the vendor push waits in the stream, unread.
        await app.push(api, {vendor_device: "v-1"})
        assert _values(await _scrape(api.api_url), *CLUSTER_GAUGES[:2]) == [
            "openmps_dispatch_stream_length 1.0",
            "openmps_dispatch_stream_pending 0.0",
        ]

        # An own-channel message, acked twice by its device: counted once.
        task = await app.push(api, {creds.delivery_token: "own-1"})

        async def received() -> bool:
            return inbox.keys() == ["own-1"]

        await eventually(received)
        await inbox.client.ack(inbox.messages[0].id)

        async def acked() -> bool:
            return await app.statuses(api, task) == [(creds.delivery_token, "own", 2, True)]

        await eventually(acked)
        await inbox.client.ack(inbox.messages[0].id)
        await asyncio.sleep(0.3)  # the status writer flushes every 50 ms
        assert OWN_ACKED + " 1.0" in await _scrape(gw_url)
    finally:
        await inbox.close()

    # A worker takes the entry; the stream empties.
    # A TTL longer than a process takes to start, so that the restart below finds the
    # killed process's beat still there.
    worker = cluster.node("worker-1", "worker", OPENMPS_PRESENCE_TTL_S="8")
    cluster.start(worker)

    async def drained() -> bool:
        return _values(await _scrape(api.api_url), *CLUSTER_GAUGES) == [
            "openmps_dispatch_stream_length 0.0",
            "openmps_dispatch_stream_pending 0.0",
            "openmps_cluster_live_nodes 3.0",
        ]

    await eventually(drained, timeout_s=20)
    assert OWN_ACKED not in " ".join(await _scrape(api.api_url))
    for node in (api, gw, worker):
        assert await asyncio.to_thread(node.stop) == 0, cluster.logs()
