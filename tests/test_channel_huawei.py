"""HuaweiChannel against FakeHuawei, over real loopback sockets.

The expected (code, Next) of every seed row is transcribed here from
``shared/reference/status-codes.md`` table 1 (REAUTH rows end as CONFIG after one refresh),
not imported from the channel's table.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from openmps import statuses
from openmps.channels.base import ChannelConfig, Next, Outbound, Outcome
from openmps.channels.huawei import HuaweiChannel
from openmps.errors import ConfigError
from openmps.fakes.base import Received, Rule
from openmps.fakes.huawei import FakeHuawei
from openmps.statuses import ACKED, NONE, Channel

APP_ID = "104500001"
SECRET = "hms-secret-5f1c0d"
SEND_PATH = f"/v1/{APP_ID}/messages:send"
TOKEN_PATH = "/oauth2/v3/token"

# Seed rows of the hms channel: (code, what the channel says to do next).
HMS_ROWS: list[tuple[int, Next]] = [
    (100, Next.MESSAGE),
    (101, Next.CONFIG),
    (102, Next.CONFIG),  # REAUTH: refreshed once, the code came back
    (106, Next.CONFIG),
    (107, Next.CONFIG),
    (109, Next.CONFIG),
    (110, Next.RETRY),
    (111, Next.RETRY),
    (80000003, Next.RETRY),
    (80000004, Next.DROP_TOKEN),
    (80000005, Next.RETRY),
    (80000006, Next.DROP_TOKEN),
    (80000007, Next.MESSAGE),
    (80000008, Next.RETRY),
    (80100000, Next.DROP_TOKEN),
    (80100002, Next.MESSAGE),
    (80100003, Next.MESSAGE),
    (80100004, Next.MESSAGE),
    (80300002, Next.CONFIG),
    (80300007, Next.DROP_TOKEN),
    (81000001, Next.RETRY),
    (80300008, Next.MESSAGE),
]
REAUTH_ROWS = frozenset({102})


def expires(seconds: float = 3600.5) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def outbound(delivery_id: int, token: str, **changes: Any) -> Outbound:
    fields: dict[str, Any] = {
        "delivery_id": delivery_id,
        "token": token,
        "title": "Hello",
        "content": "World",
        "extras": {"k": "v"},
        "expires_at": expires(),
        "msg_key": "mk-1",
        "task_id": 7,
    }
    fields.update(changes)
    return Outbound(**fields)


def config(base_url: str | None, /, **values: Any) -> ChannelConfig:
    settings: dict[str, Any] = {"app_id": APP_ID, "client_secret": SECRET}
    settings.update(values)
    settings = {k: v for k, v in settings.items() if v is not None}
    return ChannelConfig(
        "hms", settings, base_url=base_url, secret_keys=frozenset({"client_secret"})
    )


def by_id(outcomes: list[Outcome]) -> dict[int, Outcome]:
    assert len({o.delivery_id for o in outcomes}) == len(outcomes)
    return {o.delivery_id: o for o in outcomes}


def sends(fake: FakeHuawei) -> list[Received]:
    return [r for r in fake.received.items if r.path == SEND_PATH]


def token_requests(fake: FakeHuawei) -> list[Received]:
    return [r for r in fake.received.items if r.path == TOKEN_PATH]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def fake() -> AsyncIterator[FakeHuawei]:
    server = FakeHuawei({APP_ID: SECRET})
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def channel(fake: FakeHuawei) -> AsyncIterator[HuaweiChannel]:
    created = HuaweiChannel.create(config(fake.url))
    yield created
    await created.close()


# -- success ------------------------------------------------------------------------------


async def test_send_posts_the_exact_requests_and_acks(
    fake: FakeHuawei, channel: HuaweiChannel
) -> None:
    outcomes = await channel.send([outbound(1, "tok-a"), outbound(2, "tok-b")])

    assert by_id(outcomes) == {
        1: Outcome(1, ACKED, Next.DONE, "80000000"),
        2: Outcome(2, ACKED, Next.DONE, "80000000"),
    }
    token_request, send = fake.received.items
    assert token_request.path == TOKEN_PATH
    assert (
        token_request.headers["content-type"] == "application/x-www-form-urlencoded;charset=utf-8"
    )
    assert token_request.body == {
        "grant_type": "client_credentials",
        "client_id": APP_ID,
        "client_secret": SECRET,
    }
    assert send.path == SEND_PATH
    assert send.headers["content-type"] == "application/json;charset=utf-8"
    assert send.headers["authorization"] == f"Bearer {fake.issued_tokens[0]}"
    assert send.body == {
        "validate_only": False,
        "message": {
            "data": '{"msg_key":"mk-1","extras":{"k":"v"}}',
            "android": {
                "ttl": "3601s",
                "notification": {"title": "Hello", "body": "World", "click_action": {"type": 3}},
            },
            "token": ["tok-a", "tok-b"],
        },
    }


async def test_click_actions_and_silent_messages(fake: FakeHuawei, channel: HuaweiChannel) -> None:
    batch = [
        outbound(1, "tok-url", uri="https://example.com/x"),
        outbound(2, "tok-intent", uri="#Intent;component=a/.B;end", push_action=1),
        outbound(3, "tok-silent", silent=True),
    ]

    outcomes = await channel.send(batch)

    assert {o.next for o in outcomes} == {Next.DONE}
    messages = {r.body["message"]["token"][0]: r.body["message"] for r in sends(fake)}
    assert messages["tok-url"]["android"]["notification"]["click_action"] == {
        "type": 2,
        "url": "https://example.com/x",
    }
    assert messages["tok-intent"]["android"]["notification"]["click_action"] == {
        "type": 1,
        "intent": "#Intent;component=a/.B;end",
    }
    assert messages["tok-silent"] == {
        "data": '{"msg_key":"mk-1","extras":{"k":"v"},"title":"Hello","content":"World"}',
        "android": {"ttl": "3601s"},
        "token": ["tok-silent"],
    }


async def test_batch_is_grouped_by_message_and_split_at_max_batch(
    fake: FakeHuawei, channel: HuaweiChannel
) -> None:
    assert HuaweiChannel.max_batch == 1000
    at = expires()
    batch = [outbound(i, f"tok-{i}", expires_at=at) for i in range(1001)]
    batch.append(outbound(5000, "tok-other", title="Other", expires_at=at))
    batch.append(outbound(5001, "tok-0", expires_at=at))  # same token and message twice: sent once

    outcomes = await channel.send(batch)

    assert len(outcomes) == 1003
    assert {o.status for o in outcomes} == {ACKED}
    sizes = sorted(len(r.body["message"]["token"]) for r in sends(fake))
    assert sizes == [1, 2, 1000]  # other title; the 1001st token and the repeat; a full chunk
    assert len(token_requests(fake)) == 1


# -- the status table ---------------------------------------------------------------------


def test_table_covers_every_hms_seed_row() -> None:
    seed = statuses.by_channel(Channel.HMS)
    assert len(seed) == 22
    assert [code for code, _ in HMS_ROWS] == [s.code for s in seed]


@pytest.mark.parametrize(("code", "then"), HMS_ROWS, ids=[str(code) for code, _ in HMS_ROWS])
async def test_seed_row_maps_to_its_status_and_next(
    fake: FakeHuawei, channel: HuaweiChannel, code: int, then: Next
) -> None:
    fake.scenario.set(FakeHuawei.error(code), token="tok-target")

    outcomes = by_id(await channel.send([outbound(1, "tok-target"), outbound(2, "tok-other")]))

    status = statuses.get(Channel.HMS, code)
    assert (outcomes[1].status, outcomes[1].next) == (status, then)
    assert outcomes[1].raw is not None and outcomes[1].raw.startswith(str(code))
    if code == 80100000:  # per-token: the other token of the request was accepted
        assert outcomes[2] == Outcome(2, ACKED, Next.DONE, "80100000")
    else:
        assert (outcomes[2].status, outcomes[2].next) == (status, then)
    refreshed = code in REAUTH_ROWS
    assert len(token_requests(fake)) == (2 if refreshed else 1)
    assert len(sends(fake)) == (2 if refreshed else 1)


async def test_retry_rows_carry_retry_after(fake: FakeHuawei, channel: HuaweiChannel) -> None:
    rule = FakeHuawei.error(81000001)
    rule.headers["Retry-After"] = "3"
    fake.scenario.set(rule)

    (outcome,) = await channel.send([outbound(1, "tok-a")])

    status = statuses.get(Channel.HMS, 81000001)
    assert outcome == Outcome(1, status, Next.RETRY, "81000001 Internal error", 3.0)


# -- partial batches ----------------------------------------------------------------------


async def test_partial_failure_v1_drops_only_the_listed_tokens(
    fake: FakeHuawei, channel: HuaweiChannel
) -> None:
    fake.scenario.set(FakeHuawei.error(80100000), token="tok-b")

    outcomes = by_id(
        await channel.send([outbound(1, "tok-a"), outbound(2, "tok-b"), outbound(3, "invalid-c")])
    )

    partial = statuses.get(Channel.HMS, 80100000)
    assert outcomes == {
        1: Outcome(1, ACKED, Next.DONE, "80100000"),
        2: Outcome(2, partial, Next.DROP_TOKEN, "80100000"),
        3: Outcome(3, partial, Next.DROP_TOKEN, "80100000"),
    }
    (send,) = sends(fake)
    assert send.body["message"]["token"] == ["tok-a", "tok-b", "invalid-c"]


async def test_partial_failure_v3_reasons(fake: FakeHuawei) -> None:
    server = FakeHuawei({APP_ID: SECRET}, illegal_tokens_style="v3")
    await server.start()
    channel = HuaweiChannel.create(config(server.url))
    try:
        server.scenario.set(Rule(action="illegal_token", body="noRight"), token="tok-right")
        server.scenario.set(Rule(action="illegal_token", body="someOtherReason"), token="tok-x")

        outcomes = by_id(
            await channel.send(
                [
                    outbound(1, "tok-ok"),
                    outbound(2, "invalid-format"),
                    outbound(3, "tok-right"),
                    outbound(4, "tok-x"),
                ]
            )
        )
    finally:
        await channel.close()
        await server.stop()

    partial = statuses.get(Channel.HMS, 80100000)
    assert outcomes == {
        1: Outcome(1, ACKED, Next.DONE, "80100000"),
        2: Outcome(2, partial, Next.DROP_TOKEN, "80100000 tokenFormatError"),
        3: Outcome(3, partial, Next.CONFIG, "80100000 noRight"),  # our right, not the token
        4: Outcome(4, NONE, Next.MESSAGE, "80100000 someOtherReason"),  # unknown: keep token
    }


async def test_all_tokens_invalid(fake: FakeHuawei, channel: HuaweiChannel) -> None:
    outcomes = await channel.send([outbound(1, "invalid-a"), outbound(2, "invalid-b")])

    status = statuses.get(Channel.HMS, 80300007)
    assert by_id(outcomes) == {
        1: Outcome(1, status, Next.DROP_TOKEN, "80300007"),
        2: Outcome(2, status, Next.DROP_TOKEN, "80300007"),
    }


# -- unmapped and transport answers ----------------------------------------------------------


async def test_unmapped_code_is_none_and_final(fake: FakeHuawei, channel: HuaweiChannel) -> None:
    fake.scenario.set(FakeHuawei.error(80999999))

    (outcome,) = await channel.send([outbound(1, "tok-a")])

    assert outcome == Outcome(1, NONE, Next.MESSAGE, "80999999 Error")


async def test_unmapped_code_on_5xx_is_none_and_retried(
    fake: FakeHuawei, channel: HuaweiChannel
) -> None:
    fake.scenario.set(Rule(status=500, body={"code": "81999999", "msg": "boom"}))

    (outcome,) = await channel.send([outbound(1, "tok-a")])

    assert outcome == Outcome(1, NONE, Next.RETRY, "81999999 boom")


@pytest.mark.parametrize(
    ("code", "then"),
    [
        (80100001, Next.MESSAGE),
        (80100016, Next.MESSAGE),
        (80300010, Next.MESSAGE),
        (80600003, Next.MESSAGE),  # refreshed once, then section 5
    ],
)
async def test_proposal_codes_are_none_with_their_action(
    fake: FakeHuawei, channel: HuaweiChannel, code: int, then: Next
) -> None:
    fake.scenario.set(FakeHuawei.error(code))

    (outcome,) = await channel.send([outbound(1, "tok-a")])

    assert (outcome.status, outcome.next) == (NONE, then)
    assert outcome.raw is not None and outcome.raw.startswith(f"{code} ")


async def test_wrong_url_is_config(fake: FakeHuawei) -> None:
    channel = HuaweiChannel.create(config(fake.url + "/nowhere", token_url=fake.url + TOKEN_PATH))
    try:
        (outcome,) = await channel.send([outbound(1, "tok-a")])
    finally:
        await channel.close()

    assert outcome == Outcome(1, NONE, Next.CONFIG, "HTTP 404")


async def test_traffic_control_honours_retry_after(
    fake: FakeHuawei, channel: HuaweiChannel
) -> None:
    fake.scenario.set(FakeHuawei.http_error(503, retry_after_s=7), token="tok-a")

    (outcome,) = await channel.send([outbound(1, "tok-a")])

    assert outcome == Outcome(1, NONE, Next.RETRY, "HTTP 503", 7.0)


async def test_retry_after_as_http_date(fake: FakeHuawei, channel: HuaweiChannel) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)
    fake.scenario.set(Rule(status=502, body="bad gateway", headers={"Retry-After": when}))

    (outcome,) = await channel.send([outbound(1, "tok-a")])

    assert (outcome.status, outcome.next, outcome.raw) == (NONE, Next.RETRY, "HTTP 502")
    assert outcome.retry_after_s is not None and 55 <= outcome.retry_after_s <= 60


async def test_dropped_connection_is_retried(fake: FakeHuawei, channel: HuaweiChannel) -> None:
    fake.scenario.set(Rule(action="close", times=1))

    (outcome,) = await channel.send([outbound(1, "tok-a")])
    (again,) = await channel.send([outbound(2, "tok-a")])

    assert (outcome.status, outcome.next) == (NONE, Next.RETRY)
    assert outcome.raw is not None and outcome.raw.startswith("network: ")
    assert again == Outcome(2, ACKED, Next.DONE, "80000000")


async def test_slow_answer_is_awaited(fake: FakeHuawei, channel: HuaweiChannel) -> None:
    fake.scenario.set(Rule(delay_s=0.3, times=1))
    started = asyncio.get_running_loop().time()

    (outcome,) = await channel.send([outbound(1, "tok-a")])

    assert outcome.status is ACKED
    assert asyncio.get_running_loop().time() - started >= 0.3


# -- auth ---------------------------------------------------------------------------------


async def test_expired_token_is_refreshed_once_under_concurrency(
    fake: FakeHuawei, channel: HuaweiChannel
) -> None:
    await channel.send([outbound(0, "tok-warm")])
    fake.expire_tokens()

    results = await asyncio.gather(*(channel.send([outbound(i, f"tok-{i}")]) for i in range(20)))

    assert [r[0] for r in results] == [Outcome(i, ACKED, Next.DONE, "80000000") for i in range(20)]
    assert len(fake.issued_tokens) == 2
    assert len(token_requests(fake)) == 2
    assert channel.token_refreshes == 2
    refused = [r for r in sends(fake) if r.headers["authorization"].endswith(fake.issued_tokens[0])]
    assert len(refused) == 21  # the warm-up and the 20 that met the expired token


async def test_expire_auth_rule_costs_one_refresh(fake: FakeHuawei, channel: HuaweiChannel) -> None:
    fake.scenario.set(Rule(action="expire_auth", times=1))

    (outcome,) = await channel.send([outbound(1, "tok-a")])

    assert outcome == Outcome(1, ACKED, Next.DONE, "80000000")
    assert len(token_requests(fake)) == 2
    first, second = sends(fake)
    assert first.headers["authorization"] == f"Bearer {fake.issued_tokens[0]}"
    assert second.headers["authorization"] == f"Bearer {fake.issued_tokens[1]}"


@pytest.mark.parametrize("code", [80200001, 80200003])
async def test_auth_answer_that_survives_a_refresh_is_config(
    fake: FakeHuawei, channel: HuaweiChannel, code: int
) -> None:
    fake.scenario.set(FakeHuawei.error(code))

    (outcome,) = await channel.send([outbound(1, "tok-a")])

    assert (outcome.status, outcome.next) == (NONE, Next.CONFIG)
    assert outcome.raw is not None and outcome.raw.startswith(f"{code} ")
    assert len(token_requests(fake)) == 2
    assert len(sends(fake)) == 2


async def test_legacy_session_key_answer_once_is_resent(
    fake: FakeHuawei, channel: HuaweiChannel
) -> None:
    rule = FakeHuawei.error(102)
    rule.times = 1
    fake.scenario.set(rule, token="tok-a")

    (outcome,) = await channel.send([outbound(1, "tok-a")])

    assert outcome == Outcome(1, ACKED, Next.DONE, "80000000")
    assert len(token_requests(fake)) == 2


async def test_token_near_expiry_is_renewed_before_use() -> None:
    server = FakeHuawei({APP_ID: SECRET}, token_ttl_s=1.0)
    await server.start()
    channel = HuaweiChannel.create(config(server.url))
    try:
        await channel.send([outbound(1, "tok-a")])
        await asyncio.sleep(1.0)
        (outcome,) = await channel.send([outbound(2, "tok-a")])
    finally:
        await channel.close()
        await server.stop()

    assert outcome == Outcome(2, ACKED, Next.DONE, "80000000")
    assert len(server.issued_tokens) == 2
    assert len([r for r in server.received.items if r.path == SEND_PATH]) == 2  # no 401 met


async def test_wrong_secret_is_config_and_sends_nothing(fake: FakeHuawei) -> None:
    channel = HuaweiChannel.create(config(fake.url, client_secret="wrong-secret"))
    try:
        outcomes = await channel.send([outbound(1, "tok-a"), outbound(2, "tok-b")])
    finally:
        await channel.close()

    raw = "oauth: HTTP 401 error=1101 sub_error=20003 error_description=invalid client"
    assert by_id(outcomes) == {
        1: Outcome(1, NONE, Next.CONFIG, raw),
        2: Outcome(2, NONE, Next.CONFIG, raw),
    }
    assert sends(fake) == []


async def test_token_endpoint_unreachable_is_retried() -> None:
    port = closed_port()
    channel = HuaweiChannel.create(
        config(f"http://127.0.0.1:{port}", token_url=f"http://127.0.0.1:{port}/oauth2/v3/token")
    )
    try:
        (outcome,) = await channel.send([outbound(1, "tok-a")])
    finally:
        await channel.close()

    assert outcome == Outcome(1, NONE, Next.RETRY, "oauth: network: ConnectError")


async def test_token_endpoint_5xx_is_retried_with_retry_after(
    fake: FakeHuawei, channel: HuaweiChannel
) -> None:
    fake.auth_scenario.set(FakeHuawei.http_error(503, retry_after_s=4))

    (outcome,) = await channel.send([outbound(1, "tok-a")])

    assert outcome == Outcome(1, NONE, Next.RETRY, "oauth: HTTP 503", 4.0)
    assert sends(fake) == []


# -- field limits -------------------------------------------------------------------------


async def test_field_limits_are_checked_before_sending(
    fake: FakeHuawei, channel: HuaweiChannel
) -> None:
    batch = [
        outbound(1, "tok-big", content="x" * 4000, extras={"pad": "y" * 200}),
        outbound(2, "tok-old", expires_at=datetime.now(UTC) - timedelta(seconds=5)),
        outbound(3, "tok-fine"),
    ]

    outcomes = by_id(await channel.send(batch))

    too_large = statuses.get(Channel.HMS, 80300008)
    assert outcomes[1].status == too_large and outcomes[1].next is Next.MESSAGE
    assert outcomes[1].raw is not None and outcomes[1].raw.startswith("message: ")
    assert "Huawei allows at most 4096" in outcomes[1].raw
    assert outcomes[2] == Outcome(
        2,
        statuses.get(Channel.HMS, 80100004),
        Next.MESSAGE,
        "ttl: the message expired before sending",
    )
    assert outcomes[3] == Outcome(3, ACKED, Next.DONE, "80000000")
    assert [r.body["message"]["token"] for r in sends(fake)] == [["tok-fine"]]


async def test_the_fake_enforces_the_same_body_cap(fake: FakeHuawei) -> None:
    token = await _token(fake)
    body = {
        "message": {"data": "x" * 4096, "android": {"ttl": "60s"}, "token": ["t"]},
    }

    answer = await _post(fake, body, token)

    assert answer.status_code == 400
    assert answer.json()["code"] == "80300008"


async def test_the_fake_validates_requests(fake: FakeHuawei) -> None:
    token = await _token(fake)
    too_many = {"message": {"data": "d", "token": [f"t{i}" for i in range(1001)]}}
    no_click = {"message": {"android": {"notification": {"title": "t"}}, "token": ["t"]}}
    bad_ttl = {"message": {"data": "d", "android": {"ttl": "86400"}, "token": ["t"]}}

    assert (await _post(fake, too_many, token)).json()["code"] == "80300010"
    assert (await _post(fake, no_click, token)).json()["code"] == "80100003"
    assert (await _post(fake, bad_ttl, token)).json()["code"] == "80100004"
    assert (await _post(fake, {"message": {"data": "d"}}, token)).json()["code"] == "80100001"
    unauthorised = await _post(fake, {"message": {"data": "d", "token": ["t"]}}, "nope")
    assert (unauthorised.status_code, unauthorised.json()["code"]) == (401, "80200001")


async def _token(fake: FakeHuawei) -> str:
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            fake.url + TOKEN_PATH,
            data={"grant_type": "client_credentials", "client_id": APP_ID, "client_secret": SECRET},
        )
    token = answer.json()["access_token"]
    assert isinstance(token, str)
    return token


async def _post(fake: FakeHuawei, body: Mapping[str, Any], token: str) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(
            fake.url + SEND_PATH, json=body, headers={"Authorization": f"Bearer {token}"}
        )


# -- the fake's HTTP control --------------------------------------------------------------


async def test_fake_control_endpoints(fake: FakeHuawei, channel: HuaweiChannel) -> None:
    async with httpx.AsyncClient(base_url=fake.url) as http:
        set_rule = await http.post("/__fake__/scenario", json={"token": "tok-a", "error": 80300002})
        assert set_rule.status_code == 200
        (denied,) = await channel.send([outbound(1, "tok-a")])
        received = (await http.get("/__fake__/received")).json()
        assert [r["path"] for r in received] == [TOKEN_PATH, SEND_PATH]

        await http.delete("/__fake__/scenario")
        await http.delete("/__fake__/received")
        (accepted,) = await channel.send([outbound(2, "tok-a")])
        bad = await http.post("/__fake__/scenario", json={"rule": {"nope": 1}})

    assert (denied.status, denied.next) == (statuses.get(Channel.HMS, 80300002), Next.CONFIG)
    assert accepted == Outcome(2, ACKED, Next.DONE, "80000000")
    assert [r.path for r in fake.received.items] == [SEND_PATH]
    assert bad.status_code == 400


# -- settings and secrets -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "base_url", "key"),
    [
        ({"app_id": None}, None, "app_id"),
        ({"client_secret": None}, None, "client_secret"),
        ({"client_secret": ""}, None, "client_secret"),
        ({"app_id": 104500001}, None, "app_id"),
        ({"app_id": "10/45"}, None, "app_id"),
        ({}, "ftp://example.com", "base_url"),
        ({"base_url": "not a url"}, None, "base_url"),
        ({"token_url": "localhost:9"}, None, "token_url"),
    ],
)
def test_config_errors_name_the_key(values: dict[str, Any], base_url: str | None, key: str) -> None:
    with pytest.raises(ConfigError, match=f"'{key}'") as caught:
        HuaweiChannel.create(config(base_url, **values))
    assert SECRET not in str(caught.value)


def test_settings_of_another_channel_are_refused() -> None:
    with pytest.raises(ConfigError, match="'xiaomi'"):
        HuaweiChannel.create(ChannelConfig("xiaomi", {"app_id": APP_ID, "client_secret": SECRET}))


async def test_urls_from_settings() -> None:
    production = HuaweiChannel.create(config(None))
    faked = HuaweiChannel.create(config("http://127.0.0.1:9/"))
    split = HuaweiChannel.create(
        config("http://127.0.0.1:9", token_url="http://127.0.0.1:10/oauth2/v2/token")
    )
    try:
        assert production.send_url == f"https://push-api.cloud.huawei.com{SEND_PATH}"
        assert production.token_url == "https://oauth-login.cloud.huawei.com/oauth2/v3/token"
        assert faked.send_url == f"http://127.0.0.1:9{SEND_PATH}"
        assert faked.token_url == f"http://127.0.0.1:9{TOKEN_PATH}"
        assert split.token_url == "http://127.0.0.1:10/oauth2/v2/token"
        assert SECRET not in repr(production)
        assert SECRET not in repr(config(None))
    finally:
        for channel in (production, faked, split):
            await channel.close()


async def test_logs_hold_no_secret_and_no_token(
    fake: FakeHuawei, channel: HuaweiChannel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="openmps")
    fake.scenario.set(Rule(action="expire_auth", times=1))
    await channel.send([outbound(1, "tok-device-secretive")])
    fake.scenario.set(FakeHuawei.error(80100000), token="tok-device-listed")
    await channel.send([outbound(2, "tok-device-listed"), outbound(3, "tok-device-fine")])
    wrong = HuaweiChannel.create(config(fake.url, client_secret="other-secret-9"))
    await wrong.send([outbound(4, "tok-device-secretive")])
    await wrong.close()

    text = caplog.text + json.dumps([r.getMessage() for r in caplog.records])
    assert caplog.records  # the channel did log
    for secret in (SECRET, "other-secret-9", *fake.issued_tokens, "tok-device"):
        assert secret not in text
