"""OPPOChannel against FakeOPPO, over real loopback sockets."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import socket
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from openmps import statuses
from openmps.channels.base import ChannelConfig, Next, Outbound, Outcome
from openmps.channels.oppo import ANSWERS, OPPOChannel
from openmps.errors import ConfigError
from openmps.fakes.base import Received, Rule
from openmps.fakes.oppo import AUTH_PATH, UNICAST_BATCH_PATH, UNICAST_PATH, FakeOPPO
from openmps.statuses import ACKED, NONE, Action, Channel

APP_KEY = "test-oppo-app-key"
MASTER_SECRET = "test-oppo-master-secret-1234"

# Every OPPO row of the status table, with what the channel does after it (status-codes.md).
SEED_CASES: list[tuple[int, Next]] = [
    (-1, Next.RETRY),
    (-2, Next.RETRY),
    (11, Next.CONFIG),  # REAUTH: after one renewal the same answer is final
    (13, Next.RETRY),
    (14, Next.CONFIG),
    (15, Next.CONFIG),
    (16, Next.CONFIG),
    (17, Next.CONFIG),
    (28, Next.CONFIG),
    (29, Next.CONFIG),  # REAUTH, as 11
    (30, Next.CONFIG),
    (10000, Next.DROP_TOKEN),
]


@pytest.fixture
async def fake() -> AsyncIterator[FakeOPPO]:
    server = FakeOPPO(app_key=APP_KEY, master_secret=MASTER_SECRET)
    await server.start()
    yield server
    await server.stop()


def make_config(base_url: str, **values: Any) -> ChannelConfig:
    settings: dict[str, Any] = {"app_key": APP_KEY, "master_secret": MASTER_SECRET, **values}
    return ChannelConfig("oppo", settings, base_url, OPPOChannel.secret_keys)


@pytest.fixture
async def channel(fake: FakeOPPO) -> AsyncIterator[OPPOChannel]:
    built = OPPOChannel.create(make_config(fake.base_url))
    yield built
    await built.close()


def outbound(delivery_id: int = 1, token: str = "CN_0001aaaabbbbcccc", **changes: Any) -> Outbound:
    base = Outbound(
        delivery_id=delivery_id,
        token=token,
        title="订单已发货",
        content="您的订单已发货，请注意查收",
        extras={"order": "42"},
        expires_at=datetime.now(UTC) + timedelta(hours=2),
        msg_key=f"key-{delivery_id}",
        task_id=7,
    )
    return replace(base, **changes)


def sends(fake: FakeOPPO) -> list[Received]:
    return [item for item in fake.received.items if item.path != AUTH_PATH]


def auths(fake: FakeOPPO) -> list[Received]:
    return [item for item in fake.received.items if item.path == AUTH_PATH]


def form(item: Received) -> dict[str, str]:
    assert isinstance(item.body, dict)
    return item.body


def sent_message(item: Received) -> dict[str, Any]:
    message = json.loads(form(item)["message"])
    assert isinstance(message, dict)
    return message


def split_ttl(message: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    """The message without its off_line_ttl, and that TTL (seconds, drifts with the clock)."""
    notification = dict(message["notification"])
    ttl = notification.pop("off_line_ttl")
    assert isinstance(ttl, int)
    return {**message, "notification": notification}, ttl


# -- success: the exact requests --------------------------------------------------------------


async def test_send_one_signs_auth_and_posts_unicast(fake: FakeOPPO, channel: OPPOChannel) -> None:
    outcomes = await channel.send([outbound()])

    assert len(outcomes) == 1
    assert outcomes[0].delivery_id == 1
    assert outcomes[0].status == ACKED
    assert outcomes[0].next is Next.DONE
    assert outcomes[0].raw is not None and outcomes[0].raw.startswith("oppo messageId ")

    [auth] = auths(fake)
    auth_form = form(auth)
    assert set(auth_form) == {"app_key", "timestamp", "sign"}
    assert auth_form["app_key"] == APP_KEY
    expected_sign = hashlib.sha256(
        f"{APP_KEY}{auth_form['timestamp']}{MASTER_SECRET}".encode()
    ).hexdigest()
    assert auth_form["sign"] == expected_sign
    assert auth.headers["content-type"].startswith("application/x-www-form-urlencoded")

    [send] = sends(fake)
    assert send.path == UNICAST_PATH
    assert set(form(send)) == {"auth_token", "message"}
    assert form(send)["auth_token"] == fake.issued_tokens[0]
    message, ttl = split_ttl(sent_message(send))
    assert 7190 <= ttl <= 7200
    assert message == {
        "target_type": 2,
        "target_value": "CN_0001aaaabbbbcccc",
        "notification": {
            "app_message_id": "7-1",
            "style": 1,
            "title": "订单已发货",
            "content": "您的订单已发货，请注意查收",
            "off_line": True,
            "click_action_type": 0,
            "action_parameters": '{"order": "42"}',
        },
    }


async def test_send_batch_posts_unicast_batch_with_each_message(fake: FakeOPPO) -> None:
    config = make_config(fake.base_url, channel_id="orders", category="ORDER", notify_level="2")
    channel = OPPOChannel.create(config)
    batch = [
        outbound(1, "CN_a1"),
        outbound(2, "CN_b2", uri="https://example.test/o/2", push_action=0, extras={}),
        outbound(3, "CN_c3", uri="intent://orders#Intent;end", push_action=1, title="T3"),
    ]
    try:
        outcomes = await channel.send(batch)
    finally:
        await channel.close()

    assert sorted((o.delivery_id, o.status, o.next) for o in outcomes) == [
        (1, ACKED, Next.DONE),
        (2, ACKED, Next.DONE),
        (3, ACKED, Next.DONE),
    ]
    [send] = sends(fake)
    assert send.path == UNICAST_BATCH_PATH
    assert set(form(send)) == {"auth_token", "messages"}
    messages = [split_ttl(m)[0] for m in json.loads(form(send)["messages"])]
    shared = {"channel_id": "orders", "category": "ORDER", "notify_level": 2, "style": 1}
    assert messages == [
        {
            "target_type": 2,
            "target_value": "CN_a1",
            "notification": {
                **shared,
                "app_message_id": "7-1",
                "title": "订单已发货",
                "content": "您的订单已发货，请注意查收",
                "off_line": True,
                "click_action_type": 0,
                "action_parameters": '{"order": "42"}',
            },
        },
        {
            "target_type": 2,
            "target_value": "CN_b2",
            "notification": {
                **shared,
                "app_message_id": "7-2",
                "title": "订单已发货",
                "content": "您的订单已发货，请注意查收",
                "off_line": True,
                "click_action_type": 2,
                "click_action_url": "https://example.test/o/2",
            },
        },
        {
            "target_type": 2,
            "target_value": "CN_c3",
            "notification": {
                **shared,
                "app_message_id": "7-3",
                "title": "T3",
                "content": "您的订单已发货，请注意查收",
                "off_line": True,
                "click_action_type": 5,
                "click_action_url": "intent://orders#Intent;end",
                "action_parameters": '{"order": "42"}',
            },
        },
    ]


async def test_token_is_cached_across_sends(fake: FakeOPPO, channel: OPPOChannel) -> None:
    for delivery_id in range(1, 4):
        await channel.send([outbound(delivery_id)])

    assert len(auths(fake)) == 1
    assert channel.auth_fetches == 1
    assert len(sends(fake)) == 3


# -- every seed row -------------------------------------------------------------------------


def test_cases_cover_every_oppo_seed_row() -> None:
    assert sorted(code for code, _ in SEED_CASES) == sorted(
        s.code for s in statuses.by_channel(Channel.OPPO)
    )


def test_answer_table_follows_the_status_actions() -> None:
    expected = {
        Action.RETRY: Next.RETRY,
        Action.REAUTH: Next.CONFIG,  # what is left once the renewal did not help
        Action.CONFIG: Next.CONFIG,
        Action.DROP: Next.DROP_TOKEN,
        Action.MSG: Next.MESSAGE,
    }
    for status in statuses.by_channel(Channel.OPPO):
        verdict = ANSWERS[status.code]
        assert verdict.status == status
        assert verdict.next is expected[status.action]
        assert not verdict.proposal


@pytest.mark.parametrize(("code", "expected_next"), SEED_CASES)
async def test_every_seed_code_maps_to_its_status(
    fake: FakeOPPO, channel: OPPOChannel, code: int, expected_next: Next
) -> None:
    fake.scenario.set(FakeOPPO.error(code), token="CN_0001aaaabbbbcccc")

    [outcome] = await channel.send([outbound()])

    assert outcome.delivery_id == 1
    assert outcome.status == statuses.get(Channel.OPPO, code)
    assert outcome.next is expected_next
    assert outcome.raw is not None and outcome.raw.startswith(f"oppo code {code}")
    if code in (11, 29):
        # One renewal, one more send, then final.
        assert channel.auth_fetches == 2
        assert len(sends(fake)) == 2
        assert outcome.raw.endswith("(again after renewing the auth token)")
    else:
        assert channel.auth_fetches == 1
        assert len(sends(fake)) == 1


# -- batches ----------------------------------------------------------------------------------


async def test_partial_batch_failure_goes_to_its_target_only(
    fake: FakeOPPO, channel: OPPOChannel
) -> None:
    fake.scenario.set(FakeOPPO.error(10000), token="CN_bad")
    batch = [outbound(1, "CN_good1"), outbound(2, "CN_bad"), outbound(3, "CN_good3")]

    outcomes = {o.delivery_id: o for o in await channel.send(batch)}

    assert outcomes[1].status == ACKED and outcomes[1].next is Next.DONE
    assert outcomes[3].status == ACKED and outcomes[3].next is Next.DONE
    assert outcomes[2].status == statuses.get(Channel.OPPO, 10000)
    assert outcomes[2].next is Next.DROP_TOKEN
    assert outcomes[2].raw == "oppo errorCode 10000: Invalid Registration_id"


async def test_same_device_twice_in_a_batch_gets_both_outcomes(
    fake: FakeOPPO, channel: OPPOChannel
) -> None:
    batch = [outbound(1, "CN_same"), outbound(2, "CN_same", title="second")]

    outcomes = await channel.send(batch)

    assert sorted((o.delivery_id, o.next) for o in outcomes) == [(1, Next.DONE), (2, Next.DONE)]


async def test_batch_wide_answer_applies_to_every_delivery(
    fake: FakeOPPO, channel: OPPOChannel
) -> None:
    fake.scenario.set(FakeOPPO.error(-2), token="CN_b")

    outcomes = await channel.send([outbound(1, "CN_a"), outbound(2, "CN_b")])

    assert sorted((o.delivery_id, o.status.code, o.next) for o in outcomes) == [
        (1, -2, Next.RETRY),
        (2, -2, Next.RETRY),
    ]
    assert all(o.status.channel is Channel.OPPO for o in outcomes)


# -- answers outside the seed ------------------------------------------------------------------


async def test_unmapped_code_is_none_with_raw_kept(fake: FakeOPPO, channel: OPPOChannel) -> None:
    fake.scenario.set(FakeOPPO.error(987, "Something New"))

    [outcome] = await channel.send([outbound()])

    assert outcome == Outcome(1, NONE, Next.MESSAGE, "oppo code 987: Something New", None)


async def test_proposal_daily_quota_waits_for_the_next_day(
    fake: FakeOPPO, channel: OPPOChannel
) -> None:
    fake.scenario.set(FakeOPPO.error(33))

    [outcome] = await channel.send([outbound()])

    assert outcome.status == NONE
    assert outcome.next is Next.RETRY
    assert outcome.raw is not None and outcome.raw.startswith("oppo code 33")
    assert "PROPOSAL" in outcome.raw
    china = datetime.now(UTC) + timedelta(hours=8)
    midnight = (china + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    assert outcome.retry_after_s == pytest.approx((midnight - china).total_seconds(), abs=5)


async def test_http_5xx_is_service_unavailable_with_retry_after(
    fake: FakeOPPO, channel: OPPOChannel
) -> None:
    fake.scenario.set(Rule(status=503, body="overloaded", headers={"Retry-After": "30"}))

    [outcome] = await channel.send([outbound()])

    assert outcome.status == statuses.get(Channel.OPPO, -1)
    assert outcome.next is Next.RETRY
    assert outcome.retry_after_s == 30.0
    assert outcome.raw == "HTTP 503: overloaded"


async def test_unreadable_answer_is_none(fake: FakeOPPO, channel: OPPOChannel) -> None:
    fake.scenario.set(Rule(status=200, body="<html>maintenance</html>"))

    [outcome] = await channel.send([outbound()])

    assert outcome.status == NONE
    assert outcome.next is Next.MESSAGE
    assert outcome.raw == "unreadable oppo answer: <html>maintenance</html>"


async def test_device_token_is_masked_in_raw(fake: FakeOPPO, channel: OPPOChannel) -> None:
    token = "CN_0001aaaabbbbcccc"
    fake.scenario.set(FakeOPPO.error(10000, f"registration_id {token} is malformed"), token=token)

    [outcome] = await channel.send([outbound(token=token)])

    assert outcome.raw == "oppo code 10000: registration_id ...cccc is malformed"


# -- auth ---------------------------------------------------------------------------------------


async def test_auth_expiry_renews_once_under_50_concurrent_sends(
    fake: FakeOPPO, channel: OPPOChannel
) -> None:
    await channel.send([outbound(0)])  # a cached token to expire
    fake.scenario.set(Rule(action="expire_auth", times=1))

    results = await asyncio.gather(
        *(channel.send([outbound(i, f"CN_device{i:04d}")]) for i in range(1, 51))
    )

    outcomes = [outcome for result in results for outcome in result]
    assert len(outcomes) == 50
    assert all(o.status == ACKED and o.next is Next.DONE for o in outcomes)
    assert channel.auth_fetches == 2
    assert len(auths(fake)) == 2
    assert len(sends(fake)) == 1 + 50 + 50  # warm-up, refused, sent again
    first, renewed = fake.issued_tokens
    used = Counter(form(s)["auth_token"] for s in sends(fake))
    assert used == {first: 51, renewed: 50}


async def test_wrong_master_secret_is_invalid_signature(fake: FakeOPPO) -> None:
    channel = OPPOChannel.create(make_config(fake.base_url, master_secret="wrong-secret"))
    try:
        outcomes = await asyncio.gather(*(channel.send([outbound(i)]) for i in range(1, 11)))
    finally:
        await channel.close()

    for [outcome] in outcomes:
        assert outcome.status == statuses.get(Channel.OPPO, 16)
        assert outcome.next is Next.CONFIG
        assert outcome.raw == "oppo auth: oppo code 16: Invalid Signature"
    assert len(auths(fake)) == 1  # the waiting sends shared the refusal
    assert sends(fake) == []


async def test_unreachable_auth_endpoint_is_service_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    channel = OPPOChannel.create(make_config(f"http://127.0.0.1:{port}"))
    try:
        [outcome] = await channel.send([outbound()])
    finally:
        await channel.close()

    assert outcome.status == statuses.get(Channel.OPPO, -1)
    assert outcome.next is Next.RETRY
    assert outcome.raw == "oppo auth: no answer: ConnectError"


async def test_no_secret_or_full_token_in_logs(
    fake: FakeOPPO, channel: OPPOChannel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.scenario.set(Rule(action="expire_auth", times=1))

    await channel.send([outbound()])

    assert len(fake.issued_tokens) == 2
    assert caplog.records, "the renewal is logged"
    for token in fake.issued_tokens:
        assert token not in caplog.text
    assert MASTER_SECRET not in caplog.text
    assert MASTER_SECRET not in repr(channel)
    assert MASTER_SECRET not in repr(make_config(fake.base_url))


# -- limits checked before sending ------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"title": "t" * 51}, "title has 51 characters, oppo allows 50 (41)"),
        ({"title": "  "}, "title is empty (oppo code 40)"),
        ({"content": "内" * 201}, "content has 201 characters, oppo allows 200 (41)"),
        ({"content": ""}, "content is empty (oppo code 40)"),
        (
            {"extras": {"k": "v" * 3992}},
            "extras take 4001 characters as action_parameters, oppo allows 4000 (41)",
        ),
        ({"uri": "https://e.test/" + "a" * 1986}, "uri has 2001 characters, oppo allows 2000 (41)"),
        (
            {"silent": True},
            "oppo sends notifications only; a silent message goes through the own channel",
        ),
    ],
)
async def test_limits_are_checked_before_sending(
    fake: FakeOPPO, channel: OPPOChannel, changes: dict[str, Any], why: str
) -> None:
    [outcome] = await channel.send([outbound(**changes)])

    assert outcome == Outcome(1, NONE, Next.MESSAGE, f"checked before sending: {why}", None)
    assert list(fake.received.items) == []  # not even an auth call


async def test_largest_allowed_fields_are_sent(fake: FakeOPPO, channel: OPPOChannel) -> None:
    largest = outbound(title="t" * 50, content="内" * 200, extras={"k": "v" * 3991})

    [outcome] = await channel.send([largest])

    assert outcome.next is Next.DONE
    notification = sent_message(sends(fake)[0])["notification"]
    assert len(notification["action_parameters"]) == 4000


async def test_checked_and_sent_deliveries_share_a_batch(
    fake: FakeOPPO, channel: OPPOChannel
) -> None:
    outcomes = await channel.send([outbound(1, "CN_a"), outbound(2, "CN_b", title="t" * 60)])

    assert sorted((o.delivery_id, o.status, o.next) for o in outcomes) == [
        (1, ACKED, Next.DONE),
        (2, NONE, Next.MESSAGE),
    ]
    [send] = sends(fake)
    assert send.path == UNICAST_PATH


# -- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"app_key": ""}, "'app_key' is missing"),
        ({"master_secret": None}, "'master_secret' is missing"),
        ({"app_secret": "x"}, "unknown setting 'app_secret'"),
        ({"category": "GAMES"}, "'category' must be one of"),
        ({"notify_level": "3"}, "'notify_level' must be 1, 2 or 16"),
        ({"master_secret": " padded "}, "'master_secret' must be text without outer spaces"),
    ],
)
def test_config_errors_name_the_key(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        OPPOChannel.create(make_config("http://127.0.0.1:9", **values))


def test_secret_keys_and_limits() -> None:
    assert OPPOChannel.name == "oppo"
    assert OPPOChannel.max_batch == 1000
    assert OPPOChannel.secret_keys == frozenset({"master_secret"})


# -- the fake on its own ----------------------------------------------------------------------


async def test_fake_refuses_what_oppo_refuses(fake: FakeOPPO) -> None:
    async with httpx.AsyncClient(base_url=fake.base_url) as http:

        async def unicast(token: str, notification: dict[str, Any]) -> Any:
            message = {"target_type": 2, "target_value": "CN_x", "notification": notification}
            data = {"auth_token": token, "message": json.dumps(message)}
            return (await http.post(UNICAST_PATH, data=data)).json()

        timestamp = str(int(datetime.now(UTC).timestamp() * 1000))
        auth = await http.post(
            AUTH_PATH,
            data={"app_key": APP_KEY, "timestamp": timestamp, "sign": fake.sign(timestamp)},
        )
        token = auth.json()["data"]["auth_token"]
        ok = {"title": "t", "content": "c"}

        assert (await unicast("", ok))["code"] == 29
        assert (await unicast("nope", ok))["code"] == 11
        assert (await unicast(token, {"title": "t" * 51, "content": "c"}))["code"] == 41
        assert (await unicast(token, {"title": "t", "content": "c" * 201}))["code"] == 41
        assert (await unicast(token, {"title": "t"}))["code"] == 40
        assert (await unicast(token, {**ok, "clickActionType": 2}))["code"] == 40
        assert (await unicast(token, {**ok, "category": "GAMES"}))["code"] == 67
        assert (await unicast(token, ok))["code"] == 0
        bad_sign = {"app_key": APP_KEY, "timestamp": timestamp, "sign": "0" * 64}
        assert (await http.post(AUTH_PATH, data=bad_sign)).json()["code"] == 16
        assert (await http.post(AUTH_PATH, data={"app_key": "other"})).json()["code"] == 14


async def test_fake_control_endpoints(fake: FakeOPPO, channel: OPPOChannel) -> None:
    async with httpx.AsyncClient(base_url=fake.base_url) as http:
        rule = {"status": 200, "body": {"code": 13, "message": "App Call Limited"}}
        answer = await http.post("/__fake__/scenario", json={"token": "CN_x", "rule": rule})
        assert answer.status_code == 200

        [outcome] = await channel.send([outbound(token="CN_x")])
        assert outcome.status == statuses.get(Channel.OPPO, 13)

        received = (await http.get("/__fake__/received")).json()
        assert [item["path"] for item in received] == [AUTH_PATH, UNICAST_PATH]
        await http.delete("/__fake__/received")
        await http.delete("/__fake__/scenario")

        [outcome] = await channel.send([outbound(2, token="CN_x")])
        assert outcome.next is Next.DONE
        assert [item["path"] for item in (await http.get("/__fake__/received")).json()] == [
            UNICAST_PATH
        ]
