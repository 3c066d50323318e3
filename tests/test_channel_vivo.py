"""VivoChannel against FakeVivo, over real loopback sockets."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from openmps import statuses
from openmps.channels.base import ChannelConfig, Next, Outbound, Outcome
from openmps.channels.vivo import ANSWERS, VivoChannel
from openmps.errors import ConfigError
from openmps.fakes.base import Received, Rule
from openmps.fakes.vivo import (
    AUTH_PATH,
    PUSH_TO_LIST_PATH,
    SAVE_LIST_PAYLOAD_PATH,
    SEND_PATH,
    FakeVivo,
)
from openmps.statuses import ACKED, NONE, Action, Channel

APP_ID = 10004
APP_KEY = "test-vivo-app-key"
APP_SECRET = "test-vivo-app-secret-5678"
TOKEN = "12345678901234567890123"  # vivo regIds are 23 characters

# Every vivo row of the status table, with what the channel does after it (status-codes.md).
SEED_CASES: list[tuple[int, Next]] = [
    (10000, Next.CONFIG),  # REAUTH: after one renewal the same answer is final
    (10040, Next.RETRY),
    (10050, Next.MESSAGE),
    (10055, Next.MESSAGE),
    (10056, Next.MESSAGE),
    (10058, Next.MESSAGE),
    (10066, Next.MESSAGE),
    (10067, Next.MESSAGE),
    (10070, Next.RETRY),
    (10071, Next.RETRY),
    (10072, Next.RETRY),
    (10101, Next.MESSAGE),
    (10102, Next.RETRY),
    (10103, Next.MESSAGE),
    (10110, Next.CONFIG),
    (10302, Next.DROP_TOKEN),
    (10303, Next.MESSAGE),
    (10104, Next.MESSAGE),
]


@pytest.fixture
async def fake() -> AsyncIterator[FakeVivo]:
    server = FakeVivo(app_id=APP_ID, app_key=APP_KEY, app_secret=APP_SECRET)
    await server.start()
    yield server
    await server.stop()


def make_config(base_url: str, **values: Any) -> ChannelConfig:
    settings: dict[str, Any] = {
        "app_id": str(APP_ID),
        "app_key": APP_KEY,
        "app_secret": APP_SECRET,
        **values,
    }
    return ChannelConfig("vivo", settings, base_url, VivoChannel.secret_keys)


@pytest.fixture
async def channel(fake: FakeVivo) -> AsyncIterator[VivoChannel]:
    built = VivoChannel.create(make_config(fake.base_url))
    yield built
    await built.close()


def outbound(delivery_id: int = 1, token: str = TOKEN, **changes: Any) -> Outbound:
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


def sends(fake: FakeVivo) -> list[Received]:
    return [item for item in fake.received.items if item.path != AUTH_PATH]


def auths(fake: FakeVivo) -> list[Received]:
    return [item for item in fake.received.items if item.path == AUTH_PATH]


def body(item: Received) -> dict[str, Any]:
    assert isinstance(item.body, dict)
    return item.body


def without_ttl(sent: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The body without timeToLive, and that TTL (seconds, drifts with the clock)."""
    rest = dict(sent)
    ttl = rest.pop("timeToLive")
    assert isinstance(ttl, int)
    return rest, ttl


def seconds_until_china(hour: int) -> float:
    now = datetime.now(UTC) + timedelta(hours=8)
    at = now.replace(hour=hour, minute=0, second=0, microsecond=0)
    if at <= now:
        at += timedelta(days=1)
    return (at - now).total_seconds()


NOTIFICATION = {
    "notifyType": 4,
    "title": "订单已发货",
    "content": "您的订单已发货，请注意查收",
    "networkType": -1,
    "classification": 1,
    "pushMode": 0,
    "skipType": 1,
    "clientCustomMap": {"order": "42"},
}


# -- success: the exact requests --------------------------------------------------------------


async def test_send_one_signs_auth_and_posts_send(fake: FakeVivo, channel: VivoChannel) -> None:
    outcomes = await channel.send([outbound()])

    assert len(outcomes) == 1
    assert outcomes[0].delivery_id == 1
    assert outcomes[0].status == ACKED
    assert outcomes[0].next is Next.DONE
    assert outcomes[0].raw is not None and outcomes[0].raw.startswith("vivo taskId ")

    [auth] = auths(fake)
    timestamp = body(auth)["timestamp"]
    sign = hashlib.md5(f"{APP_ID}{APP_KEY}{timestamp}{APP_SECRET}".encode()).hexdigest()
    assert body(auth) == {"appId": APP_ID, "appKey": APP_KEY, "timestamp": timestamp, "sign": sign}
    assert auth.headers["content-type"] == "application/json"

    [send] = sends(fake)
    assert send.path == SEND_PATH
    assert send.headers["authtoken"] == fake.issued_tokens[0]
    sent, ttl = without_ttl(body(send))
    assert 7190 <= ttl <= 7200
    assert sent == {"appId": APP_ID, "regId": TOKEN, **NOTIFICATION, "requestId": "mps-7-1"}


async def test_same_notification_goes_as_one_list_push(fake: FakeVivo) -> None:
    config = make_config(fake.base_url, classification="0", notify_type="2")
    channel = VivoChannel.create(config)
    batch = [
        outbound(1, "regid-a"),
        outbound(2, "regid-b"),
        outbound(3, "regid-c", uri="https://example.test/o/3", extras={}),
        outbound(4, "regid-d", uri="intent://orders#Intent;end", push_action=1, extras={}),
    ]
    try:
        outcomes = await channel.send(batch)
    finally:
        await channel.close()

    assert sorted((o.delivery_id, o.status, o.next) for o in outcomes) == [
        (i, ACKED, Next.DONE) for i in (1, 2, 3, 4)
    ]
    by_path: dict[str, list[dict[str, Any]]] = {}
    for item in sends(fake):
        by_path.setdefault(item.path, []).append(body(item))
    assert sorted(by_path) == [PUSH_TO_LIST_PATH, SAVE_LIST_PAYLOAD_PATH, SEND_PATH]

    settings = {"classification": 0, "notifyType": 2}
    [payload] = by_path[SAVE_LIST_PAYLOAD_PATH]
    assert without_ttl(payload)[0] == {"appId": APP_ID, **NOTIFICATION, **settings}
    [push] = by_path[PUSH_TO_LIST_PATH]
    assert set(push) == {"appId", "regIds", "taskId", "requestId"}
    assert push["appId"] == APP_ID
    assert push["regIds"] == ["regid-a", "regid-b"]
    assert push["requestId"].startswith("mps-7-l")
    assert len(push["requestId"]) <= 64

    singles = sorted((without_ttl(b)[0] for b in by_path[SEND_PATH]), key=lambda b: b["regId"])
    common = {k: v for k, v in NOTIFICATION.items() if k != "clientCustomMap"}
    assert singles == [
        {
            "appId": APP_ID,
            "regId": "regid-c",
            **common,
            **settings,
            "skipType": 2,
            "skipContent": "https://example.test/o/3",
            "requestId": "mps-7-3",
        },
        {
            "appId": APP_ID,
            "regId": "regid-d",
            **common,
            **settings,
            "skipType": 4,
            "skipContent": "intent://orders#Intent;end",
            "requestId": "mps-7-4",
        },
    ]


async def test_token_is_cached_across_sends(fake: FakeVivo, channel: VivoChannel) -> None:
    for delivery_id in range(1, 4):
        await channel.send([outbound(delivery_id)])

    assert len(auths(fake)) == 1
    assert channel.auth_fetches == 1


# -- every seed row -------------------------------------------------------------------------


def test_cases_cover_every_vivo_seed_row() -> None:
    assert sorted(code for code, _ in SEED_CASES) == sorted(
        s.code for s in statuses.by_channel(Channel.VIVO)
    )


def test_answer_table_follows_the_status_actions() -> None:
    expected = {
        Action.RETRY: Next.RETRY,
        Action.REAUTH: Next.CONFIG,  # what is left once the renewal did not help
        Action.CONFIG: Next.CONFIG,
        Action.DROP: Next.DROP_TOKEN,
        Action.MSG: Next.MESSAGE,
    }
    for status in statuses.by_channel(Channel.VIVO):
        verdict = ANSWERS[status.code]
        assert verdict.status == status
        assert verdict.next is expected[status.action]
        assert not verdict.proposal


@pytest.mark.parametrize("mode", ["send", "list"])
@pytest.mark.parametrize(("code", "expected_next"), SEED_CASES)
async def test_every_seed_code_maps_to_its_status(
    fake: FakeVivo, channel: VivoChannel, code: int, expected_next: Next, mode: str
) -> None:
    fake.scenario.set(FakeVivo.error(code))
    batch = [outbound(1, "regid-a")] if mode == "send" else [outbound(1, "regid-a"), outbound(2)]

    outcomes = await channel.send(batch)

    assert len(outcomes) == len(batch)
    for outcome in outcomes:
        assert outcome.status == statuses.get(Channel.VIVO, code)
        assert outcome.next is expected_next
        assert outcome.raw is not None
        if mode == "list" and code == 10302:
            assert outcome.raw == "vivo invalidUser status 1"  # the fake names each regId
        else:
            assert outcome.raw.startswith(f"vivo result {code}: ")
    pushes = [s for s in sends(fake) if s.path != SAVE_LIST_PAYLOAD_PATH]
    if code == 10000:
        # One renewal, one more send (a list keeps its saved payload), then final.
        assert channel.auth_fetches == 2
        assert len(pushes) == 2
        assert outcomes[0].raw is not None
        assert outcomes[0].raw.endswith("(again after renewing the auth token)")
    else:
        assert channel.auth_fetches == 1
        assert len(pushes) == 1


async def test_daily_total_waits_for_midnight_china(fake: FakeVivo, channel: VivoChannel) -> None:
    fake.scenario.set(FakeVivo.error(10070))

    [outcome] = await channel.send([outbound()])

    assert outcome.retry_after_s == pytest.approx(seconds_until_china(0), abs=5)


async def test_sending_hours_wait_for_seven_china(fake: FakeVivo, channel: VivoChannel) -> None:
    fake.scenario.set(FakeVivo.error(10071))

    [outcome] = await channel.send([outbound()])

    assert outcome.retry_after_s == pytest.approx(seconds_until_china(7), abs=5)


# -- partial results ----------------------------------------------------------------------------


async def test_partial_list_failure_goes_to_its_targets_only(
    fake: FakeVivo, channel: VivoChannel
) -> None:
    fake.scenario.set(FakeVivo.invalid_user(1), token="regid-gone")
    fake.scenario.set(FakeVivo.invalid_user(2), token="regid-off")
    fake.scenario.set(FakeVivo.invalid_user(3), token="regid-idle")
    fake.scenario.set(FakeVivo.invalid_user(4), token="regid-notest")
    tokens = ["regid-ok1", "regid-gone", "regid-off", "regid-idle", "regid-notest", "regid-ok2"]

    outcomes = {
        o.delivery_id: o
        for o in await channel.send([outbound(i, token) for i, token in enumerate(tokens, 1)])
    }

    dropped = statuses.get(Channel.VIVO, 10302)
    assert outcomes[1].status == ACKED and outcomes[1].next is Next.DONE
    assert outcomes[6].status == ACKED and outcomes[6].next is Next.DONE
    assert outcomes[2] == Outcome(2, dropped, Next.DROP_TOKEN, "vivo invalidUser status 1")
    assert outcomes[4] == Outcome(4, dropped, Next.DROP_TOKEN, "vivo invalidUser status 3")
    proposal = "(PROPOSAL code, not in the status table yet)"
    assert outcomes[3] == Outcome(3, NONE, Next.MESSAGE, f"vivo invalidUser status 2 {proposal}")
    assert outcomes[5] == Outcome(5, NONE, Next.MESSAGE, f"vivo invalidUser status 4 {proposal}")


async def test_invalid_user_on_single_send(fake: FakeVivo, channel: VivoChannel) -> None:
    fake.scenario.set(FakeVivo.invalid_user(1), token=TOKEN)

    [outcome] = await channel.send([outbound()])

    assert outcome == Outcome(
        1, statuses.get(Channel.VIVO, 10302), Next.DROP_TOKEN, "vivo invalidUser status 1"
    )


async def test_list_wide_answer_applies_to_every_delivery(
    fake: FakeVivo, channel: VivoChannel
) -> None:
    fake.scenario.set(FakeVivo.error(10072), token="regid-b")

    outcomes = await channel.send([outbound(1, "regid-a"), outbound(2, "regid-b")])

    assert sorted((o.delivery_id, o.status.code, o.next) for o in outcomes) == [
        (1, 10072, Next.RETRY),
        (2, 10072, Next.RETRY),
    ]


# -- requestId ----------------------------------------------------------------------------------


async def test_resending_an_accepted_delivery_gets_10303(
    fake: FakeVivo, channel: VivoChannel
) -> None:
    # A resend after a lost answer reuses the requestId: 10303 says the first one was taken.
    [first] = await channel.send([outbound()])
    [second] = await channel.send([outbound()])

    assert first.next is Next.DONE
    assert second.status == statuses.get(Channel.VIVO, 10303)
    assert second.next is Next.MESSAGE
    assert [body(s)["requestId"] for s in sends(fake)] == ["mps-7-1", "mps-7-1"]


async def test_a_refused_request_gets_a_new_request_id_next_time(
    fake: FakeVivo, channel: VivoChannel
) -> None:
    fake.scenario.set(Rule(status=200, body={"result": 10072, "desc": "slow down"}, times=1))

    [refused] = await channel.send([outbound()])
    [accepted] = await channel.send([outbound()])

    assert refused.next is Next.RETRY
    assert accepted.next is Next.DONE
    assert [body(s)["requestId"] for s in sends(fake)] == ["mps-7-1", "mps-7-1.1"]


# -- answers outside the seed ------------------------------------------------------------------


async def test_unmapped_result_is_none_with_raw_kept(fake: FakeVivo, channel: VivoChannel) -> None:
    fake.scenario.set(FakeVivo.error(19999, "新的错误"))

    [outcome] = await channel.send([outbound()])

    assert outcome == Outcome(1, NONE, Next.MESSAGE, "vivo result 19999: 新的错误", None)


async def test_http_500_is_server_exception(fake: FakeVivo, channel: VivoChannel) -> None:
    fake.scenario.set(Rule(status=500, body="oops", headers={"Retry-After": "12"}))

    [outcome] = await channel.send([outbound()])

    assert outcome == Outcome(
        1, statuses.get(Channel.VIVO, 10102), Next.RETRY, "HTTP 500: oops", 12.0
    )


async def test_delay_beyond_the_timeout_is_no_answer(fake: FakeVivo) -> None:
    async with httpx.AsyncClient(timeout=0.2) as http:
        channel = VivoChannel.create(make_config(fake.base_url), http)
        await channel.send([outbound(1)])  # auth first, without delay
        fake.scenario.set(Rule(delay_s=1.0, times=1))

        [outcome] = await channel.send([outbound(2)])

    assert outcome == Outcome(
        2, statuses.get(Channel.VIVO, 10102), Next.RETRY, "no answer from vivo: ReadTimeout"
    )


# -- auth ---------------------------------------------------------------------------------------


async def test_auth_expiry_renews_once_under_50_concurrent_sends(
    fake: FakeVivo, channel: VivoChannel
) -> None:
    await channel.send([outbound(0)])  # a cached token to expire
    fake.scenario.set(Rule(action="expire_auth", times=1))

    results = await asyncio.gather(
        *(channel.send([outbound(i, f"regid-{i:04d}")]) for i in range(1, 51))
    )

    outcomes = [outcome for result in results for outcome in result]
    assert len(outcomes) == 50
    assert all(o.status == ACKED and o.next is Next.DONE for o in outcomes)
    assert channel.auth_fetches == 2
    assert len(auths(fake)) == 2
    first, renewed = fake.issued_tokens
    used = Counter(s.headers["authtoken"] for s in sends(fake))
    assert used == {first: 51, renewed: 50}


async def test_wrong_app_secret_is_refused_by_auth(fake: FakeVivo) -> None:
    channel = VivoChannel.create(make_config(fake.base_url, app_secret="wrong-secret"))
    try:
        outcomes = await asyncio.gather(*(channel.send([outbound(i)]) for i in range(1, 11)))
    finally:
        await channel.close()

    for [outcome] in outcomes:
        # 10203 is the fake's sign code; vivo's own auth codes past 10201 are unpublished.
        assert outcome.status == NONE
        assert outcome.next is Next.CONFIG
        assert outcome.raw is not None
        assert outcome.raw.startswith("vivo auth: vivo result 10203: ")
    assert len(auths(fake)) == 1  # the waiting sends shared the refusal
    assert sends(fake) == []


async def test_unreachable_auth_endpoint_is_server_exception() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    channel = VivoChannel.create(make_config(f"http://127.0.0.1:{port}"))
    try:
        [outcome] = await channel.send([outbound()])
    finally:
        await channel.close()

    assert outcome == Outcome(
        1, statuses.get(Channel.VIVO, 10102), Next.RETRY, "vivo auth: no answer: ConnectError"
    )


async def test_no_secret_or_full_token_in_logs(
    fake: FakeVivo, channel: VivoChannel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.scenario.set(Rule(action="expire_auth", times=1))

    await channel.send([outbound()])

    assert len(fake.issued_tokens) == 2
    assert caplog.records, "the renewal is logged"
    for token in fake.issued_tokens:
        assert token not in caplog.text
    assert APP_SECRET not in caplog.text
    assert APP_SECRET not in repr(channel)
    assert APP_SECRET not in repr(make_config(fake.base_url))


# -- limits checked before sending ------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "code", "why"),
    [
        ({"title": "t" * 41}, 10056, "title is 41 wide (CJK counts 2), vivo allows 40"),
        ({"title": "订" * 21}, 10056, "title is 42 wide (CJK counts 2), vivo allows 40"),
        ({"title": " "}, 10055, "title is empty"),
        ({"content": "c " * 51}, 10058, "content is 102 wide (CJK counts 2), vivo allows 100"),
        ({"content": "货" * 51}, 10058, "content is 102 wide (CJK counts 2), vivo allows 100"),
        (
            {"extras": {f"k{i}": "v" for i in range(11)}},
            10066,
            "11 custom pairs, vivo allows 10",
        ),
        (
            {"extras": {"k": "v" * 1024}},
            10067,
            "custom pairs take 1025 characters, vivo allows 1024",
        ),
        (
            {"content": "12345"},
            10104,
            "content looks like test content (only digits, letters or symbols, or test)",
        ),
        (
            {"content": "这是一个Test消息"},
            10104,
            "content looks like test content (only digits, letters or symbols, or test)",
        ),
        (
            {"content": "订单[已发货]"},
            10104,
            "content looks like test content (only digits, letters or symbols, or test)",
        ),
    ],
)
async def test_limits_are_checked_before_sending_with_vivos_code(
    fake: FakeVivo, channel: VivoChannel, changes: dict[str, Any], code: int, why: str
) -> None:
    [outcome] = await channel.send([outbound(**changes)])

    expected = f"checked before sending: {why} (vivo result {code})"
    assert outcome == Outcome(1, statuses.get(Channel.VIVO, code), Next.MESSAGE, expected, None)
    assert list(fake.received.items) == []  # not even an auth call


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"content": ""}, "content is empty; vivo refuses it (no status-table code for it)"),
        (
            {"uri": "https://e.test/" + "a" * 986},
            "uri has 1001 characters, vivo allows 1000",
        ),
        (
            {"silent": True},
            "vivo sends notifications only; a silent message goes through the own channel",
        ),
    ],
)
async def test_limits_without_a_seed_code_are_none(
    fake: FakeVivo, channel: VivoChannel, changes: dict[str, Any], why: str
) -> None:
    [outcome] = await channel.send([outbound(**changes)])

    assert outcome == Outcome(1, NONE, Next.MESSAGE, f"checked before sending: {why}", None)
    assert list(fake.received.items) == []


async def test_largest_allowed_fields_are_sent(fake: FakeVivo, channel: VivoChannel) -> None:
    largest = outbound(
        title="订" * 20,
        content="货" * 50,
        extras={f"k{i}": "v" * 100 for i in range(10)},  # 10 pairs, 1020 characters
    )

    [outcome] = await channel.send([largest])

    assert outcome.next is Next.DONE


async def test_english_sentences_are_not_test_content(fake: FakeVivo, channel: VivoChannel) -> None:
    [outcome] = await channel.send([outbound(title="Shipped", content="Your order has shipped")])

    assert outcome.next is Next.DONE


# -- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"app_id": ""}, "'app_id' is missing"),
        ({"app_id": "vivo-10004"}, "'app_id' must be a number"),
        ({"app_key": None}, "'app_key' is missing"),
        ({"app_secret": ""}, "'app_secret' is missing"),
        ({"master_secret": "x"}, "unknown setting 'master_secret'"),
        ({"classification": "2"}, "'classification' must be one of 0, 1"),
        ({"notify_type": "5"}, "'notify_type' must be one of 1, 2, 3, 4"),
    ],
)
def test_config_errors_name_the_key(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        VivoChannel.create(make_config("http://127.0.0.1:9", **values))


def test_app_id_may_be_a_number() -> None:
    channel = VivoChannel.create(make_config("http://127.0.0.1:9", app_id=APP_ID))
    assert repr(channel) == "VivoChannel(app_id=10004, base_url='http://127.0.0.1:9')"


def test_secret_keys_and_limits() -> None:
    assert VivoChannel.name == "vivo"
    assert VivoChannel.max_batch == 1000
    assert VivoChannel.secret_keys == frozenset({"app_secret"})


# -- the fake on its own ----------------------------------------------------------------------


async def test_fake_refuses_what_vivo_refuses(fake: FakeVivo) -> None:
    async with httpx.AsyncClient(base_url=fake.base_url) as http:
        timestamp = int(datetime.now(UTC).timestamp() * 1000)
        auth = await http.post(
            AUTH_PATH,
            json={
                "appId": APP_ID,
                "appKey": APP_KEY,
                "timestamp": timestamp,
                "sign": fake.sign(timestamp),
            },
        )
        token = auth.json()["authToken"]
        request_ids = iter(range(100))

        async def send(fields: dict[str, Any], auth_token: str = token) -> int:
            message = {
                "appId": APP_ID,
                "regId": TOKEN,
                "notifyType": 1,
                "title": "标题",
                "content": "内容",
                "skipType": 1,
                "requestId": f"r{next(request_ids)}",
                **fields,
            }
            answer = await http.post(SEND_PATH, json=message, headers={"authToken": auth_token})
            result = answer.json()["result"]
            assert isinstance(result, int)
            return result

        assert await send({}, auth_token="nope") == 10000
        assert await send({"appId": 1}) == 10094
        assert await send({"regId": ""}) == 10050
        assert await send({"title": ""}) == 10055
        assert await send({"title": "t" * 41}) == 10056
        assert await send({"title": "订" * 21}) == 10056
        assert await send({"content": "c " * 51}) == 10058
        assert await send({"clientCustomMap": {f"k{i}": "v" for i in range(11)}}) == 10066
        assert await send({"clientCustomMap": {"k": 1}}) == 10067
        assert await send({"content": "test"}) == 10104
        assert await send({"content": "123 456"}) == 10104
        assert await send({"content": "hello"}) == 10104
        assert await send({"content": "hello", "pushMode": 1}) == 0
        assert await send({"requestId": "same"}) == 0
        assert await send({"requestId": "same"}) == 10303
        bad = {"appId": APP_ID, "appKey": APP_KEY, "timestamp": timestamp, "sign": "0" * 32}
        assert (await http.post(AUTH_PATH, json=bad)).json()["result"] == 10203
        empty = {"appId": APP_ID, "appKey": "", "timestamp": timestamp, "sign": "0" * 32}
        assert (await http.post(AUTH_PATH, json=empty)).json()["result"] == 10201


async def test_fake_control_endpoints(fake: FakeVivo, channel: VivoChannel) -> None:
    async with httpx.AsyncClient(base_url=fake.base_url) as http:
        rule = {"status": 200, "body": {"result": 10040, "desc": "limit"}}
        answer = await http.post("/__fake__/scenario", json={"token": TOKEN, "rule": rule})
        assert answer.status_code == 200

        [outcome] = await channel.send([outbound()])
        assert outcome.status == statuses.get(Channel.VIVO, 10040)

        received = (await http.get("/__fake__/received")).json()
        assert [item["path"] for item in received] == [AUTH_PATH, SEND_PATH]
        await http.delete("/__fake__/received")
        await http.delete("/__fake__/scenario")

        [outcome] = await channel.send([outbound(2)])
        assert outcome.next is Next.DONE
        assert [item["path"] for item in (await http.get("/__fake__/received")).json()] == [
            SEND_PATH
        ]
