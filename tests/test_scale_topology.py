"""The scaled-out topology end to end: 2 api, 2 gateway, 2 worker and 1 scheduler processes on
one PostgreSQL database and one Redis; pushes through both api nodes reach devices on both
gateways, and a vendor device gets its messages through a worker, each exactly once.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from alibabacloud_mpaas20201028 import models
from alibabacloud_tea_openapi.utils import Utils

from openmps.fakes.fcm import FakeFCM
from tests.conftest import eventually, free_port
from tests.scale_cluster import (
    App,
    Cluster,
    Inbox,
    cluster_of,
    fcm_device,
    fcm_fake,
    fcm_requests,
    use_fcm,
)
from tests.test_e2e_errors import client_error
from tests.test_e2e_vendors import FakeHost

# Needs PostgreSQL and Redis: `make test-postgres` (and CI) runs it, `make test` does not.
pytestmark = pytest.mark.scale


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with cluster_of(tmp_path) as made:
        yield made


@pytest.fixture(scope="module")
def fcm() -> Iterator[tuple[FakeHost, FakeFCM]]:
    with fcm_fake() as made:
        yield made


async def test_pushes_through_both_api_nodes_reach_devices_on_both_gateways(
    cluster: Cluster, fcm: tuple[FakeHost, FakeFCM]
) -> None:
    host, fake = fcm
    api1 = cluster.node("api-1", "api")
    api2 = cluster.node("api-2", "api")
    gw1 = cluster.node("gw-1", "gateway")
    gw2 = cluster.node("gw-2", "gateway")
    ops_port = free_port()
    workers = [
        cluster.node("worker-1", "worker", OPENMPS_OPS_PORT=str(ops_port)),
        cluster.node("worker-2", "worker"),
    ]
    sched = cluster.node("sched-1", "scheduler")
    cluster.start(api1, api2, gw1, gw2, *workers, sched)
    assert "gateway=" not in api1.banner and "api=" not in gw1.banner
    assert workers[0].banner.startswith("openmps ready: node=worker-1 roles=worker ops=http://")
    assert "api=" not in workers[1].banner and "ops=" not in workers[1].banner

    app = App(await cluster.app())
    await use_fcm(app, api1, fake, host)
    vendor_token = "fcm-scale-topology-0001"
    vendor_device = await fcm_device(app, api2, vendor_token)

    # Six devices, registered through both api nodes, three on each gateway.
    creds = [await app.register(api1 if n % 2 else api2) for n in range(6)]
    inboxes = []
    for n, device in enumerate(creds):
        first, second = (gw1, gw2) if n < 3 else (gw2, gw1)
        client = app.device([first, second], device)
        await client.connect()
        inboxes.append(Inbox(client))
    try:
        tokens = [c.delivery_token for c in creds]
        task_a = await app.push(api1, {t: f"a-{n}" for n, t in enumerate(tokens[:4])})
        task_b = await app.push(api2, {t: f"b-{n}" for n, t in enumerate(tokens[2:])})
        task_v = await app.push(api2, {vendor_device: "v-1"}, title="Vendor")
        template = await app.sdk(api2).create_template_async(
            models.CreateTemplateRequest(
                app_id=app.creds.app_id,
                workspace_id=app.creds.workspace_id,
                template_name="everyone",
                title="Everyone",
                content="a broadcast",
            )
        )
        assert template.body.success is True
        broadcast = await app.sdk(api1).push_broadcast_async(
            models.PushBroadcastRequest(
                app_id=app.creds.app_id,
                workspace_id=app.creds.workspace_id,
                delivery_type=1,
                msgkey="all-1",
                expired_seconds=600,
                template_name="everyone",
                template_key_value="{}",
                push_status=1,
            )
        )
        assert broadcast.body.result_code == "OK", broadcast.body.to_map()
        task_all = broadcast.body.push_result.data

        expected = [
            ["a-0", "all-1"],
            ["a-1", "all-1"],
            ["a-2", "b-0", "all-1"],
            ["a-3", "b-1", "all-1"],
            ["b-2", "all-1"],
            ["b-3", "all-1"],
        ]

        async def all_received() -> bool:
            return [sorted(i.keys()) for i in inboxes] == [sorted(e) for e in expected]

        await eventually(all_received, timeout_s=20)

        async def all_acked() -> bool:
            rows = {
                task: await app.statuses(api2, task) for task in (task_a, task_b, task_v, task_all)
            }
            return (
                all(row[1:] == ("own", 2, True) for t in (task_a, task_b) for row in rows[t])
                and rows[task_v] == [(vendor_device, "fcm", 2, True)]
                and sorted(rows[task_all])
                == sorted([(t, "own", 2, True) for t in tokens] + [(vendor_device, "fcm", 2, True)])
            )

        await eventually(all_acked, timeout_s=20)
        assert len(await app.statuses(api1, task_a)) == 4
        assert len(await app.statuses(api1, task_b)) == 4
    finally:
        for inbox in inboxes:
            await inbox.close()

    # Each message exactly once on the app's side, and once at the vendor.
    for inbox, keys in zip(inboxes, expected, strict=True):
        assert sorted(inbox.keys()) == sorted(keys)
    sent = fcm_requests(fake, vendor_token)
    assert sorted(m["notification"]["title"] for m in sent) == ["Everyone", "Vendor"]

    # Readiness checks Redis, on the api nodes and on a worker's ops port.
    async with httpx.AsyncClient() as http:
        for url in (api1.api_url, api2.api_url, f"http://127.0.0.1:{ops_port}"):
            ready = await http.get(f"{url}/readyz")
            assert (ready.status_code, ready.json()) == (
                200,
                {"status": "ready", "checks": {"runtime": "ok", "store": "ok", "redis": "ok"}},
            )

    # A graceful stop of every node ends with exit code 0.
    for node in (api1, api2, gw1, gw2, *workers, sched):
        assert await asyncio.to_thread(node.stop) == 0, cluster.logs()


async def test_a_nonce_used_on_one_api_node_is_refused_by_the_other(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    api1 = cluster.node("api-1", "api")
    api2 = cluster.node("api-2", "api")
    cluster.start(api1, api2)
    app = App(await cluster.app())
    nonce = uuid.uuid4().hex
    monkeypatch.setattr(Utils, "get_nonce", lambda: nonce)
    device = await app.register(api1)

    first = await app.push(api1, {device.delivery_token: "n-1"})
    assert first.isdigit()
    await client_error(
        app.push(api2, {device.delivery_token: "n-2"}),
        400,
        "SignatureNonceUsed",
        f"the signature nonce {nonce!r} was already used within the last 1800 s; generate a "
        "new nonce for every request, including retries",
    )
    rows = await cluster.sql("SELECT count(*) FROM tasks")
    assert rows[0][0] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--role", "worker"],
            "error: --role worker runs part of openmps, which needs Redis to reach the other "
            "parts: set redis_url",
        ),
        (
            ["--role", "api,gateway", "--redis-url", "redis://127.0.0.1:6379/0"],
            "error: the scaled-out mode (--role, or redis_url set) needs PostgreSQL",
        ),
        (["--role", "api,cron"], "error: invalid setting: role (--role / OPENMPS_ROLE): "),
    ],
)
def test_serve_refuses_a_scaled_role_it_cannot_run(
    tmp_path: Path, args: list[str], message: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "openmps", "serve", "--data-dir", str(tmp_path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("OPENMPS_")},
    )
    assert done.returncode == 2
    assert done.stderr.startswith(message), done.stderr
