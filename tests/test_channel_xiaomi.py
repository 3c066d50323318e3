"""XiaomiChannel against FakeXiaomi, over real loopback sockets.

The expected (code, Next) of every seed row is transcribed here from
``shared/reference/status-codes.md`` table 1, not imported from the channel's table.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from openmps import statuses
from openmps.channels.base import ChannelConfig, Next, Outbound, Outcome
from openmps.channels.xiaomi import XiaomiChannel
from openmps.errors import ConfigError
from openmps.fakes.base import Received, Rule
from openmps.fakes.xiaomi import FakeXiaomi
from openmps.statuses import ACKED, NONE, Channel

SECRET = "mi-secret-0a9b8c7d"
PACKAGE = "com.example.app"
SEND_PATH = "/v3/message/regid"

# Seed rows of the xiaomi channel, in the seed's order: (code, what the channel says next).
XIAOMI_ROWS: list[tuple[int, Next]] = [
    (10001, Next.RETRY),
    (10002, Next.RETRY),
    (10003, Next.RETRY),
    (10004, Next.CONFIG),
    (10005, Next.CONFIG),
    (10008, Next.MESSAGE),
    (10009, Next.RETRY),
    (10012, Next.MESSAGE),
    (10013, Next.CONFIG),
    (10014, Next.CONFIG),
    (10017, Next.MESSAGE),
    (10018, Next.MESSAGE),
    (10022, Next.RETRY),
    (10023, Next.RETRY),
    (10024, Next.RETRY),
    (10026, Next.CONFIG),
    (10027, Next.RETRY),
    (10029, Next.DROP_TOKEN),
    (21301, Next.CONFIG),
    (22000, Next.CONFIG),
    (22001, Next.CONFIG),
    (22002, Next.CONFIG),
    (22003, Next.CONFIG),
    (22004, Next.CONFIG),
    (22005, Next.CONFIG),
    (22006, Next.CONFIG),
    (22007, Next.CONFIG),
    (22008, Next.CONFIG),
    (22020, Next.CONFIG),
    (22021, Next.CONFIG),
    (22022, Next.CONFIG),
    (22100, Next.MESSAGE),
    (22101, Next.RETRY),
    (22102, Next.RETRY),
    (22103, Next.MESSAGE),
    (20301, Next.DROP_TOKEN),
]


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
    settings: dict[str, Any] = {"app_secret": SECRET, "package_name": PACKAGE}
    settings.update(values)
    settings = {k: v for k, v in settings.items() if v is not None}
    return ChannelConfig(
        "xiaomi", settings, base_url=base_url, secret_keys=frozenset({"app_secret"})
    )


def by_id(outcomes: list[Outcome]) -> dict[int, Outcome]:
    assert len({o.delivery_id for o in outcomes}) == len(outcomes)
    return {o.delivery_id: o for o in outcomes}


def sends(fake: FakeXiaomi) -> list[Received]:
    return [r for r in fake.received.items if r.path == SEND_PATH]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def fake() -> AsyncIterator[FakeXiaomi]:
    server = FakeXiaomi({SECRET: PACKAGE})
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def channel(fake: FakeXiaomi) -> AsyncIterator[XiaomiChannel]:
    created = XiaomiChannel.create(config(fake.url))
    yield created
    await created.close()


# -- success ------------------------------------------------------------------------------


async def test_send_posts_the_exact_request_and_acks(
    fake: FakeXiaomi, channel: XiaomiChannel
) -> None:
    outcomes = await channel.send([outbound(1, "reg-a"), outbound(2, "reg-b")])

    assert by_id(outcomes) == {
        1: Outcome(1, ACKED, Next.DONE, "0"),
        2: Outcome(2, ACKED, Next.DONE, "0"),
    }
    (send,) = fake.received.items
    assert send.path == SEND_PATH
    assert send.headers["authorization"] == f"key={SECRET}"
    assert send.headers["content-type"] == "application/x-www-form-urlencoded;charset=UTF-8"
    form = dict(send.body)
    assert form.pop("time_to_live") == "3601000"
    assert form == {
        "restricted_package_name": PACKAGE,
        "pass_through": "0",
        "title": "Hello",
        "description": "World",
        "notify_type": "-1",
        "notify_id": "7",
        "extra.notify_effect": "1",
        "payload": '{"msg_key":"mk-1","extras":{"k":"v"}}',
        "registration_id": "reg-a,reg-b",
    }


async def test_click_effects_and_pass_through(fake: FakeXiaomi, channel: XiaomiChannel) -> None:
    batch = [
        outbound(1, "reg-web", uri="https://example.com/x"),
        outbound(2, "reg-intent", uri="intent:#Intent;component=a/.B;end", push_action=1),
        outbound(3, "reg-silent", silent=True, title="", content="quiet"),
    ]

    outcomes = await channel.send(batch)

    assert {o.next for o in outcomes} == {Next.DONE}
    forms = {r.body["registration_id"]: r.body for r in sends(fake)}
    assert forms["reg-web"]["extra.notify_effect"] == "3"
    assert forms["reg-web"]["extra.web_uri"] == "https://example.com/x"
    assert forms["reg-intent"]["extra.notify_effect"] == "2"
    assert forms["reg-intent"]["extra.intent_uri"] == "intent:#Intent;component=a/.B;end"
    silent = dict(forms["reg-silent"])
    del silent["time_to_live"]
    assert silent == {
        "restricted_package_name": PACKAGE,
        "pass_through": "1",
        "payload": '{"msg_key":"mk-1","extras":{"k":"v"},"title":"","content":"quiet"}',
        "registration_id": "reg-silent",
    }


async def test_batch_is_grouped_by_message_and_split_at_max_batch(
    fake: FakeXiaomi, channel: XiaomiChannel
) -> None:
    assert XiaomiChannel.max_batch == 1000
    at = expires()
    batch = [outbound(i, f"reg-{i}", expires_at=at) for i in range(1001)]
    batch.append(outbound(5000, "reg-other", title="Other", expires_at=at))

    outcomes = await channel.send(batch)

    assert len(outcomes) == 1002
    assert {o.status for o in outcomes} == {ACKED}
    sizes = sorted(len(r.body["registration_id"].split(",")) for r in sends(fake))
    assert sizes == [1, 1, 1000]


# -- the status table ---------------------------------------------------------------------


def test_table_covers_every_xiaomi_seed_row() -> None:
    seed = statuses.by_channel(Channel.XIAOMI)
    assert len(seed) == 36
    assert [code for code, _ in XIAOMI_ROWS] == [s.code for s in seed]


@pytest.mark.parametrize(("code", "then"), XIAOMI_ROWS, ids=[str(code) for code, _ in XIAOMI_ROWS])
async def test_seed_row_maps_to_its_status_and_next(
    fake: FakeXiaomi, channel: XiaomiChannel, code: int, then: Next
) -> None:
    fake.scenario.set(FakeXiaomi.error(code), token="reg-target")

    outcomes = by_id(await channel.send([outbound(1, "reg-target"), outbound(2, "reg-other")]))

    status = statuses.get(Channel.XIAOMI, code)
    assert (outcomes[1].status, outcomes[1].next) == (status, then)
    assert outcomes[1].raw is not None and outcomes[1].raw.startswith(str(code))
    if code == 20301:  # per regid: the other regid of the call was accepted
        assert outcomes[2] == Outcome(2, ACKED, Next.DONE, "0")
    else:
        assert (outcomes[2].status, outcomes[2].next) == (status, then)
    assert len(sends(fake)) == 1  # Xiaomi has nothing to refresh: never a second call


async def test_retry_row_carries_retry_after(fake: FakeXiaomi, channel: XiaomiChannel) -> None:
    rule = FakeXiaomi.error(10022)
    rule.headers["Retry-After"] = "12"
    fake.scenario.set(rule)

    (outcome,) = await channel.send([outbound(1, "reg-a")])

    status = statuses.get(Channel.XIAOMI, 10022)
    assert outcome == Outcome(1, status, Next.RETRY, "10022 IP request rate over limit", 12.0)


# -- partial batches ----------------------------------------------------------------------


async def test_bad_regids_are_dropped_alone(fake: FakeXiaomi, channel: XiaomiChannel) -> None:
    fake.scenario.set(FakeXiaomi.error(20301), token="reg-b")

    outcomes = by_id(
        await channel.send([outbound(1, "reg-a"), outbound(2, "reg-b"), outbound(3, "invalid-c")])
    )

    invalid = statuses.get(Channel.XIAOMI, 20301)
    assert outcomes == {
        1: Outcome(1, ACKED, Next.DONE, "0"),
        2: Outcome(2, invalid, Next.DROP_TOKEN, "20301 bad_regids"),
        3: Outcome(3, invalid, Next.DROP_TOKEN, "20301 bad_regids"),
    }


async def test_all_regids_invalid(fake: FakeXiaomi, channel: XiaomiChannel) -> None:
    outcomes = await channel.send([outbound(1, "invalid-a"), outbound(2, "invalid-b")])

    invalid = statuses.get(Channel.XIAOMI, 20301)
    raw = "20301 no valid registration id"
    assert by_id(outcomes) == {
        1: Outcome(1, invalid, Next.DROP_TOKEN, raw),
        2: Outcome(2, invalid, Next.DROP_TOKEN, raw),
    }


# -- unmapped, proposals and transport answers ---------------------------------------------


async def test_unmapped_code_is_none_and_final(fake: FakeXiaomi, channel: XiaomiChannel) -> None:
    fake.scenario.set(FakeXiaomi.error(10099))

    (outcome,) = await channel.send([outbound(1, "reg-a")])

    assert outcome == Outcome(1, NONE, Next.MESSAGE, "10099 error")


async def test_unparsable_answer_is_none_and_final(
    fake: FakeXiaomi, channel: XiaomiChannel
) -> None:
    fake.scenario.set(Rule(status=200, body="<html>maintenance</html>"))

    (outcome,) = await channel.send([outbound(1, "reg-a")])

    assert outcome == Outcome(1, NONE, Next.MESSAGE, "HTTP 200 without a code")


@pytest.mark.parametrize(
    ("code", "then"),
    [
        (-1, Next.RETRY),
        (100, Next.MESSAGE),
        (10006, Next.CONFIG),
        (10007, Next.MESSAGE),
        (10010, Next.MESSAGE),
        (10011, Next.RETRY),
        (10016, Next.MESSAGE),
        (10020, Next.MESSAGE),
        (10021, Next.MESSAGE),
        (10025, Next.MESSAGE),
        (10028, Next.RETRY),
    ],
)
async def test_proposal_codes_are_none_with_their_action(
    fake: FakeXiaomi, channel: XiaomiChannel, code: int, then: Next
) -> None:
    fake.scenario.set(FakeXiaomi.error(code))

    (outcome,) = await channel.send([outbound(1, "reg-a")])

    assert (outcome.status, outcome.next) == (NONE, then)
    assert outcome.raw is not None and outcome.raw.startswith(f"{code} ")


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_http_5xx_is_remote_service_error_with_retry_after(
    fake: FakeXiaomi, channel: XiaomiChannel, status: int
) -> None:
    fake.scenario.set(FakeXiaomi.http_error(status, retry_after_s=9))

    (outcome,) = await channel.send([outbound(1, "reg-a")])

    remote = statuses.get(Channel.XIAOMI, 10003)
    assert outcome == Outcome(1, remote, Next.RETRY, f"HTTP {status}", 9.0)


async def test_http_429_is_retried(fake: FakeXiaomi, channel: XiaomiChannel) -> None:
    fake.scenario.set(Rule(status=429, body="slow down", headers={"Retry-After": "2"}))

    (outcome,) = await channel.send([outbound(1, "reg-a")])

    assert outcome == Outcome(1, NONE, Next.RETRY, "HTTP 429", 2.0)


async def test_wrong_url_is_config(fake: FakeXiaomi) -> None:
    channel = XiaomiChannel.create(config(fake.url + "/nowhere"))
    try:
        (outcome,) = await channel.send([outbound(1, "reg-a")])
    finally:
        await channel.close()

    assert outcome == Outcome(1, NONE, Next.CONFIG, "HTTP 404")


async def test_dropped_connection_is_retried(fake: FakeXiaomi, channel: XiaomiChannel) -> None:
    fake.scenario.set(Rule(action="close", times=1))

    (outcome,) = await channel.send([outbound(1, "reg-a")])
    (again,) = await channel.send([outbound(2, "reg-a")])

    remote = statuses.get(Channel.XIAOMI, 10003)
    assert (outcome.status, outcome.next) == (remote, Next.RETRY)
    assert outcome.raw is not None and outcome.raw.startswith("network: ")
    assert again == Outcome(2, ACKED, Next.DONE, "0")


async def test_unreachable_gateway_is_retried() -> None:
    channel = XiaomiChannel.create(config(f"http://127.0.0.1:{closed_port()}"))
    try:
        (outcome,) = await channel.send([outbound(1, "reg-a")])
    finally:
        await channel.close()

    remote = statuses.get(Channel.XIAOMI, 10003)
    assert outcome == Outcome(1, remote, Next.RETRY, "network: ConnectError")


async def test_slow_answer_is_awaited(fake: FakeXiaomi, channel: XiaomiChannel) -> None:
    fake.scenario.set(Rule(delay_s=0.3, times=1))
    started = asyncio.get_running_loop().time()

    (outcome,) = await channel.send([outbound(1, "reg-a")])

    assert outcome.status is ACKED
    assert asyncio.get_running_loop().time() - started >= 0.3


# -- auth ---------------------------------------------------------------------------------


async def test_wrong_secret_is_config_without_a_second_call(fake: FakeXiaomi) -> None:
    channel = XiaomiChannel.create(config(fake.url, app_secret="wrong-secret"))
    try:
        outcomes = await asyncio.gather(
            *(channel.send([outbound(i, f"reg-{i}")]) for i in range(5))
        )
    finally:
        await channel.close()

    failed = statuses.get(Channel.XIAOMI, 21301)
    assert [o[0] for o in outcomes] == [
        Outcome(i, failed, Next.CONFIG, "21301 check the AppSecret") for i in range(5)
    ]
    assert len(sends(fake)) == 5
    assert {r.headers["authorization"] for r in sends(fake)} == {"key=wrong-secret"}


async def test_expire_auth_changes_nothing(fake: FakeXiaomi, channel: XiaomiChannel) -> None:
    fake.scenario.set(Rule(action="expire_auth", times=1))

    (outcome,) = await channel.send([outbound(1, "reg-a")])

    assert outcome == Outcome(1, ACKED, Next.DONE, "0")
    assert len(sends(fake)) == 1


async def test_package_of_another_app_is_config(fake: FakeXiaomi) -> None:
    channel = XiaomiChannel.create(config(fake.url, package_name="com.example.other"))
    try:
        (outcome,) = await channel.send([outbound(1, "reg-a")])
    finally:
        await channel.close()

    assert (outcome.status, outcome.next) == (statuses.get(Channel.XIAOMI, 22022), Next.CONFIG)


# -- field limits -------------------------------------------------------------------------


async def test_field_limits_are_checked_before_sending(
    fake: FakeXiaomi, channel: XiaomiChannel
) -> None:
    invalid_value = statuses.get(Channel.XIAOMI, 10017)
    too_large = statuses.get(Channel.XIAOMI, 10018)
    batch = [
        outbound(1, "reg-title", title="t" * 50),
        outbound(2, "reg-desc", content="d" * 128),
        outbound(3, "reg-blank", title="   "),
        outbound(4, "reg-big", extras={"pad": "p" * 4100}),
        outbound(5, "reg-old", expires_at=datetime.now(UTC) - timedelta(seconds=1)),
        outbound(6, "reg-a,reg-b"),
        outbound(7, "reg-edge", title="t" * 49, content="d" * 127),
    ]

    outcomes = by_id(await channel.send(batch))

    assert outcomes[1] == Outcome(
        1, invalid_value, Next.MESSAGE, "title: 50 characters; Xiaomi allows at most 49"
    )
    assert outcomes[2] == Outcome(
        2, invalid_value, Next.MESSAGE, "description: 128 characters; Xiaomi allows at most 127"
    )
    assert outcomes[3] == Outcome(
        3, invalid_value, Next.MESSAGE, "title: must not be blank for a notification"
    )
    assert outcomes[4].status == too_large and outcomes[4].next is Next.MESSAGE
    assert outcomes[4].raw is not None and outcomes[4].raw.startswith("payload: ")
    assert outcomes[5] == Outcome(
        5, invalid_value, Next.MESSAGE, "time_to_live: the message expired before sending"
    )
    assert outcomes[6] == Outcome(
        6,
        statuses.get(Channel.XIAOMI, 20301),
        Next.DROP_TOKEN,
        "registration_id: not a single regid",
    )
    assert outcomes[7] == Outcome(7, ACKED, Next.DONE, "0")
    assert [r.body["registration_id"] for r in sends(fake)] == ["reg-edge"]


async def test_the_fake_validates_requests(fake: FakeXiaomi) -> None:
    base = {
        "restricted_package_name": PACKAGE,
        "registration_id": "reg-a",
        "title": "Hi",
        "description": "there",
    }
    many = ",".join(f"r{i}" for i in range(1001))

    async with httpx.AsyncClient(base_url=fake.url) as http:

        async def code(form: Mapping[str, str], secret: str = SECRET) -> Any:
            answer = await http.post(
                SEND_PATH, data=dict(form), headers={"Authorization": f"key={secret}"}
            )
            assert answer.status_code == 200
            return answer.json()["code"]

        assert await code({**base, "title": "t" * 50}) == 10017
        assert await code({**base, "description": " "}) == 10017
        assert await code({**base, "payload": "p" * 4097}) == 10018
        assert await code({**base, "pass_through": "2"}) == 10017
        assert await code({**base, "registration_id": ""}) == 10016
        assert await code({**base, "registration_id": many}) == 10017
        assert await code(base, secret="nope") == 21301
        ok = await http.post(SEND_PATH, data=base, headers={"Authorization": f"key={SECRET}"})

    body = ok.json()
    assert (body["result"], body["code"], body["info"]) == (
        "ok",
        0,
        "Received push messages for 1 REGID",
    )


# -- the fake's HTTP control --------------------------------------------------------------


async def test_fake_control_endpoints(fake: FakeXiaomi, channel: XiaomiChannel) -> None:
    async with httpx.AsyncClient(base_url=fake.url) as http:
        set_rule = await http.post("/__fake__/scenario", json={"token": "reg-a", "error": 10029})
        assert set_rule.status_code == 200
        (dropped,) = await channel.send([outbound(1, "reg-a")])
        received = (await http.get("/__fake__/received")).json()
        assert [r["path"] for r in received] == [SEND_PATH]

        await http.delete("/__fake__/scenario")
        await http.delete("/__fake__/received")
        (accepted,) = await channel.send([outbound(2, "reg-a")])
        bad = await http.post("/__fake__/scenario", json={"rule": {"nope": 1}})

    assert dropped.status == statuses.get(Channel.XIAOMI, 10029)
    assert dropped.next is Next.DROP_TOKEN
    assert accepted == Outcome(2, ACKED, Next.DONE, "0")
    assert [r.path for r in fake.received.items] == [SEND_PATH]
    assert bad.status_code == 400


# -- settings and secrets -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "base_url", "key"),
    [
        ({"app_secret": None}, None, "app_secret"),
        ({"app_secret": "  "}, None, "app_secret"),
        ({"package_name": None}, None, "package_name"),
        ({"package_name": "not a package"}, None, "package_name"),
        ({"package_name": 42}, None, "package_name"),
        ({}, "ftp://example.com", "base_url"),
        ({"base_url": "not a url"}, None, "base_url"),
    ],
)
def test_config_errors_name_the_key(values: dict[str, Any], base_url: str | None, key: str) -> None:
    with pytest.raises(ConfigError, match=f"'{key}'") as caught:
        XiaomiChannel.create(config(base_url, **values))
    assert SECRET not in str(caught.value)


def test_settings_of_another_channel_are_refused() -> None:
    with pytest.raises(ConfigError, match="'hms'"):
        XiaomiChannel.create(ChannelConfig("hms", {"app_secret": SECRET, "package_name": PACKAGE}))


async def test_urls_from_settings() -> None:
    production = XiaomiChannel.create(config(None))
    faked = XiaomiChannel.create(config("http://127.0.0.1:9/"))
    try:
        assert production.send_url == "https://api.xmpush.xiaomi.com/v3/message/regid"
        assert faked.send_url == "http://127.0.0.1:9/v3/message/regid"
        assert SECRET not in repr(production)
        assert SECRET not in repr(config(None))
    finally:
        await production.close()
        await faked.close()


async def test_logs_hold_no_secret_and_no_regid(
    fake: FakeXiaomi, channel: XiaomiChannel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="openmps")
    fake.scenario.set(FakeXiaomi.error(20301), token="reg-device-listed")
    await channel.send([outbound(1, "reg-device-listed"), outbound(2, "reg-device-fine")])
    fake.scenario.set(Rule(action="close", times=1))
    await channel.send([outbound(3, "reg-device-fine")])

    assert caplog.records  # the channel did log
    for secret in (SECRET, "reg-device"):
        assert secret not in caplog.text
