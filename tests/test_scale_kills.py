"""The scale-out guarantees under SIGKILL: a gateway, a worker and an api node are killed at the
worst moment, and every message still arrives, exactly once for the app and at most twice at
the vendor (twice only when the first request got no answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from openmps.fakes.base import Rule
from openmps.fakes.fcm import FakeFCM
from tests.conftest import eventually
from tests.scale_cluster import (
    REDIS_URL,
    App,
    Cluster,
    Inbox,
    cluster_of,
    fcm_device,
    fcm_fake,
    fcm_requests,
    use_fcm,
)
from tests.test_e2e_vendors import FakeHost

# Needs PostgreSQL and Redis: `make test-postgres` (and CI) runs it, `make test` does not.
pytestmark = pytest.mark.scale

VENDOR_DELAY_S = 2.0  # how long the fake vendor takes to answer in the worker test


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with cluster_of(tmp_path) as made:
        yield made


@pytest.fixture
def fcm() -> Iterator[tuple[FakeHost, FakeFCM]]:
    with fcm_fake() as made:
        yield made


# --- a gateway killed while its devices hold unacked messages ---------------------------------


async def test_devices_of_a_killed_gateway_get_their_pending_messages_from_the_other(
    cluster: Cluster,
) -> None:
    api = cluster.node("api-1", "api")
    gw1 = cluster.node("gw-1", "gateway")
    gw2 = cluster.node("gw-2", "gateway")
    sched = cluster.node("sched-1", "scheduler")
    cluster.start(api, gw1, gw2, sched)
    app = App(await cluster.app())

    # Four devices on gw-1 and two on gw-2; none acks by itself, so messages stay pending.
    creds = [await app.register(api) for _ in range(6)]
    inboxes: list[Inbox] = []
    for n, device in enumerate(creds):
        order = [gw1, gw2] if n < 4 else [gw2, gw1]
        client = app.device(order, device, auto_ack=False)
        await client.connect()
        inboxes.append(Inbox(client))
    tokens = [c.delivery_token for c in creds]
    try:
        first = await app.push(api, {t: f"m1-{n}" for n, t in enumerate(tokens)}, title="one")

        async def first_arrived() -> bool:
            return all(len(i.messages) == 1 for i in inboxes)

        await eventually(first_arrived)
        assert await app.statuses(api, first) == [(t, "own", 0, False) for t in tokens]

        gw1.kill()
        # Pushed while gw-1's devices are reconnecting: routed to the dead node (its presence
        # has not expired yet) or to gw-2, stored either way.
        second = await app.push(api, {t: f"m2-{n}" for n, t in enumerate(tokens)}, title="two")

        async def all_arrived() -> bool:
            return all(len(i.messages) == 2 for i in inboxes)

        await eventually(all_arrived, timeout_s=20)
        await asyncio.sleep(1.0)  # anything sent twice would have arrived by now
        for n, inbox in enumerate(inboxes):
            assert inbox.keys() == [f"m1-{n}", f"m2-{n}"]
            await inbox.client.ack(*(m.id for m in inbox.messages))
        assert [i.client.reconnects for i in inboxes] == [1, 1, 1, 1, 0, 0]

        async def all_acked() -> bool:
            rows = [await app.statuses(api, task) for task in (first, second)]
            return rows == [[(t, "own", 2, True) for t in tokens]] * 2

        await eventually(all_acked)
    finally:
        for inbox in inboxes:
            await inbox.close()
    # Every device of gw-1 came back through gw-2, which sent it m1 again (its SDK dropped the
    # copy): the app saw each message once.
    assert [i.keys() for i in inboxes] == [[f"m1-{n}", f"m2-{n}"] for n in range(6)]
    log = (cluster.work / "gw-2.log").read_text()
    assert log.count("device connected: device=") == 6  # its own two, and gw-1's four


# --- a worker killed while its vendor requests wait for an answer -----------------------------


async def test_a_killed_workers_deliveries_are_sent_by_the_survivor_once_more_at_most(
    cluster: Cluster, fcm: tuple[FakeHost, FakeFCM]
) -> None:
    host, fake = fcm
    api = cluster.node("api-1", "api")
    workers = {name: cluster.node(name, "worker") for name in ("worker-1", "worker-2")}
    sched = cluster.node("sched-1", "scheduler")
    cluster.start(api, *workers.values(), sched)
    app = App(await cluster.app())
    await use_fcm(app, api, fake, host)
    tokens = [f"fcm-kill-worker-{n:04d}" for n in range(30)]
    devices = [await fcm_device(app, api, token) for token in tokens]
    # Every answer takes VENDOR_DELAY_S: requests are still waiting when the worker dies.
    fake.scenario.set(Rule(delay_s=VENDOR_DELAY_S))

    tasks = [
        await app.push(api, {d: f"w-{at + n}" for n, d in enumerate(devices[at : at + 5])})
        for at in range(0, 30, 5)
    ]

    async def some_sent() -> bool:
        return len(fake.send_requests) >= 4

    await eventually(some_sent)
    held = await cluster.sql(
        "SELECT claimed_by, count(*) FROM deliveries WHERE NOT final AND claimed_by IS NOT NULL "
        "GROUP BY claimed_by ORDER BY count(*) DESC"
    )
    victim = workers[held[0][0]]
    victim.kill()
    killed_at = time.time()
    survivor = next(w for w in workers.values() if w is not victim)

    async def all_final() -> bool:
        rows = await cluster.sql("SELECT count(*) FROM deliveries WHERE NOT final")
        return int(rows[0][0]) == 0

    await eventually(all_final, timeout_s=40)
    for task in tasks:
        rows = await app.statuses(api, task)
        assert [row[1:] for row in rows] == [("fcm", 2, True)] * 5
    await asyncio.sleep(VENDOR_DELAY_S + 1)  # a late extra request would have arrived by now

    # Who sent what: each worker process got its own OAuth token from the fake.
    sends = [item for item in fake.send_requests if isinstance(item.body, dict)]
    after = {item.headers["authorization"] for item in sends if item.at > killed_at}
    before = {item.headers["authorization"] for item in sends if item.at <= killed_at}
    assert len(after) == 1  # the survivor only
    by_victim = [item for item in sends if item.headers["authorization"] not in after]
    assert by_victim, "the victim had sent nothing when it was killed"
    assert before >= {by_victim[0].headers["authorization"]}
    # None of the victim's requests had been answered when it died...
    assert all(item.at + VENDOR_DELAY_S > killed_at for item in by_victim)
    # ...so exactly those messages went out twice, with the same content; all others once.
    victim_tokens = {item.body["message"]["token"] for item in by_victim}
    counts = Counter(item.body["message"]["token"] for item in sends)
    assert counts == {t: 2 if t in victim_tokens else 1 for t in tokens}
    for token in victim_tokens:
        first, again = fcm_requests(fake, token)
        assert first["notification"] == again["notification"]
    assert "worker stopped" not in (cluster.work / f"{victim.name}.log").read_text()
    assert "dispatch stream: reclaimed" in (cluster.work / f"{survivor.name}.log").read_text()


async def test_a_stopped_worker_finishes_what_it_sends_and_hands_back_the_rest(
    cluster: Cluster, fcm: tuple[FakeHost, FakeFCM]
) -> None:
    """SIGTERM, not SIGKILL: no vendor request is lost or made twice."""
    host, fake = fcm
    api = cluster.node("api-1", "api")
    one_at_a_time = {"OPENMPS_VENDOR_CONCURRENCY": "1", "OPENMPS_DRAIN_TIMEOUT_S": "0.5"}
    workers = {
        name: cluster.node(name, "worker", **one_at_a_time) for name in ("worker-1", "worker-2")
    }
    sched = cluster.node("sched-1", "scheduler")
    cluster.start(api, *workers.values(), sched)
    app = App(await cluster.app())
    await use_fcm(app, api, fake, host)
    tokens = [f"fcm-stop-worker-{n:04d}" for n in range(40)]
    devices = [await fcm_device(app, api, token) for token in tokens]
    fake.scenario.set(Rule(delay_s=VENDOR_DELAY_S))

    tasks = [await app.push(api, {d: f"s-{n}" for n, d in enumerate(devices[:10])})]

    async def sending() -> bool:
        return len(fake.send_requests) >= 1

    await eventually(sending)
    # More while each worker has a batch on the wire: these queue behind it.
    tasks += [
        await app.push(api, {d: f"s-{at + n}" for n, d in enumerate(devices[at : at + 5])})
        for at in range(10, 40, 5)
    ]
    await asyncio.sleep(0.5)
    claimed = await cluster.sql(
        "SELECT d.claimed_by, v.third_token FROM deliveries d JOIN devices v ON v.id = d.device_pk "
        "WHERE NOT d.final AND d.claimed_by IS NOT NULL"
    )
    seen = {item.body["message"]["token"] for item in fake.send_requests}
    unsent: dict[str, int] = Counter(node for node, token in claimed if token not in seen)
    stopping = workers[max(unsent, key=lambda node: unsent[node])]
    assert unsent[stopping.name] > 0
    assert await asyncio.to_thread(stopping.stop) == 0

    async def all_final() -> bool:
        rows = await cluster.sql("SELECT count(*) FROM deliveries WHERE NOT final")
        return int(rows[0][0]) == 0

    await eventually(all_final, timeout_s=40)
    for task in tasks:
        assert {row[1:] for row in await app.statuses(api, task)} == {("fcm", 2, True)}
    await asyncio.sleep(VENDOR_DELAY_S + 1)
    counts = Counter(item.body["message"]["token"] for item in fake.send_requests)
    assert counts == dict.fromkeys(tokens, 1)
    log = (cluster.work / f"{stopping.name}.log").read_text()
    [line] = [line for line in log.splitlines() if "worker stopped:" in line]
    handed = int(line.split("handed_back=")[1].split()[0])
    assert handed > 0
    assert f"released={handed} republished={handed} left_for_recovery=0" in line


# --- an api node killed after it answered, and between its commit and its publish ---------


class FreezableProxy:
    """A TCP relay to Redis that can stop passing bytes (the node's Redis calls then hang)."""

    def __init__(self, port: int) -> None:
        self._port = port  # Redis's port
        self.frozen = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()  # both ends of every relayed link

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        self.frozen = False
        for writer in self._writers:
            writer.transport.abort()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._port)
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    while self.frozen:
                        await asyncio.sleep(0.05)
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}


async def test_pushes_survive_an_api_node_killed_after_answering_or_before_publishing(
    cluster: Cluster, fcm: tuple[FakeHost, FakeFCM]
) -> None:
    host, fake = fcm
    proxy = FreezableProxy(int(REDIS_URL.rsplit(":", 1)[1].split("/")[0]))
    proxy_port = host.run(proxy.start())
    api1 = cluster.node("api-1", "api")
    api2 = cluster.node("api-2", "api")
    api3 = cluster.node("api-3", "api", OPENMPS_REDIS_URL=f"redis://127.0.0.1:{proxy_port}/0")
    gw = cluster.node("gw-1", "gateway")
    worker = cluster.node("worker-1", "worker")
    sched = cluster.node("sched-1", "scheduler")
    cluster.start(api1, api2, api3, gw, worker, sched)
    app = App(await cluster.app())
    await use_fcm(app, api2, fake, host)
    vendor_token = "fcm-kill-api-0001"
    vendor_device = await fcm_device(app, api2, vendor_token)
    # vendor_first: routing asks presence nothing, so api-3 commits before it waits on Redis.
    routing = await app.rest(api2, "PUT", "/v1/routing", {"policy": "vendor_first"})
    assert routing.status_code == 200, routing.text
    own = await app.register(api2)
    inbox = Inbox(app.device([gw], own))
    await inbox.client.connect()
    targets = {own.delivery_token: "k-answered", vendor_device: "k-answered"}
    try:
        # 1. Killed right after its answer: the push was handed on before the answer.
        answered = await app.push(api1, targets, title="answered")
        api1.kill()

        async def answered_done() -> bool:
            return sorted(await app.statuses(api2, answered)) == sorted(
                [(own.delivery_token, "own", 2, True), (vendor_device, "fcm", 2, True)]
            )

        await eventually(answered_done, timeout_s=20)

        # 2. Killed between its commit and its hand-off: Redis stops answering api-3, so the
        # push is stored and then waits on Redis; api-3 is killed there, and never answers.
        proxy.frozen = True
        body = {
            "delivery_type": 1,
            "targets": {own.delivery_token: "k-lost", vendor_device: "k-lost"},
            "expired_seconds": 600,
            "title": "lost",
            "content": "stored, never handed on",
        }
        request = asyncio.create_task(app.rest(api3, "POST", "/v1/pushes", body))

        async def stored() -> bool:
            rows = await cluster.sql(
                "SELECT count(*) FROM deliveries d JOIN messages m ON m.id = d.message_pk "
                "WHERE m.msg_key = 'k-lost'"
            )
            return int(rows[0][0]) == 2

        await eventually(stored)
        api3.kill()
        with pytest.raises(httpx.TransportError):
            await request
        stored_at = time.monotonic()
        lost_task = await cluster.sql(
            "SELECT DISTINCT m.task_pk FROM messages m WHERE m.msg_key = 'k-lost'"
        )

        async def lost_done() -> bool:
            return sorted(await app.statuses(api2, str(lost_task[0][0]))) == sorted(
                [(own.delivery_token, "own", 2, True), (vendor_device, "fcm", 2, True)]
            )

        await eventually(lost_done, timeout_s=30)
        # The recovery sweep found it once it had been quiet for recovery_after_s (3 s).
        assert time.monotonic() - stored_at > 1.0
        await asyncio.sleep(1.0)
    finally:
        await inbox.close()
        host.run(proxy.stop())

    assert inbox.keys() == ["k-answered", "k-lost"]
    sent = [m["notification"]["title"] for m in fcm_requests(fake, vendor_token)]
    assert sent == ["answered", "lost"]
    log = (cluster.work / "sched-1.log").read_text()
    assert "recovery: 1 vendor deliveries had made no progress" in log
    assert "recovery: 1 own-channel deliveries of online devices were never written" in log
