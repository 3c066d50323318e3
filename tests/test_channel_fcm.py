"""FCMChannel against FakeFCM, over real sockets on 127.0.0.1.

Each test gets its own fake (a fresh port, fresh scenario and record) and a channel whose
service account was made by the fake, so the channel's OAuth2 flow runs for real.
"""

from __future__ import annotations

import asyncio
import functools
import json
import socket
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric import rsa

from openmps import statuses
from openmps.channels.base import ChannelConfig, Next, Outbound, Outcome
from openmps.channels.fcm import FCMChannel, build_message, status_for
from openmps.errors import ConfigError
from openmps.fakes.base import Rule
from openmps.fakes.fcm import FakeFCM
from openmps.statuses import ACKED, NONE, Channel, Status

PROJECT = "demo-project"
SEND_PATH = f"/v1/projects/{PROJECT}/messages:send"


def device_token(n: int = 0) -> str:
    """Shaped like an FCM registration token (instance id, colon, APA91b...)."""
    return f"dKx{n:05d}Qm:APA91bH" + "x7_-" * 30


def outbound(
    delivery_id: int = 1,
    *,
    token: str | None = None,
    extras: dict[str, Any] | None = None,
    expires_in: timedelta = timedelta(hours=1, seconds=0.5),
    silent: bool = False,
) -> Outbound:
    return Outbound(
        delivery_id=delivery_id,
        token=device_token(delivery_id) if token is None else token,
        title="Order 1182",
        content="Out for delivery",
        extras=extras if extras is not None else {"orderId": "1182"},
        expires_at=datetime.now(UTC) + expires_in,
        msg_key=f"key-{delivery_id}",
        task_id=7,
        silent=silent,
    )


@functools.cache
def rsa_key() -> rsa.RSAPrivateKey:
    """One key for every service account here: generating RSA keys is slow."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def new_account(fake: FakeFCM, project_id: str = PROJECT, **kwargs: Any) -> dict[str, str]:
    info, _ = fake.new_service_account(project_id, key=rsa_key(), **kwargs)
    return info


def fcm(code: int) -> Status:
    return statuses.get(Channel.FCM, code)


UNAVAILABLE = (Channel.FCM, 90000010, "Unavailable")  # a PROPOSAL row (status-codes.md)


def key(outcome: Outcome) -> tuple[Channel, int, str]:
    return (outcome.status.channel, outcome.status.code, outcome.status.name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# One fake and one event loop for the whole module (starting and stopping uvicorn costs a
# few tenths of a second); each test gets it reset.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def shared_fake() -> AsyncIterator[FakeFCM]:
    server = FakeFCM()
    await server.start()
    yield server
    await server.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def fake(shared_fake: FakeFCM) -> FakeFCM:
    shared_fake.reset()
    return shared_fake


def make_channel(fake: FakeFCM, **values: Any) -> FCMChannel:
    if "service_account" not in values:
        values["service_account"] = json.dumps(new_account(fake))
    config = ChannelConfig("fcm", values, base_url=fake.url, secret_keys=FCMChannel.secret_keys)
    return FCMChannel.create(config)


@pytest_asyncio.fixture(loop_scope="module")
async def channel(fake: FakeFCM) -> AsyncIterator[FCMChannel]:
    made = make_channel(fake)
    yield made
    await made.close()


async def send_one(channel: FCMChannel, item: Outbound | None = None) -> Outcome:
    [outcome] = await channel.send([item or outbound()])
    return outcome


# -- success --------------------------------------------------------------------------


async def test_send_success_posts_the_exact_v1_message(fake: FakeFCM, channel: FCMChannel) -> None:
    item = outbound(extras={"orderId": "1182", "count": 3, "paid": True})

    outcome = await send_one(channel, item)

    assert outcome == Outcome(1, ACKED, Next.DONE)
    [received] = fake.send_requests
    assert received.path == SEND_PATH
    assert received.body == {
        "message": {
            "token": item.token,
            "notification": {"title": "Order 1182", "body": "Out for delivery"},
            "data": {"orderId": "1182", "count": "3", "paid": "True"},
            "android": {"ttl": "3600s", "priority": "HIGH"},
        }
    }
    assert received.headers["authorization"].startswith("Bearer ya29.fake-")
    assert received.headers["content-type"] == "application/json; charset=UTF-8"


async def test_silent_delivery_is_data_only_with_normal_priority(
    fake: FakeFCM, channel: FCMChannel
) -> None:
    item = outbound(silent=True, expires_in=timedelta(seconds=90.5))

    assert await send_one(channel, item) == Outcome(1, ACKED, Next.DONE)

    [received] = fake.send_requests
    assert received.body == {
        "message": {
            "token": item.token,
            "data": {"orderId": "1182"},
            "android": {"ttl": "90s", "priority": "NORMAL"},
        }
    }


async def test_ttl_is_clamped_to_fcm_range() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    late = Outbound(1, "t", "a", "b", {}, now + timedelta(days=60), "k", 1)
    gone = Outbound(1, "t", "a", "b", {}, now - timedelta(seconds=5), "k", 1)

    assert build_message(late, now)["message"]["android"]["ttl"] == "2419200s"
    assert build_message(gone, now)["message"]["android"]["ttl"] == "0s"


async def test_batch_of_500_gets_one_outcome_each(fake: FakeFCM, channel: FCMChannel) -> None:
    batch = [outbound(i) for i in range(1, 501)]

    outcomes = await channel.send(batch)

    assert sorted(o.delivery_id for o in outcomes) == list(range(1, 501))
    assert {(o.status, o.next) for o in outcomes} == {(ACKED, Next.DONE)}
    assert len(fake.send_requests) == 500
    assert fake.token_requests == 1
    with pytest.raises(ValueError, match="most is 500"):
        await channel.send([outbound(i) for i in range(501)])


# -- every seed row -------------------------------------------------------------------

# (seed code, the fake's answer, next step). One row per fcm row of the seed's table.
SEED_CASES: list[tuple[int, Callable[[], Rule], Next]] = [
    (90000002, lambda: FakeFCM.error("INVALID_ARGUMENT", field="message.token"), Next.DROP_TOKEN),
    (90000003, lambda: FakeFCM.error("UNREGISTERED"), Next.DROP_TOKEN),
    (
        90000004,
        lambda: FakeFCM.error("INVALID_ARGUMENT", field="message.android.restricted_package_name"),
        Next.CONFIG,
    ),
    (
        90000007,
        lambda: FakeFCM.error("INVALID_ARGUMENT", message="Android message is too big"),
        Next.MESSAGE,
    ),
    (
        90000009,
        lambda: FakeFCM.error("INVALID_ARGUMENT", field="message.android.ttl"),
        Next.MESSAGE,
    ),
    (90000011, lambda: FakeFCM.error("INTERNAL"), Next.RETRY),
    (90000401, lambda: FakeFCM.error("UNAUTHENTICATED"), Next.CONFIG),
]


async def test_seed_cases_cover_every_fcm_seed_row() -> None:
    assert sorted(code for code, _, _ in SEED_CASES) == sorted(
        s.code for s in statuses.by_channel(Channel.FCM)
    )


@pytest.mark.parametrize(("code", "rule", "next_"), SEED_CASES, ids=[str(c[0]) for c in SEED_CASES])
async def test_seed_row(
    fake: FakeFCM, channel: FCMChannel, code: int, rule: Callable[[], Rule], next_: Next
) -> None:
    fake.scenario.set(rule())

    outcome = await send_one(channel)

    assert (outcome.status.channel, outcome.status.code) == (Channel.FCM, code)
    assert outcome.status == fcm(code)
    assert outcome.next is next_
    assert outcome.raw is not None and outcome.raw.startswith(str(rule().status))
    assert outcome.retry_after_s is None


async def test_authentication_is_reported_after_one_refresh(
    fake: FakeFCM, channel: FCMChannel
) -> None:
    fake.scenario.set(FakeFCM.error("UNAUTHENTICATED"))

    outcome = await send_one(channel)

    assert outcome == Outcome(1, fcm(90000401), Next.CONFIG, "401 UNAUTHENTICATED")
    assert fake.token_requests == 2  # the first token, then the one refresh
    assert len(fake.send_requests) == 2  # the send, then the one re-send


async def test_unregistered_token_answer_from_the_fake_drops_the_token(
    fake: FakeFCM, channel: FCMChannel
) -> None:
    fake.unregister(device_token(1))

    outcome = await send_one(channel)

    assert outcome == Outcome(1, fcm(90000003), Next.DROP_TOKEN, "404 NOT_FOUND UNREGISTERED")


async def test_garbled_token_answer_from_the_fake_is_invalid_registration(
    channel: FCMChannel,
) -> None:
    outcome = await send_one(channel, outbound(token="not a token!"))

    assert outcome == Outcome(
        1,
        fcm(90000002),
        Next.DROP_TOKEN,
        "400 INVALID_ARGUMENT INVALID_ARGUMENT message.token",
    )


async def test_account_of_another_project_is_authentication(fake: FakeFCM) -> None:
    info = new_account(fake, "other-project")
    channel = make_channel(fake, service_account=info, project_id=PROJECT)
    try:
        outcome = await send_one(channel)
    finally:
        await channel.close()

    assert outcome == Outcome(1, fcm(90000401), Next.CONFIG, "403 PERMISSION_DENIED")


async def test_unknown_service_account_is_authentication_for_the_whole_batch(
    fake: FakeFCM,
) -> None:
    info = new_account(fake, register=False)
    channel = make_channel(fake, service_account=info)
    try:
        outcomes = await channel.send([outbound(i) for i in range(1, 21)])
    finally:
        await channel.close()

    raw = "token endpoint: 400 invalid_grant"
    assert sorted(outcomes, key=lambda o: o.delivery_id) == [
        Outcome(i, fcm(90000401), Next.CONFIG, raw) for i in range(1, 21)
    ]
    assert fake.token_requests == 1  # the failure is shared, not fetched per send
    assert fake.send_requests == []


# -- the proposal rows (status-codes.md table 2) ----------------------------------------

PROPOSAL_CASES: list[tuple[int, str, Callable[[], Rule], Next]] = [
    (
        90000001,
        "MissingRegistration",
        lambda: FakeFCM.error("INVALID_ARGUMENT", message="Recipient of the message is not set."),
        Next.MESSAGE,
    ),
    (90000005, "MismatchSenderId", lambda: FakeFCM.error("SENDER_ID_MISMATCH"), Next.DROP_TOKEN),
    (
        90000006,
        "InvalidParameters",
        lambda: FakeFCM.error("INVALID_ARGUMENT", field="message.android.collapse_key"),
        Next.MESSAGE,
    ),
    (
        90000008,
        "InvalidDataKey",
        lambda: FakeFCM.error(
            "INVALID_ARGUMENT", field="message.data", message="Invalid data key: reserved"
        ),
        Next.MESSAGE,
    ),
    (90000010, "Unavailable", lambda: FakeFCM.error("UNAVAILABLE"), Next.RETRY),
    (
        90000010,
        "Unavailable",
        lambda: Rule(status=502, body="<html>Bad Gateway</html>"),
        Next.RETRY,
    ),
    (
        90000012,
        "DeviceMessageRateExceeded",
        lambda: FakeFCM.error("QUOTA_EXCEEDED", quota="device"),
        Next.RETRY,
    ),
    (
        90000013,
        "TopicsMessageRateExceeded",
        lambda: FakeFCM.error("QUOTA_EXCEEDED", quota="topic"),
        Next.RETRY,
    ),
    (
        90000014,
        "InvalidApnsCredential",
        lambda: FakeFCM.error("THIRD_PARTY_AUTH_ERROR"),
        Next.CONFIG,
    ),
    (90000014, "InvalidApnsCredential", lambda: FakeFCM.error("APNS_AUTH_ERROR"), Next.CONFIG),
    (90000015, "UnspecifiedError", lambda: FakeFCM.error("UNSPECIFIED_ERROR"), Next.MESSAGE),
    (
        90000400,
        "InvalidJSON",
        lambda: FakeFCM.error(
            "INVALID_ARGUMENT", message='Invalid JSON payload received. Unknown name "x"'
        ),
        Next.MESSAGE,
    ),
    (90000429, "QuotaExceeded", lambda: FakeFCM.error("QUOTA_EXCEEDED"), Next.RETRY),
    (90000429, "QuotaExceeded", lambda: Rule(status=429), Next.RETRY),
]


@pytest.mark.parametrize(
    ("code", "name", "rule", "next_"),
    PROPOSAL_CASES,
    ids=[f"{c[0]}-{i}" for i, c in enumerate(PROPOSAL_CASES)],
)
async def test_proposal_row(
    fake: FakeFCM,
    channel: FCMChannel,
    code: int,
    name: str,
    rule: Callable[[], Rule],
    next_: Next,
) -> None:
    fake.scenario.set(rule())

    outcome = await send_one(channel)

    assert (outcome.status.channel, outcome.status.code, outcome.status.name) == (
        Channel.FCM,
        code,
        name,
    )
    assert outcome.next is next_
    assert outcome.next is not Next.DROP_TOKEN or code == 90000005


async def test_unmapped_answer_is_none_with_raw_kept(fake: FakeFCM, channel: FCMChannel) -> None:
    token = device_token(1)
    body = {"error": {"code": 418, "message": f"teapot {token}", "status": "I_AM_A_TEAPOT"}}
    fake.scenario.set(Rule(status=418, body=body))

    outcome = await send_one(channel)

    assert outcome.status == NONE
    assert outcome.next is Next.MESSAGE  # final, and the token is kept
    assert outcome.raw == (
        '418 I_AM_A_TEAPOT {"error":{"code":418,"message":"teapot <token>",'
        '"status":"I_AM_A_TEAPOT"}}'
    )


async def test_unknown_fcm_error_code_wins_over_the_status(
    fake: FakeFCM, channel: FCMChannel
) -> None:
    rule = FakeFCM.error("INVALID_ARGUMENT")
    rule.body["error"]["details"][0]["errorCode"] = "SOMETHING_NEW"
    fake.scenario.set(rule)

    outcome = await send_one(channel)

    assert outcome.status == NONE
    assert outcome.next is Next.MESSAGE
    assert outcome.raw is not None
    assert outcome.raw.startswith("400 INVALID_ARGUMENT SOMETHING_NEW {")


async def test_unmapped_5xx_is_none_and_retried(fake: FakeFCM, channel: FCMChannel) -> None:
    fake.scenario.set(Rule(status=507, body="full"))

    outcome = await send_one(channel)

    assert outcome == Outcome(1, NONE, Next.RETRY, "507 full")


# -- what the channel refuses itself -------------------------------------------------


@pytest.mark.parametrize(
    ("item", "code"),
    [
        (outbound(token=""), 90000001),
        (outbound(extras={"google.sent_time": "1"}), 90000008),
        (outbound(extras={"from": "me"}), 90000008),
        (outbound(extras={"blob": "x" * 4096}), 90000007),
    ],
    ids=["no-token", "google-key", "from-key", "too-big"],
)
async def test_message_refused_locally_is_never_sent(
    fake: FakeFCM, channel: FCMChannel, item: Outbound, code: int
) -> None:
    outcome = await send_one(channel, item)

    assert (outcome.status.channel, outcome.status.code) == (Channel.FCM, code)
    assert outcome.next is Next.MESSAGE
    assert len(fake.received.items) == 0


# -- access tokens --------------------------------------------------------------------


async def test_expired_token_is_refreshed_once_for_50_concurrent_sends(
    fake: FakeFCM, channel: FCMChannel
) -> None:
    fake.scenario.set(Rule(action="expire_auth", times=1))

    outcomes = await channel.send([outbound(i) for i in range(1, 51)])

    assert sorted(outcomes, key=lambda o: o.delivery_id) == [
        Outcome(i, ACKED, Next.DONE) for i in range(1, 51)
    ]
    assert fake.token_requests == 2
    assert len(fake.send_requests) == 100  # every send saw the expired token once
    bearers = Counter(r.headers["authorization"] for r in fake.send_requests)
    assert sorted(bearers.values()) == [50, 50]  # 50 with the expired token, 50 with the new


async def test_failed_refresh_is_authentication_and_shared(fake: FakeFCM) -> None:
    info = new_account(fake)
    channel = make_channel(fake, service_account=info)
    try:
        assert (await send_one(channel)).status == ACKED  # the first token
        fake.disable_service_account(info["client_email"])
        fake.scenario.set(Rule(action="expire_auth", times=1))

        outcomes = await channel.send([outbound(i) for i in range(1, 31)])
    finally:
        await channel.close()

    raw = "token endpoint: 401 invalid_client"
    assert {(o.status, o.next, o.raw) for o in outcomes} == {(fcm(90000401), Next.CONFIG, raw)}
    assert fake.token_requests == 2  # the first token, then one refused refresh for all 30


async def test_access_token_is_reused_across_200_sends(fake: FakeFCM, channel: FCMChannel) -> None:
    for first in range(1, 201, 50):
        outcomes = await channel.send([outbound(i) for i in range(first, first + 50)])
        assert {o.status for o in outcomes} == {ACKED}

    assert fake.token_requests == 1
    assert len(fake.send_requests) == 200
    assert len({r.headers["authorization"] for r in fake.send_requests}) == 1


async def test_token_is_renewed_before_it_expires() -> None:
    fake = FakeFCM(token_lifetime_s=1.0)
    await fake.start()
    channel = make_channel(fake)
    try:
        assert (await send_one(channel)).status == ACKED
        await asyncio.sleep(0.6)  # past half the life: stale for the channel, valid at FCM
        assert (await send_one(channel)).status == ACKED
    finally:
        await channel.close()
        await fake.stop()

    assert fake.token_requests == 2
    assert len(fake.send_requests) == 2  # renewed ahead of time: no 401, no re-send


# -- Retry-After ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "code", "seconds"),
    [
        (FakeFCM.error("QUOTA_EXCEEDED", retry_after=17), 90000429, 17.0),
        (FakeFCM.error("QUOTA_EXCEEDED"), 90000429, 60.0),
        (FakeFCM.error("UNAVAILABLE", retry_after=3), 90000010, 3.0),
        (FakeFCM.error("UNAVAILABLE", retry_after="2.5"), 90000010, 2.5),
        (FakeFCM.error("INTERNAL", retry_after=9), 90000011, 9.0),
    ],
    ids=["quota-17", "quota-default", "unavailable-3", "unavailable-2.5", "internal-9"],
)
async def test_retry_after_is_honoured(
    fake: FakeFCM, channel: FCMChannel, rule: Rule, code: int, seconds: float
) -> None:
    fake.scenario.set(rule)

    outcome = await send_one(channel)

    assert (outcome.status.code, outcome.next, outcome.retry_after_s) == (
        code,
        Next.RETRY,
        seconds,
    )


async def test_retry_after_as_an_http_date(fake: FakeFCM, channel: FCMChannel) -> None:
    when = datetime.now(UTC) + timedelta(seconds=120)
    rule = FakeFCM.error("UNAVAILABLE", retry_after=format_datetime(when, usegmt=True))
    fake.scenario.set(rule)

    outcome = await send_one(channel)

    assert outcome.status.code == 90000010
    assert outcome.retry_after_s is not None and 115 <= outcome.retry_after_s <= 120


async def test_retry_after_is_per_token(fake: FakeFCM, channel: FCMChannel) -> None:
    fake.scenario.set(
        FakeFCM.error("QUOTA_EXCEEDED", quota="device", retry_after=30), token=device_token(2)
    )

    outcomes = {o.delivery_id: o for o in await channel.send([outbound(1), outbound(2)])}

    assert outcomes[1] == Outcome(1, ACKED, Next.DONE)
    assert (outcomes[2].status.code, outcomes[2].retry_after_s) == (90000012, 30.0)


# -- transport failures ---------------------------------------------------------------


async def test_dropped_connection_is_unavailable(fake: FakeFCM, channel: FCMChannel) -> None:
    fake.scenario.set(Rule(action="close", times=1))

    outcome = await send_one(channel)

    assert (outcome.status.code, outcome.next) == (90000010, Next.RETRY)
    assert outcome.raw in {"RemoteProtocolError", "ReadError"}
    assert (await send_one(channel)).status == ACKED  # the pool recovers


async def test_unreachable_send_host_is_unavailable(fake: FakeFCM) -> None:
    info = new_account(fake)
    dead = f"http://127.0.0.1:{free_port()}"
    channel = make_channel(fake, service_account=info, base_url=dead)
    try:
        outcome = await send_one(channel)
    finally:
        await channel.close()

    assert (key(outcome), outcome.next, outcome.raw) == (UNAVAILABLE, Next.RETRY, "ConnectError")


async def test_unreachable_token_endpoint_is_unavailable(fake: FakeFCM) -> None:
    info = new_account(fake)
    info["token_uri"] = f"http://127.0.0.1:{free_port()}/token"
    channel = make_channel(fake, service_account=info)
    try:
        outcome = await send_one(channel)
    finally:
        await channel.close()

    raw = "token endpoint: ConnectError"
    assert (key(outcome), outcome.next, outcome.raw) == (UNAVAILABLE, Next.RETRY, raw)


# -- configuration --------------------------------------------------------------------


def _config(**values: Any) -> ChannelConfig:
    return ChannelConfig("fcm", values, secret_keys=FCMChannel.secret_keys)


async def test_config_errors_name_the_key(fake: FakeFCM) -> None:
    good = new_account(fake)
    pem = good["private_key"]
    cases: list[tuple[dict[str, Any], str]] = [
        ({}, "setting 'service_account' is missing"),
        ({"service_account": "{not json"}, "setting 'service_account' is not valid JSON"),
        ({"service_account": "[]"}, "setting 'service_account' must be a JSON object"),
        ({"service_account": {**good, "type": "user"}}, "'type' must be 'service_account'"),
        (
            {"service_account": {k: v for k, v in good.items() if k != "client_email"}},
            "setting 'service_account': field 'client_email' is missing",
        ),
        (
            {"service_account": {**good, "private_key": "-----BEGIN PRIVATE KEY-----\nAAAA"}},
            "setting 'service_account': field 'private_key' is not a PEM private key",
        ),
        (
            {"service_account": {**good, "token_uri": ""}},
            "setting 'service_account': field 'token_uri' is missing",
        ),
        (
            {"service_account": {k: v for k, v in good.items() if k != "project_id"}},
            "setting 'project_id' is missing",
        ),
        ({"service_account": good, "base_url": "ftp://x"}, "setting 'base_url'"),
    ]
    for values, expected in cases:
        with pytest.raises(ConfigError) as caught:
            FCMChannel.create(_config(**values))
        assert expected in str(caught.value), values.keys()
        assert pem not in str(caught.value)
        assert "BEGIN" not in str(caught.value)


async def test_config_takes_a_dict_or_json_and_project_override(fake: FakeFCM) -> None:
    info = new_account(fake)
    from_json = FCMChannel.create(_config(service_account=json.dumps(info)))
    override = FCMChannel.create(
        _config(service_account=info, project_id="other", base_url="http://127.0.0.1:9")
    )
    try:
        assert from_json.send_url == f"https://fcm.googleapis.com{SEND_PATH}"
        assert override.send_url == "http://127.0.0.1:9/v1/projects/other/messages:send"
        assert "PRIVATE KEY" not in repr(_config(service_account=info))
    finally:
        await from_json.close()
        await override.close()


# -- the fake's own answers, read by the channel's table --------------------------------


async def _bearer(fake: FakeFCM, channel: FCMChannel) -> str:
    """A valid Authorization value: the one the channel sent just now."""
    assert (await send_one(channel)).status == ACKED
    return fake.send_requests[-1].headers["authorization"]


async def _raw_send(fake: FakeFCM, channel: FCMChannel, body: Any) -> httpx.Response:
    """Post ``body`` as is, with a valid access token from the channel's account."""
    bearer = await _bearer(fake, channel)
    async with httpx.AsyncClient() as client:
        return await client.post(fake.url + SEND_PATH, json=body, headers={"Authorization": bearer})


@pytest.mark.parametrize(
    ("message", "http", "code", "field"),
    [
        ({"token": "t", "data": {"n": 1}}, 400, 90000006, "message.data[0].value"),
        ({"token": "t", "topic": "news"}, 400, 90000006, "message"),
        ({"token": "t", "android": {"ttl": "10"}}, 400, 90000009, "message.android.ttl"),
        ({"token": "t", "android": {"ttl": "2419201s"}}, 400, 90000009, "message.android.ttl"),
        ({"token": "t", "data": {"gcm": "x"}}, 400, 90000008, "message.data"),
        ({"token": "t", "data": {"k": "x" * 4100}}, 400, 90000007, None),
        ({"topic": "news", "data": {"k": "x" * 2100}}, 400, 90000007, None),
        ({"data": {"k": "v"}}, 400, 90000001, None),
        ({"token": "t", "colour": "red"}, 400, 90000400, "message"),
    ],
    ids=[
        "data-number",
        "two-targets",
        "ttl-format",
        "ttl-range",
        "reserved-key",
        "too-big",
        "too-big-topic",
        "no-target",
        "unknown-field",
    ],
)
async def test_fake_validation_maps_back_to_the_right_code(
    fake: FakeFCM,
    channel: FCMChannel,
    message: dict[str, Any],
    http: int,
    code: int,
    field: str | None,
) -> None:
    response = await _raw_send(fake, channel, {"message": message})

    assert response.status_code == http
    error = response.json()["error"]
    assert (error["code"], error["status"]) == (http, "INVALID_ARGUMENT")
    fields = [
        violation["field"]
        for detail in error.get("details", [])
        for violation in detail.get("fieldViolations", [])
    ]
    assert fields == ([] if field is None else [field])
    status, next_, _ = status_for(response)
    assert (status.channel, status.code, next_) == (Channel.FCM, code, Next.MESSAGE)


async def test_fake_refuses_missing_and_expired_bearer(fake: FakeFCM, channel: FCMChannel) -> None:
    body = {"message": {"token": "t"}}
    async with httpx.AsyncClient() as client:
        bare = await client.post(fake.url + SEND_PATH, json=body)
    assert bare.status_code == 401
    assert bare.json()["error"]["status"] == "UNAUTHENTICATED"
    assert "details" not in bare.json()["error"]

    accepted = await _raw_send(fake, channel, body)
    assert accepted.status_code == 200
    assert accepted.json()["name"].startswith(f"projects/{PROJECT}/messages/0:")

    bearer = await _bearer(fake, channel)
    fake.expire_tokens()
    async with httpx.AsyncClient() as client:
        refused = await client.post(
            fake.url + SEND_PATH, json=body, headers={"Authorization": bearer}
        )
    assert refused.status_code == 401
    assert refused.json()["error"]["status"] == "UNAUTHENTICATED"
    assert "details" not in refused.json()["error"]


async def test_fake_http_control_endpoints(fake: FakeFCM, channel: FCMChannel) -> None:
    rule = {"status": 503, "body": FakeFCM.error("UNAVAILABLE").body}
    async with httpx.AsyncClient(base_url=fake.url) as control:
        set_rule = await control.post(
            "/__fake__/scenario", json={"token": device_token(1), "rule": rule}
        )
        assert set_rule.status_code == 200

        outcome = await send_one(channel)
        assert outcome.status.code == 90000010

        received = (await control.get("/__fake__/received")).json()
        assert [item["path"] for item in received] == ["/token", SEND_PATH]
        assert received[1]["body"]["message"]["token"] == device_token(1)

        assert (await control.delete("/__fake__/scenario")).status_code == 200
        assert (await control.delete("/__fake__/received")).status_code == 200
    assert (await send_one(channel)).status == ACKED
    assert len(fake.received.items) == 1
