"""The scale-out guarantees under SIGKILL at random points: while pushes flow without pause, a
seeded random schedule SIGKILLs gateway, worker and api nodes and starts them again (the same
node id, a new process). Afterwards, exactly:

- every accepted push has one final status per target: 2 (acked, or sent to the vendor);
- a push whose API call got no answer is either stored and then delivered like an accepted one,
  or not stored and seen by nobody;
- own channel: each device's SDK handed each of its messages to the app once, none missing;
- vendor: the fake FCM got each message for each token at least once, and again only when the
  process that had sent it was SIGKILLed before it could write the outcome (no answer yet, or
  one that came at most ``WRITE_SLACK_S`` before the kill: docs/scale-out.md's "no answer
  written"), or, the one caveat the document names, when that process's node stalled until
  its heartbeat ran out (the test follows every node's heartbeat to tell; such resends are
  listed in the summary line); and in the store every vendor delivery counts one attempt, so
  no send was made once an outcome had been written.

The seed is printed and named in every failure; ``OPENMPS_KILL_SEED=<seed>`` replays a run's
schedule (which node dies, when, for how long; which devices each push targets; timing inside
the processes is not replayable). ``OPENMPS_KILL_ROUNDS`` sets the number of kill rounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import os
import random
import statistics
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest
from alibabacloud_mpaas20201028 import models
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openmps.cluster.redis import connect
from openmps.fakes.base import Rule, UvicornRunner
from openmps.fakes.fcm import FakeFCM
from tests.conftest import eventually
from tests.scale_cluster import (
    FAST,
    REDIS_URL,
    App,
    Cluster,
    Inbox,
    Node,
    cluster_of,
    fcm_device,
    use_fcm,
)
from tests.test_e2e_vendors import FakeHost

# Needs PostgreSQL and Redis: `make test-postgres` (and CI) runs it, `make test` does not.
pytestmark = pytest.mark.scale

SEED_ENV = "OPENMPS_KILL_SEED"
ROUNDS = int(os.environ.get("OPENMPS_KILL_ROUNDS", "10"))
OWN_DEVICES = 6  # own-channel devices, half first on gw-1, half first on gw-2
FCM_DEVICES = 4  # vendor devices (the fake FCM)
VENDOR_DELAY_S = 0.4  # the fake's answer time: a killed worker has requests on the wire
PUSH_GAP_S = (0.08, 0.35)  # pause between two pushes
KILL_GAP_S = (0.5, 3.0)  # quiet time before a round's kill
DOWN_S = (0.1, 1.5)  # how long a killed node stays dead
IN_CALL_S = (0.0, 0.08)  # an api node is killed this long after a push call to it began
WRITE_SLACK_S = 1.0  # an answer this long before its sender's kill may be unwritten yet
SETTLE_TIMEOUT_S = 45.0
PRESENCE_TTL_S = float(FAST["OPENMPS_PRESENCE_TTL_S"])  # a node is live this long after a beat


def kill_seed() -> int:
    given = os.environ.get(SEED_ENV)
    return int(given) if given else random.SystemRandom().randrange(2**32)


# --- the fake FCM, and what it can tell about each request -------------------------------------


@dataclass
class SendRecord:
    """One messages:send request the fake got: who sent it and when it was answered."""

    auth: str
    token: str
    title: str
    at: float  # when the fake got it (time.time())
    pid: int | None = None  # the sending process, from its TCP peer (None: already gone)
    answered_at: float | None = None  # when the fake's answer was written (None: never)


class SendLog:
    """An ASGI layer in front of the fake FCM: for every send request, the process that made
    it (found through /proc from the peer's port, among the registered worker processes) and
    when the answer was handed to the connection. The fake itself records arrivals only."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self._lock = threading.Lock()
        self.names: dict[int, str] = {}  # worker processes that may send: pid -> node id
        self._by_peer: dict[tuple[int, str], int] = {}  # (peer port, auth) -> pid
        self.records: list[SendRecord] = []
        self.port = 0  # the fake's port, once it listens

    def sender(self, pid: int, name: str) -> None:
        with self._lock:
            self.names[pid] = name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].endswith(":send"):
            await self._app(scope, receive, send)
            return
        body = bytearray()
        record: SendRecord | None = None

        async def tapped_receive() -> Message:
            nonlocal record
            message = await receive()
            if message["type"] == "http.request":
                body.extend(message.get("body", b""))
                if not message.get("more_body") and record is None:
                    record = self._arrived(scope, bytes(body))
            return message

        async def tapped_send(message: Message) -> None:
            await send(message)
            done = message["type"] == "http.response.body" and not message.get("more_body")
            if done and record is not None:
                record.answered_at = time.time()

        await self._app(scope, tapped_receive, tapped_send)

    def _arrived(self, scope: Scope, body: bytes) -> SendRecord:
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        message = json.loads(body)["message"]
        record = SendRecord(
            headers.get("authorization", ""),
            message["token"],
            message["notification"]["title"],
            time.time(),
        )
        client = scope.get("client")
        if client is not None:
            record.pid = self._pid_of(int(client[1]), record.auth)
        with self._lock:
            self.records.append(record)
        return record

    def _pid_of(self, peer_port: int, auth: str) -> int | None:
        key = (peer_port, auth)
        if key in self._by_peer:
            return self._by_peer[key]
        inodes = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(OSError):
                for line in Path(table).read_text().splitlines()[1:]:
                    fields = line.split()
                    local, remote = fields[1], fields[2]
                    if (
                        int(local.rsplit(":", 1)[1], 16) == peer_port
                        and int(remote.rsplit(":", 1)[1], 16) == self.port
                    ):
                        inodes.add(f"socket:[{fields[9]}]")
        with self._lock:
            pids = sorted(self.names)
        for pid in pids:
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
                links = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in fds}
            except OSError:
                continue  # gone (killed) or unreadable
            if links & inodes:
                self._by_peer[key] = pid
                return pid
        return None


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with cluster_of(tmp_path) as made:
        yield made


@pytest.fixture
def fcm() -> Iterator[tuple[FakeHost, FakeFCM, SendLog]]:
    """A fake FCM in a thread of its own (as ``fcm_fake``), its requests seen by a SendLog."""
    host = FakeHost()
    fake = FakeFCM()
    log = SendLog(fake.app)
    fake.runner = UvicornRunner(log, "FCM", graceful_shutdown_s=2)
    log.port = host.run(fake.start())
    try:
        yield host, fake, log
    finally:
        host.run(fake.stop())
        host.close()


# --- the traffic and the kills ---------------------------------------------------------------


@dataclass
class Push:
    seq: int
    title: str
    targets: dict[str, str]  # delivery token -> msg key
    api: str
    task_id: str | None = None  # answered OK
    error: str | None = None  # answered with an error, or not answered (the exception)
    answered: bool = False
    took_s: float = 0.0  # the API call


@dataclass
class Kill:
    node: str
    pid: int
    at: float  # time.time() right before the signal
    down_s: float
    restart_s: float = 0.0  # from launch to the ready line
    ready_at: float = 0.0  # time.time() of the ready line (0: not ready yet)


@dataclass
class Run:
    """What happened: the pushes made, the nodes killed."""

    seed: int
    pushes: list[Push] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    # (node, from, to): times (time.time()) when a node's heartbeat had run out (see
    # watch_beats); to is None while it still had not come back
    lapses: list[tuple[str, float, float | None]] = field(default_factory=list)

    def stalls(self, grace_s: float = 0.5) -> list[tuple[str, float, float | None]]:
        """The lapses of processes that were running and ready: not killed, not starting (a
        killed node's beat runs out, and its new process beats again before it is ready)."""

        def dead(node: str, at: float) -> bool:
            return any(
                k.node == node and k.at <= at <= (k.ready_at or math.inf) + grace_s
                for k in self.kills
            )

        return [
            (node, since, until)
            for node, since, until in self.lapses
            if not (dead(node, since) and until is not None and dead(node, until))
        ]

    def where(self) -> str:
        kills = ", ".join(
            f"{k.node} (pid {k.pid}) at {k.at:.2f}, {k.down_s:.1f}+{k.restart_s:.1f} s"
            for k in self.kills
        )
        return f"seed={self.seed} (replay with {SEED_ENV}={self.seed}); kills: {kills}"


async def push_stream(
    app: App,
    apis: list[Node],
    tokens: list[str],
    rng: random.Random,
    run: Run,
    stop: asyncio.Event,
    calling: dict[str, asyncio.Event],
) -> None:
    """Pushes to random subsets of the devices through the live api nodes, until ``stop``;
    ``calling[api]`` is set while a call to that node is under way."""
    seq = 0
    while not stop.is_set():
        seq += 1
        chosen = sorted(rng.sample(range(len(tokens)), rng.randint(1, len(tokens))))
        gap = rng.uniform(*PUSH_GAP_S)
        if not apis:  # never both down; kept for safety
            await asyncio.sleep(gap)
            continue
        api = apis[seq % len(apis)]
        push = Push(seq, f"p{seq}", {tokens[i]: f"p{seq}-d{i}" for i in chosen}, api.name)
        run.pushes.append(push)
        called = time.monotonic()
        calling[api.name].set()
        try:
            response = await app.sdk(api).push_simple_async(
                models.PushSimpleRequest(
                    app_id=app.creds.app_id,
                    workspace_id=app.creds.workspace_id,
                    delivery_type=1,
                    expired_seconds=600,
                    title=push.title,
                    content="from a randomly killed openmps",
                    target_msgkey=json.dumps(push.targets),
                )
            )
        except Exception as exc:  # the api node died under the call: no answer
            push.error = f"{type(exc).__name__}: {exc}"[:300]
        else:
            push.answered = True
            if response.body.result_code == "OK":
                push.task_id = str(response.body.push_result.data)
            else:
                push.error = json.dumps(response.body.to_map())[:300]
        finally:
            calling[api.name].clear()
            push.took_s = time.monotonic() - called
        await asyncio.sleep(gap)


async def watch_beats(prefix: str, run: Run, nodes: list[str], stop: asyncio.Event) -> None:
    """Follows the live node set (every node beats every presence_ttl_s / 3, 1 s, and is live
    for presence_ttl_s after its beat) every 0.1 s, by the Redis server's clock: a new beat
    later than the previous one's end, or a beat found over, is a lapse (``run.lapses``)."""
    client = await connect(REDIS_URL)
    ends: dict[str, float] = {}  # node -> when its last beat seen runs out
    open_since: dict[str, float] = {}  # node -> start of a lapse not over yet
    try:
        while not stop.is_set():
            now_s, now_us = await client.time()
            now = now_s + now_us / 1e6
            rows = await client.zrange(f"{prefix}:presence:nodes", 0, -1, withscores=True)
            scores = {
                member.decode() if isinstance(member, bytes) else str(member): float(score)
                for member, score in cast(list[tuple[bytes | str, float]], rows)
            }
            for node in nodes:
                end = scores.get(node)
                last = ends.get(node)
                if end is not None and last is not None and end > last:
                    beat = end - PRESENCE_TTL_S
                    if node in open_since:
                        run.lapses.append((node, open_since.pop(node), beat))
                    elif beat > last:
                        run.lapses.append((node, last, beat))
                if end is not None:
                    ends[node] = max(end, last or end)
                if last is not None and now > ends[node] and node not in open_since:
                    open_since[node] = ends[node]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)
    finally:
        run.lapses += [(node, since, None) for node, since in open_since.items()]
        await client.aclose()


class Killer:
    """SIGKILLs nodes and starts them again (same node id and ports, a new process)."""

    def __init__(
        self,
        nodes: list[Node],
        run: Run,
        log: SendLog,
        apis: list[Node],
        calling: dict[str, asyncio.Event],
    ) -> None:
        self._calling = calling  # set while a push call to that api node is under way
        self._run = run
        self._log = log
        self._apis = apis  # api nodes the pushes may use: ready, and not about to die
        self._up = {node.name: asyncio.Event() for node in nodes}  # set while ready
        for event in self._up.values():
            event.set()
        self.failed: BaseException | None = None  # a kill or restart that went wrong

    async def up(self, *nodes: Node) -> None:
        for node in nodes:
            await self._up[node.name].wait()
            if self.failed is not None:
                raise self.failed

    async def kill_and_restart(
        self, node: Node, offset_s: float, in_call_s: float, down_s: float
    ) -> None:
        try:
            await self._kill_and_restart(node, offset_s, in_call_s, down_s)
        except BaseException as exc:
            self.failed = exc
            raise
        finally:
            self._up[node.name].set()

    async def _kill_and_restart(
        self, node: Node, offset_s: float, in_call_s: float, down_s: float
    ) -> None:
        await asyncio.sleep(offset_s)
        if node.name in self._calling:  # an api node dies in the middle of a push call
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._calling[node.name].wait(), 5.0)
            await asyncio.sleep(in_call_s)
        assert node.process is not None
        if node in self._apis:
            self._apis.remove(node)  # no new calls; the ones under way lose their answer
        kill = Kill(node.name, node.process.pid, time.time(), down_s)
        self._run.kills.append(kill)
        node.kill()
        await asyncio.sleep(down_s)
        launched = time.monotonic()
        node.launch()
        if node.roles == "worker":
            assert node.process is not None
            self._log.sender(node.process.pid, node.name)
        await asyncio.to_thread(node.wait_ready)
        kill.restart_s = time.monotonic() - launched
        kill.ready_at = time.time()
        if node.roles == "api":
            self._apis.append(node)

    async def rounds(self, by_role: dict[str, list[Node]], rng: random.Random) -> None:
        """ROUNDS rounds: a random pause, then a random node (sometimes also one of another
        role) SIGKILLed after a random offset, left dead for a random time and started again
        in the background, so that later kills may land while it starts. Every role is hit;
        a victim still starting is waited for, and an api node is killed only while the other
        one is up. The draws do not depend on timing: a seed always gives the same schedule."""
        deck = ["gateway", "worker"] * ((ROUNDS + 2) // 3) + ["api"] * max(1, ROUNDS // 4)
        rng.shuffle(deck)
        restarts: list[asyncio.Task[None]] = []
        for role in deck[:ROUNDS]:
            gap = rng.uniform(*KILL_GAP_S)
            victims = [rng.choice(by_role[role])]
            if rng.random() < 0.3 and role != "api":  # a gateway and a worker together
                victims.append(rng.choice(by_role["worker" if role == "gateway" else "gateway"]))
            plans = [
                (victim, rng.uniform(0, 0.5), rng.uniform(*IN_CALL_S), rng.uniform(*DOWN_S))
                for victim in victims
            ]
            await asyncio.sleep(gap)
            await self.up(*victims, *(by_role["api"] if role == "api" else ()))
            for victim in victims:
                self._up[victim.name].clear()  # a later round waits for its restart
            restarts += [asyncio.create_task(self.kill_and_restart(*plan)) for plan in plans]
        await asyncio.gather(*restarts)


# --- the test ----------------------------------------------------------------------------------


@pytest.mark.timeout(240)  # about a minute; a starved shared machine can double that
async def test_random_sigkills_lose_nothing_and_duplicate_only_unanswered_vendor_sends(
    cluster: Cluster, fcm: tuple[FakeHost, FakeFCM, SendLog]
) -> None:
    seed = kill_seed()
    print(f"\nrandom kills: {SEED_ENV}={seed}")
    run = Run(seed)
    try:
        await _random_kills(cluster, fcm, run)
    except BaseException as exc:
        exc.add_note(f"random kills: {run.where()}; node logs in {cluster.work}")
        raise


async def _random_kills(cluster: Cluster, fcm: tuple[FakeHost, FakeFCM, SendLog], run: Run) -> None:
    host, fake, log = fcm
    rng = random.Random(run.seed)
    traffic = random.Random(rng.getrandbits(64))
    where = run.where

    api1, api2 = cluster.node("api-1", "api"), cluster.node("api-2", "api")
    gw1, gw2 = cluster.node("gw-1", "gateway"), cluster.node("gw-2", "gateway")
    workers = [cluster.node(f"worker-{n}", "worker") for n in (1, 2)]
    sched = cluster.node("sched-1", "scheduler")
    began = time.monotonic()
    cluster.start(api1, api2, gw1, gw2, *workers, sched)
    for worker in workers:
        assert worker.process is not None
        log.sender(worker.process.pid, worker.name)
    app = App(await cluster.app())
    await use_fcm(app, api1, fake, host)
    fake.scenario.set(Rule(delay_s=VENDOR_DELAY_S))

    own = [await app.register(api1 if n % 2 else api2) for n in range(OWN_DEVICES)]
    fcm_tokens = [f"fcm-random-kill-{n:02d}" for n in range(FCM_DEVICES)]
    vendor = [await fcm_device(app, api1, token) for token in fcm_tokens]
    tokens = [c.delivery_token for c in own] + vendor
    kind = dict.fromkeys(tokens[:OWN_DEVICES], "own") | dict.fromkeys(vendor, "fcm")
    fcm_token_of = dict(zip(vendor, fcm_tokens, strict=True))
    inboxes: dict[str, Inbox] = {}
    for n, creds in enumerate(own):
        order = [gw1, gw2] if n % 2 == 0 else [gw2, gw1]
        client = app.device(order, creds, auto_ack=True)
        await client.connect()
        inboxes[creds.delivery_token] = Inbox(client)

    setup_s = time.monotonic() - began
    apis = [api1, api2]
    stop = asyncio.Event()
    calling = {api.name: asyncio.Event() for api in apis}
    pushing = asyncio.create_task(push_stream(app, apis, tokens, traffic, run, stop, calling))
    watched = asyncio.Event()
    watching = asyncio.create_task(watch_beats(cluster.prefix, run, list(cluster.nodes), watched))
    started = time.monotonic()
    killer = Killer(list(cluster.nodes.values()), run, log, apis, calling)
    try:
        await killer.rounds({"api": [api1, api2], "gateway": [gw1, gw2], "worker": workers}, rng)
        await asyncio.sleep(1.0)  # the last restarted node gets some traffic too
        stop.set()
        await pushing
        chaos_s = time.monotonic() - started
        for node in cluster.nodes.values():
            assert node.alive, f"{node.name} died by itself; {where()}"

        async def settled() -> bool:
            rows = await cluster.sql("SELECT count(*) FROM deliveries WHERE NOT final")
            return int(rows[0][0]) == 0

        await eventually(settled, timeout_s=SETTLE_TIMEOUT_S, every_s=0.5)
        settle_s = time.monotonic() - started - chaos_s
        await asyncio.sleep(VENDOR_DELAY_S + 1.0)  # anything sent again would be here by now
        for token, inbox in inboxes.items():
            assert not inbox._task.done(), (  # a permanent close ended the SDK's iteration
                f"device {token}: {inbox._task.exception()!r}; {where()}"
            )
    finally:
        stop.set()
        watched.set()
        if not pushing.done():
            pushing.cancel()
        await watching
        for inbox in inboxes.values():
            with contextlib.suppress(Exception):
                await inbox.close()

    # Which pushes count: answered OK; or not answered, then stored whole (or not at all).
    accepted = [p for p in run.pushes if p.task_id is not None]
    unsure = [p for p in run.pushes if p.task_id is None]
    keys = [k for p in unsure for k in p.targets.values()]
    stored = await cluster.sql(
        "SELECT m.msg_key, m.task_pk FROM messages m WHERE m.msg_key = ANY($1::text[])", keys
    )
    task_of = {row[0]: str(row[1]) for row in stored}
    never: list[Push] = []
    for push in unsure:
        found = {task_of[k] for k in push.targets.values() if k in task_of}
        some = [k for k in push.targets.values() if k in task_of]
        assert push.answered is False, f"push {push.seq} refused: {push.error}; {where()}"
        assert not some or len(some) == len(push.targets), (
            f"push {push.seq} stored in part: {some} of {push.targets}; {where()}"
        )
        if found:
            assert len(found) == 1, f"push {push.seq} stored as tasks {found}; {where()}"
            push.task_id = found.pop()
            accepted.append(push)
        else:
            never.append(push)
    accepted.sort(key=lambda p: p.seq)

    # Every accepted push: one final status per target, all 2 (the store, then the API's view
    # of the pushes that lost their answer and of a random sample).
    rows = await cluster.sql(
        "SELECT m.task_pk, v.delivery_token, d.route, d.code, d.final FROM deliveries d "
        "JOIN messages m ON m.id = d.message_pk LEFT JOIN devices v ON v.id = d.device_pk"
    )
    by_task: dict[str, list[tuple[str | None, str, int, bool]]] = {}
    for task_pk, token, route, code, final in rows:
        by_task.setdefault(str(task_pk), []).append((token, route, code, final))
    expected = {str(p.task_id): sorted((t, kind[t], 2, True) for t in p.targets) for p in accepted}
    wrong = {
        task: (sorted(by_task.get(task, [])), expected.get(task))
        for task in sorted(set(by_task) | set(expected))
        if sorted(by_task.get(task, [])) != expected.get(task)
    }
    assert not wrong, (
        f"tasks whose deliveries are not as expected (found, expected): {wrong}; {where()}"
    )
    answered = [p for p in accepted if p.answered]
    sample = [p for p in accepted if not p.answered]
    sample += random.Random(run.seed).sample(answered, min(12, len(answered)))
    statuses = await asyncio.gather(*(app.statuses(api1, str(p.task_id)) for p in sample))
    for push, api_rows in zip(sample, statuses, strict=True):
        assert sorted(api_rows) == expected[str(push.task_id)], f"push {push.seq}; {where()}"

    # Own channel: each message handed to the app once, none missing, nothing else.
    for token, inbox in inboxes.items():
        expected_keys = sorted(p.targets[token] for p in accepted if token in p.targets)
        got = inbox.keys()
        twice = sorted(k for k, n in Counter(got).items() if n > 1)
        assert not twice, f"device {token} got {twice} twice; {where()}"
        if sorted(got) != expected_keys:
            missing = sorted(set(expected_keys) - set(got))
            state = await cluster.sql(
                "SELECT m.msg_key, d.id, d.code, d.final, d.sent_at, d.acked_at FROM deliveries d "
                "JOIN messages m ON m.id = d.message_pk WHERE m.msg_key = ANY($1::text[])",
                missing,
            )
            raise AssertionError(
                f"device {token}: missing {missing} (in the store: {[tuple(r) for r in state]}), "
                f"unexpected {sorted(set(got) - set(expected_keys))}; {where()}"
            )
        assert len({m.id for m in inbox.messages}) == len(got), where()

    # Vendor: what the fake saw, per (registration token, push title).
    seen = Counter(
        (item.body["message"]["token"], item.body["message"]["notification"]["title"])
        for item in fake.send_requests
        if isinstance(item.body, dict)
    )
    wanted = {(fcm_token_of[t], p.title) for p in accepted for t in p.targets if t in vendor}
    assert set(seen) == wanted, (
        f"never sent: {sorted(wanted - set(seen))}; sent but not accepted: "
        f"{sorted(set(seen) - wanted)}; {where()}"
    )
    records = list(log.records)
    assert Counter((r.token, r.title) for r in records) == seen, where()
    resends = _check_resends(records, run, dict(log.names))
    # The store's side of "no answer written": each send increments the attempts a worker
    # loaded with the delivery, so 1 means no send was made after an outcome was written.
    again = await cluster.sql(
        "SELECT m.msg_key, d.attempts FROM deliveries d JOIN messages m ON m.id = d.message_pk "
        "WHERE d.route <> 'own' AND d.attempts <> 1"
    )
    assert not again, f"sent again after an outcome was written: {again}; {where()}"

    summary = {
        "seed": run.seed,
        "rounds": ROUNDS,
        "kills": dict(sorted(Counter(k.node for k in run.kills).items())),
        "restart_s": [round(k.restart_s, 1) for k in run.kills],
        "device_reconnects": sum(i.client.reconnects for i in inboxes.values()),
        "pushes": len(run.pushes),
        "push_call_median_s": round(statistics.median(p.took_s for p in run.pushes), 3),
        "accepted": len(accepted),
        "unanswered_but_stored": sum(1 for p in accepted if not p.answered),
        "unanswered_never_stored": len(never),
        "vendor_requests": len(records),
        "sender_by_token": resends.by_token,
        "sender_unknown": sum(r.pid is None for r in records),
        "cut_off_by_kill": _cut_off(records, run),
        "vendor_resends": resends.count,
        "answered_then_killed_gaps_s": [round(g, 3) for g in resends.gaps],
        "resends_after_a_stall": resends.stalled,
        "stalls": [(n, round(a, 2), b and round(b, 2)) for n, a, b in run.stalls()],
        "setup_s": round(setup_s, 1),
        "chaos_s": round(chaos_s, 1),
        "settle_s": round(settle_s, 1),
        "checks_s": round(time.monotonic() - started - chaos_s - settle_s, 1),
    }
    print(f"random kills: {json.dumps(summary)}")


def _cut_off(records: list[SendRecord], run: Run) -> int:
    """How many vendor requests had no answer yet when their sender was killed."""
    killed_at = {k.pid: k.at for k in run.kills}
    return sum(
        1
        for r in records
        if r.pid in killed_at and (r.answered_at is None or r.answered_at >= killed_at[r.pid])
    )


@dataclass
class Resends:
    """What _check_resends found."""

    count: int = 0  # sends of a (token, title) after its first
    gaps: list[float] = field(default_factory=list)  # answer to kill, for answered ones
    stalled: list[str] = field(default_factory=list)  # resends after a live sender's lapse
    by_token: int = 0  # requests whose sender was known by its OAuth token only (gone at once)


def _check_resends(records: list[SendRecord], run: Run, names: dict[int, str]) -> Resends:
    """Each send of a (token, title) but its last must come from a process SIGKILLed after
    sending it, with no answer yet or one at most WRITE_SLACK_S old, and the next send must
    come after that kill. The one other resend docs/scale-out.md allows: the sender's node
    stalled so long that its heartbeat ran out (a lapse, see watch_beats) between the two."""
    where = run.where
    found = Resends()
    pid_of_auth: dict[str, set[int]] = {}
    for r in records:
        if r.pid is not None:
            pid_of_auth.setdefault(r.auth, set()).add(r.pid)
    for auth, pids in pid_of_auth.items():
        assert len(pids) == 1, f"one OAuth token used by processes {pids} ({auth}); {where()}"
    for r in records:  # each process has a token of its own: a sender gone too soon is known
        if r.pid is None and r.auth in pid_of_auth:
            [r.pid] = pid_of_auth[r.auth]
            found.by_token += 1
    killed_at = {k.pid: k.at for k in run.kills}
    stalls = run.stalls()
    by_key: dict[tuple[str, str], list[SendRecord]] = {}
    for r in records:
        by_key.setdefault((r.token, r.title), []).append(r)
    for key, sends in by_key.items():
        sends.sort(key=lambda r: r.at)
        for first, again in itertools.pairwise(sends):
            found.count += 1
            pid = first.pid
            node = names.get(pid or 0, "?")
            lapsed = [
                (n, since, until)
                for n, since, until in stalls
                if n == node and since <= again.at and (until is None or until >= first.at)
            ]
            wrong = _why_not_allowed(first, again, pid, killed_at)
            what = (
                f"{key} sent at {first.at:.3f} by {node} pid {pid}, answered at "
                f"{first.answered_at}, again at {again.at:.3f} by pid {again.pid}; every send: "
                + ", ".join(
                    f"{names.get(r.pid or 0, '?')} pid {r.pid} at {r.at:.3f} answered "
                    f"{r.answered_at and round(r.answered_at, 3)}"
                    for r in sends
                )
                + f"; lapses of its node: {lapsed}; {where()}"
            )
            if wrong is not None and lapsed:
                found.stalled.append(what)  # the documented stall: allowed, and reported
                continue
            assert wrong is None, f"{wrong}: {what}"
            kill = killed_at[pid or 0]
            if first.answered_at is not None and first.answered_at < kill:
                found.gaps.append(kill - first.answered_at)
    found.gaps.sort()
    return found


def _why_not_allowed(
    first: SendRecord, again: SendRecord, pid: int | None, killed_at: dict[int, float]
) -> str | None:
    """Why ``again`` is not a resend after ``first``'s sender died unanswered; None if it is."""
    if pid is None:
        return "cannot tell who sent it first"
    if pid not in killed_at:
        return "sent twice, and the first sender was not killed"
    kill = killed_at[pid]
    if kill < first.at - 1.0:
        return "sent after its sender's kill?"
    if again.at < kill:
        return "sent again before the first sender died"
    if first.answered_at is not None and kill - first.answered_at > WRITE_SLACK_S:
        return f"sent again although answered {kill - first.answered_at:.3f} s before the kill"
    return None
