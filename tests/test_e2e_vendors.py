"""Vendor channels end to end: the official SDK pushes, openmps routes to the vendor's fake
gateway, and the vendor's answer is stored as exactly the seed's (channel, code).

The fakes run on their own event loop in a thread of the test process; the openmps server is
the usual child process, configured through the REST API with each fake's address.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import pytest
from alibabacloud_mpaas20201028 import models
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from openmps.channels.registry import THIRD_CHANNELS
from openmps.fakes.apns import FakeAPNs
from openmps.fakes.base import Rule, Scenario
from openmps.fakes.fcm import FakeFCM
from openmps.fakes.huawei import FakeHuawei
from openmps.fakes.oppo import FakeOPPO
from openmps.fakes.vivo import FakeVivo
from openmps.fakes.xiaomi import FakeXiaomi
from openmps.statuses import Channel, by_channel
from tests.conftest import Server, Tenant, eventually, running_server
from tests.test_channel_fcm import SEED_CASES as FCM_SEED_CASES
from tests.test_e2e_push import task_rows

T = TypeVar("T")
THIRD_CHANNEL = {vendor: number for number, vendor in THIRD_CHANNELS.items()}


class FakeHost:
    """Fakes served from an event loop of their own, in a thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)  # type: ignore[arg-type]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@dataclass
class Vendor:
    """A fake gateway and how an app is set up to use it."""

    key: str
    fake: Any
    settings: dict[str, str]
    base_url: str
    token: Callable[[int], str]  # a device token this vendor accepts, numbered
    platform: str = "android"

    @property
    def scenario(self) -> Scenario:
        scenario: Scenario = self.fake.scenario
        return scenario


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # Retries wait minutes: a retriable answer is seen as the status it leaves, not re-sent.
    env = {"OPENMPS_VENDOR_BACKOFF_BASE_S": "300", "OPENMPS_VENDOR_BACKOFF_MAX_S": "600"}
    with running_server(tmp_path_factory, env) as srv:
        yield srv


@pytest.fixture(scope="module")
def vendors() -> Iterator[dict[str, Vendor]]:
    host = FakeHost()
    huawei = FakeHuawei(credentials={"104500001": "hms-secret-e2e"})
    xiaomi = FakeXiaomi(apps={"mi-secret-e2e": "com.example.app"})
    oppo = FakeOPPO(app_key="oppo-key-e2e", master_secret="oppo-master-e2e")
    vivo = FakeVivo(app_id=10004, app_key="vivo-key-e2e", app_secret="vivo-secret-e2e")
    apns = FakeAPNs()
    apns_key = ec.generate_private_key(ec.SECP256R1())
    apns.add_key(
        "TEAM123456",
        "KEY1234567",
        apns_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode(),
    )
    apns_private = apns_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    fcm = FakeFCM()
    fakes = (huawei, xiaomi, oppo, vivo, apns, fcm)
    for fake in fakes:
        host.run(fake.start())
    service_account, _ = fcm.new_service_account("openmps-e2e")  # its token_uri needs the port
    made = {
        "fcm": Vendor(
            "fcm",
            fcm,
            {"service_account": json.dumps(service_account)},
            fcm.url,
            lambda n: f"fcm-registration-token-{n:012d}",
        ),
        "apns": Vendor(
            "apns",
            apns,
            {
                "team_id": "TEAM123456",
                "key_id": "KEY1234567",
                "private_key": apns_private,
                "topic": "com.example.app",
                "ca_pem": apns.cert_pem,
            },
            apns.url,
            lambda n: f"{n:064x}",
            platform="ios",
        ),
        "hms": Vendor(
            "hms",
            huawei,
            {"app_id": "104500001", "client_secret": "hms-secret-e2e"},
            huawei.url,
            lambda n: f"IQAAAACy0hms{n:08d}",
        ),
        "xiaomi": Vendor(
            "xiaomi",
            xiaomi,
            {"app_secret": "mi-secret-e2e", "package_name": "com.example.app"},
            xiaomi.url,
            lambda n: f"mi-regid-{n:08d}",
        ),
        "oppo": Vendor(
            "oppo",
            oppo,
            {"app_key": "oppo-key-e2e", "master_secret": "oppo-master-e2e"},
            oppo.base_url,
            lambda n: f"CN_oppo{n:012d}",
        ),
        "vivo": Vendor(
            "vivo",
            vivo,
            {"app_id": "10004", "app_key": "vivo-key-e2e", "app_secret": "vivo-secret-e2e"},
            vivo.base_url,
            lambda n: f"{n:023d}",
        ),
    }
    yield made
    for fake in fakes:
        host.run(fake.stop())
    host.close()


_numbers = iter(range(1, 10**9))


async def rest(tenant: Tenant, method: str, path: str, body: Any = None) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.request(
            method,
            f"{tenant.server.api_url}{path}",
            json=body,
            auth=(tenant.creds.access_key_id, tenant.creds.access_key_secret),
        )


async def use_vendor(tenant: Tenant, vendor: Vendor) -> None:
    response = await rest(
        tenant,
        "PUT",
        f"/v1/channels/{vendor.key}",
        {"settings": vendor.settings, "base_url": vendor.base_url},
    )
    assert (response.status_code, response.json()) == (200, {"vendor": vendor.key, "stored": True})


async def vendor_device(tenant: Tenant, vendor: Vendor) -> tuple[str, str]:
    """A device with a token of this vendor reported: (delivery token, vendor token)."""
    creds = await tenant.register(vendor.platform)
    token = vendor.token(next(_numbers))
    reported = await tenant.sdk().push_report_async(
        models.PushReportRequest(
            app_id=tenant.app_id,
            workspace_id=tenant.workspace_id,
            delivery_token=creds.delivery_token,
            os_type=2 if vendor.platform == "ios" else 1,
            third_channel=THIRD_CHANNEL[vendor.key],
            third_channel_device_token=token,
        )
    )
    assert reported.body.result_code == "OK"
    return creds.delivery_token, token


async def push_to(tenant: Tenant, targets: dict[str, str], *, delivery_type: int = 1) -> str:
    """PushSimple to device tokens (DeliveryType 1 or 2) or users (3); returns the task id."""
    response = await tenant.sdk().push_simple_async(
        models.PushSimpleRequest(
            app_id=tenant.app_id,
            workspace_id=tenant.workspace_id,
            delivery_type=delivery_type,
            expired_seconds=3600,
            title="Sale",
            content="Everything half price today",
            target_msgkey=json.dumps(targets),
        )
    )
    assert response.body.result_code == "OK", response.body.to_map()
    task_id: str = response.body.push_result.data
    return task_id


async def settled(tenant: Tenant, task_id: str, count: int = 1) -> list[dict[str, Any]]:
    """The task's rows once every one has left the initial (common, 0)."""
    rows: list[dict[str, Any]] = []

    async def done() -> bool:
        nonlocal rows
        rows = await task_rows(tenant, task_id)
        return len(rows) == count and all(
            (r["status_channel"], r["status_code"]) != ("common", 0) for r in rows
        )

    await eventually(done, timeout_s=15)
    return rows


@pytest.mark.parametrize("key", ["apns", "fcm", "hms", "xiaomi", "oppo", "vivo"])
async def test_push_goes_through_the_vendor_and_is_acked(
    tenant: Tenant, vendors: dict[str, Vendor], key: str
) -> None:
    vendor = vendors[key]
    await use_vendor(tenant, vendor)
    device, token = await vendor_device(tenant, vendor)
    task_id = await push_to(tenant, {device: "k-ok"}, delivery_type=_type(vendor))
    [row] = await settled(tenant, task_id)
    assert (
        row["channel"],
        row["status_channel"],
        row["status_code"],
        row["status_name"],
        row["final"],
        row["detail"],
    ) == (key, "common", 2, "Acked", True, None)
    # The fake got it: APNs carries the token in the path, the others in the body.
    assert any(
        token in item.path or token in json.dumps(item.body)
        for item in list(vendor.fake.received.items)
    )


def _type(vendor: Vendor) -> int:
    return 2 if vendor.platform == "ios" else 1


# How to make the fake APNs answer each seed row (the others answer FakeX.error(code)).
APNS_REASONS = {
    2001: "PayloadEmpty",
    2002: "PayloadTooLarge",
    2003: "BadTopic",
    2004: "TopicDisallowed",
    2005: "BadMessageId",
    2006: "BadExpirationDate",
    2007: "BadPriority",
    2008: "MissingDeviceToken",
    2009: "BadDeviceToken",
    2010: "DeviceTokenNotForTopic",
    2011: "Unregistered",
    2013: "BadCertificateEnvironment",
    2014: "BadCertificate",
    2023: "MissingTopic",
}


FCM_RULES = {code: make for code, make, _ in FCM_SEED_CASES}


def rule_for(vendor: Vendor, code: int) -> Rule | None:
    if vendor.key == "fcm":
        return FCM_RULES[code]()
    if vendor.key != "apns":
        rule: Rule = type(vendor.fake).error(code)
        return rule
    if code == 2024:
        return Rule(action="close")  # the connection drops before an answer
    if code == 2025:
        return None  # the settings point where nothing listens
    return FakeAPNs.error(APNS_REASONS[code])


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


SEED_ROWS = [
    pytest.param(key, status.code, id=f"{key}-{status.code}")
    for key, channel in (
        ("apns", Channel.APNS),
        ("fcm", Channel.FCM),
        ("hms", Channel.HMS),
        ("xiaomi", Channel.XIAOMI),
        ("oppo", Channel.OPPO),
        ("vivo", Channel.VIVO),
    )
    for status in by_channel(channel)
]


@pytest.mark.parametrize(("key", "code"), SEED_ROWS)
async def test_every_vendor_seed_row_is_stored_exactly(
    tenant: Tenant, vendors: dict[str, Vendor], key: str, code: int
) -> None:
    vendor = vendors[key]
    if (key, code) == ("apns", 2025):
        # Nothing listens where the settings point: no connection can be opened.
        vendor = Vendor(
            "apns",
            vendor.fake,
            vendor.settings,
            f"https://127.0.0.1:{unused_port()}",
            vendor.token,
            "ios",
        )
    await use_vendor(tenant, vendor)
    device, token = await vendor_device(tenant, vendor)
    rule = rule_for(vendor, code)
    if rule is not None:
        vendor.scenario.set(rule, token=token)
    if (key, code) == ("hms", 80100000):
        # A partial failure: Huawei names the bad token among good ones in one request.
        good, _ = await vendor_device(tenant, vendor)
        for target in (device, good):
            await tenant.sdk().push_bind_async(
                models.PushBindRequest(
                    app_id=tenant.app_id,
                    workspace_id=tenant.workspace_id,
                    delivery_token=target,
                    os_type=1,
                    user_id="two-phones",
                )
            )
        task_id = await push_to(tenant, {"two-phones": "k-row"}, delivery_type=3)
        rows = await settled(tenant, task_id, count=2)
        by_device = {r["device"]: (r["status_channel"], r["status_code"]) for r in rows}
        assert by_device == {device: (key, code), good: ("common", 2)}
        return
    task_id = await push_to(tenant, {device: "k-row"}, delivery_type=_type(vendor))
    [row] = await settled(tenant, task_id)
    assert (row["channel"], row["status_channel"], row["status_code"]) == (key, key, code)
    expected_name = next(s.name for s in by_channel(key) if s.code == code)
    assert row["status_name"] == expected_name


async def test_dead_token_is_dropped_and_later_pushes_use_the_own_channel(
    tenant: Tenant, vendors: dict[str, Vendor]
) -> None:
    vendor = vendors["xiaomi"]
    await use_vendor(tenant, vendor)
    device, token = await vendor_device(tenant, vendor)
    vendor.scenario.set(FakeXiaomi.error(20301), token=token)
    [first] = await settled(tenant, await push_to(tenant, {device: "k-1"}))
    assert (first["status_channel"], first["status_code"], first["final"]) == (
        "xiaomi",
        20301,
        True,
    )

    async def token_dropped() -> bool:
        state = await tenant.sdk().push_query_device_state_async(
            models.PushQueryDeviceStateRequest(
                app_id=tenant.app_id, workspace_id=tenant.workspace_id, target=device, target_type=1
            )
        )
        return bool(state.body.data.third_token == "")

    await eventually(token_dropped)
    second = await push_to(tenant, {device: "k-2"})
    assert [(r["channel"], r["status_code"]) for r in await task_rows(tenant, second)] == [
        ("own", 0)
    ]


async def test_own_first_prefers_a_connected_device_and_vendor_first_does_not(
    tenant: Tenant, vendors: dict[str, Vendor]
) -> None:
    vendor = vendors["oppo"]
    await use_vendor(tenant, vendor)
    creds = await tenant.register("android")
    token = vendor.token(next(_numbers))
    await tenant.sdk().push_report_async(
        models.PushReportRequest(
            app_id=tenant.app_id,
            workspace_id=tenant.workspace_id,
            delivery_token=creds.delivery_token,
            os_type=1,
            third_channel=4,
            third_channel_device_token=token,
        )
    )
    async with tenant.device(creds) as device:
        task_id = await push_to(tenant, {creds.delivery_token: "k-online"})
        message = await asyncio.wait_for(anext(aiter(device)), 10)
        assert message.msg_key == "k-online"
        assert [r["channel"] for r in await task_rows(tenant, task_id)] == ["own"]
        policy = await rest(tenant, "PUT", "/v1/routing", {"policy": "vendor_first"})
        assert (policy.status_code, policy.json()) == (200, {"policy": "vendor_first"})
        await asyncio.sleep(2.1)  # routing reads an app's settings at most every 2 s
        task_id = await push_to(tenant, {creds.delivery_token: "k-vendor"})
        [row] = await settled(tenant, task_id)
        assert (row["channel"], row["status_code"]) == ("oppo", 2)


async def test_channel_settings_are_checked_and_secrets_never_shown(
    tenant: Tenant, vendors: dict[str, Vendor]
) -> None:
    refused = await rest(
        tenant, "PUT", "/v1/channels/vivo", {"settings": {"app_id": "10004", "app_key": "k"}}
    )
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_param"
    assert "app_secret" in refused.json()["message"]
    unknown = await rest(tenant, "PUT", "/v1/channels/nokia", {"settings": {}})
    assert (unknown.status_code, unknown.json()) == (
        400,
        {
            "error": "invalid_param",
            "code": 3028,
            "message": "unknown vendor 'nokia'; one of: apns, fcm, hms, xiaomi, oppo, vivo",
        },
    )
    await use_vendor(tenant, vendors["vivo"])
    listed = await rest(tenant, "GET", "/v1/channels")
    [entry] = listed.json()["channels"]
    assert entry["vendor"] == "vivo"
    assert entry["settings"] == {
        "app_id": "10004",
        "app_key": "vivo-key-e2e",
        "app_secret": "<hidden>",
    }
    assert "vivo-secret-e2e" not in listed.text


async def test_unknown_settings_are_refused_so_a_mistyped_secret_is_never_shown(
    tenant: Tenant, vendors: dict[str, Vendor]
) -> None:
    # Regression: `clientsecret=...` (a typo) was stored and listed in clear.
    settings = {**vendors["hms"].settings, "clientsecret": "MY-REAL-SECRET-TYPO"}
    refused = await rest(tenant, "PUT", "/v1/channels/hms", {"settings": settings})
    assert (refused.status_code, refused.json()) == (
        400,
        {
            "error": "invalid_param",
            "code": 3028,
            "message": "unknown hms setting(s) clientsecret; known: app_id, base_url, "
            "client_secret, token_url",
        },
    )
    listed = await rest(tenant, "GET", "/v1/channels")
    assert listed.json() == {"channels": []}


async def test_deleting_an_unknown_vendor_is_refused(tenant: Tenant) -> None:
    response = await rest(tenant, "DELETE", "/v1/channels/bogus")
    assert (response.status_code, response.json()) == (
        400,
        {
            "error": "invalid_param",
            "code": 3028,
            "message": "unknown vendor 'bogus'; one of: apns, fcm, hms, xiaomi, oppo, vivo",
        },
    )


async def test_push_report_refuses_an_unknown_third_channel(tenant: Tenant) -> None:
    creds = await tenant.register("android")
    response = await tenant.sdk().push_report_async(
        models.PushReportRequest(
            app_id=tenant.app_id,
            workspace_id=tenant.workspace_id,
            delivery_token=creds.delivery_token,
            os_type=1,
            third_channel=9,
            third_channel_device_token="x",
        )
    )
    assert (response.body.result_code, response.body.push_result.result_msg) == (
        "3028",
        "ThirdChannel 9 is unknown; one of 1 (apns), 2 (xiaomi), 3 (hms), 4 (oppo), 5 (vivo), "
        "6 (fcm)",
    )
