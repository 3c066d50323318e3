"""The APNs channel against the fake APNs server, over real sockets (TLS, HTTP/2)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from openmps import statuses
from openmps.channels.apns import APNsChannel
from openmps.channels.base import ChannelConfig, Next, Outbound, Outcome
from openmps.errors import ConfigError
from openmps.fakes.apns import REASON_STATUS, FakeAPNs
from openmps.fakes.base import Rule
from openmps.statuses import Action, Channel, Status

TEAM_ID = "TEAM123456"
KEY_ID = "KEY1234567"
TOPIC = "com.example.chat"
TOKEN = "7a1f" * 16
EXPIRES = datetime(2030, 1, 1, tzinfo=UTC)
EXPIRES_HEADER = str(int(EXPIRES.timestamp()))


@dataclass(frozen=True)
class Key:
    private: ec.EllipticCurvePrivateKey = field(repr=False)
    private_pem: str = field(repr=False)
    public_pem: str = field(repr=False)


def make_key() -> Key:
    private = ec.generate_private_key(ec.SECP256R1())
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return Key(private, private_pem, public_pem)


@pytest.fixture(scope="module")
def key() -> Key:
    return make_key()


@pytest.fixture
async def fake(key: Key) -> AsyncIterator[FakeAPNs]:
    server = FakeAPNs()
    server.add_key(TEAM_ID, KEY_ID, key.public_pem)
    await server.start()
    yield server
    await server.stop()


def config(fake: FakeAPNs, key: Key, **changes: Any) -> ChannelConfig:
    values: dict[str, Any] = {
        "team_id": TEAM_ID,
        "key_id": KEY_ID,
        "private_key": key.private_pem,
        "topic": TOPIC,
        "ca_pem": fake.cert_pem,
    }
    base_url = changes.pop("base_url", fake.url)
    values.update(changes)
    return ChannelConfig(
        vendor="apns", values=values, base_url=base_url, secret_keys=APNsChannel.secret_keys
    )


@asynccontextmanager
async def open_channel(
    fake: FakeAPNs, key: Key, clock: Callable[[], float] = time.time, **changes: Any
) -> AsyncIterator[APNsChannel]:
    channel = APNsChannel.create(config(fake, key, **changes), clock=clock)
    try:
        yield channel
    finally:
        await channel.close()


@pytest.fixture
async def channel(fake: FakeAPNs, key: Key) -> AsyncIterator[APNsChannel]:
    async with open_channel(fake, key) as opened:
        yield opened


def push(
    delivery_id: int = 1,
    token: str = TOKEN,
    *,
    title: str = "Hi",
    content: str = "You have mail",
    extras: Mapping[str, str] | None = None,
    msg_key: str = "",
    silent: bool = False,
) -> Outbound:
    return Outbound(
        delivery_id=delivery_id,
        token=token,
        title=title,
        content=content,
        extras=extras or {},
        expires_at=EXPIRES,
        msg_key=msg_key,
        task_id=7,
        silent=silent,
    )


def hex_token(n: int) -> str:
    return f"{n:064x}"


def acked(delivery_id: int) -> Outcome:
    return Outcome(delivery_id, statuses.ACKED, Next.DONE)


def apns(code: int) -> Status:
    return statuses.get(Channel.APNS, code)


def contract(code: int) -> Status:
    """A contract code that may still be a PROPOSAL missing from the table (then NONE)."""
    return statuses.find(Channel.APNS, code) or statuses.NONE


def by_id(outcomes: list[Outcome]) -> list[Outcome]:
    return sorted(outcomes, key=lambda outcome: outcome.delivery_id)


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bearers(fake: FakeAPNs) -> list[str]:
    return [item.headers["authorization"] for item in fake.received.items]


# -- success -------------------------------------------------------------------------------


async def test_send_is_acked_and_the_request_is_as_built(
    fake: FakeAPNs, channel: APNsChannel
) -> None:
    item = push(extras={"orderId": "1182"}, msg_key="order-1182")

    assert await channel.send([item]) == [acked(1)]

    [received] = fake.received.items
    assert received.path == f"/3/device/{TOKEN}"
    headers = dict(received.headers)
    authorization = headers.pop("authorization")
    assert headers == {
        ":method": "POST",
        ":scheme": "https",
        ":path": f"/3/device/{TOKEN}",
        ":authority": f"127.0.0.1:{fake.port}",
        "apns-topic": TOPIC,
        "apns-push-type": "alert",
        "apns-priority": "10",
        "apns-expiration": EXPIRES_HEADER,
        "apns-collapse-id": "order-1182",
    }
    assert received.body == {
        "aps": {"alert": {"title": "Hi", "body": "You have mail"}},
        "orderId": "1182",
    }
    scheme, token = authorization.split(" ")
    assert scheme == "bearer"
    assert jwt.get_unverified_header(token) == {"alg": "ES256", "kid": KEY_ID}
    claims = jwt.decode(token, options={"verify_signature": False})
    assert set(claims) == {"iss", "iat"}
    assert claims["iss"] == TEAM_ID
    assert abs(claims["iat"] - time.time()) < 60


async def test_silent_push_is_background_with_priority_5(
    fake: FakeAPNs, channel: APNsChannel
) -> None:
    assert await channel.send([push(silent=True, extras={"sync": "1"})]) == [acked(1)]

    [received] = fake.received.items
    assert received.headers["apns-push-type"] == "background"
    assert received.headers["apns-priority"] == "5"
    assert received.headers["apns-topic"] == TOPIC
    assert received.body == {"aps": {"content-available": 1}, "sync": "1"}


async def test_alert_without_title_has_only_a_body(fake: FakeAPNs, channel: APNsChannel) -> None:
    assert await channel.send([push(title="")]) == [acked(1)]

    assert fake.received.items[0].body == {"aps": {"alert": {"body": "You have mail"}}}


async def test_voip_push_type_uses_the_voip_topic(fake: FakeAPNs, key: Key) -> None:
    async with open_channel(fake, key, push_type="voip") as channel:
        assert await channel.send([push()]) == [acked(1)]

    assert fake.received.items[0].headers["apns-topic"] == f"{TOPIC}.voip"
    assert fake.received.items[0].headers["apns-push-type"] == "voip"


async def test_a_whole_batch_of_1000_is_acked(fake: FakeAPNs, channel: APNsChannel) -> None:
    batch = [push(i, hex_token(i)) for i in range(APNsChannel.max_batch)]

    outcomes = await channel.send(batch)

    assert by_id(outcomes) == [acked(i) for i in range(1000)]
    assert len(fake.received.items) == 1000
    assert fake.connections_accepted == 1


async def test_streams_never_exceed_the_servers_limit(key: Key) -> None:
    server = FakeAPNs(max_concurrent_streams=10)
    server.add_key(TEAM_ID, KEY_ID, key.public_pem)
    await server.start()
    try:
        server.scenario.set(Rule(delay_s=0.05))  # answers pile up: the client must wait
        async with open_channel(server, key) as channel:
            outcomes = await channel.send([push(i, hex_token(i)) for i in range(60)])
    finally:
        await server.stop()

    assert by_id(outcomes) == [acked(i) for i in range(60)]
    assert server.peak_open_streams == 10


# -- every apns row of the seed --------------------------------------------------------------


@dataclass(frozen=True)
class SeedCase:
    code: int
    next: Next
    raw: str  # exact, or the start of it when ``raw_prefix``
    arrange: Callable[[FakeAPNs], Outbound]
    settings: Mapping[str, Any] | None = None
    raw_prefix: bool = False


def answer(reason: str) -> Callable[[FakeAPNs], Outbound]:
    def arrange(fake: FakeAPNs) -> Outbound:
        fake.scenario.set(FakeAPNs.error(reason), token=TOKEN)
        return push()

    return arrange


def plain(item: Outbound) -> Callable[[FakeAPNs], Outbound]:
    return lambda fake: item


def disallow_topic(fake: FakeAPNs) -> Outbound:
    fake.topics = frozenset({"com.example.other"})
    return push()


def bind_elsewhere(fake: FakeAPNs) -> Outbound:
    fake.bind_token(TOKEN, "com.example.other")
    return push()


def unregister(fake: FakeAPNs) -> Outbound:
    fake.unregister(TOKEN, at_ms=1_767_225_600_000)
    return push()


def drop_connection(fake: FakeAPNs) -> Outbound:
    fake.scenario.set(Rule(action="close"), token=TOKEN)
    return push()


SEED_CASES: dict[str, SeedCase] = {
    "2001-fake": SeedCase(2001, Next.MESSAGE, "400 PayloadEmpty", answer("PayloadEmpty")),
    "2002-fake": SeedCase(2002, Next.MESSAGE, "413 PayloadTooLarge", answer("PayloadTooLarge")),
    "2002-local": SeedCase(
        2002,
        Next.MESSAGE,
        "payload is 5042 B, over APNs' 4096 B; not sent",
        plain(push(content="x" * 5000)),
    ),
    "2003": SeedCase(
        2003, Next.CONFIG, "400 BadTopic", plain(push()), settings={"topic": "com example chat"}
    ),
    "2004": SeedCase(2004, Next.CONFIG, "400 TopicDisallowed", disallow_topic),
    "2005": SeedCase(2005, Next.MESSAGE, "400 BadMessageId", answer("BadMessageId")),
    "2006": SeedCase(2006, Next.MESSAGE, "400 BadExpirationDate", answer("BadExpirationDate")),
    "2007": SeedCase(2007, Next.MESSAGE, "400 BadPriority", answer("BadPriority")),
    "2008": SeedCase(2008, Next.MESSAGE, "400 MissingDeviceToken", plain(push(token=""))),
    "2009-fake": SeedCase(2009, Next.DROP_TOKEN, "400 BadDeviceToken", plain(push(token="abc"))),
    "2009-local": SeedCase(
        2009,
        Next.DROP_TOKEN,
        "device token is not hexadecimal; not sent",
        plain(push(token="fcm:not-an-apns-token")),
    ),
    "2010": SeedCase(2010, Next.DROP_TOKEN, "400 DeviceTokenNotForTopic", bind_elsewhere),
    "2011": SeedCase(
        2011, Next.DROP_TOKEN, "410 Unregistered (timestamp 1767225600000 ms)", unregister
    ),
    "2013": SeedCase(
        2013, Next.CONFIG, "403 BadCertificateEnvironment", answer("BadCertificateEnvironment")
    ),
    "2014": SeedCase(2014, Next.CONFIG, "403 BadCertificate", answer("BadCertificate")),
    "2023": SeedCase(2023, Next.CONFIG, "400 MissingTopic", answer("MissingTopic")),
    "2024": SeedCase(
        2024,
        Next.RETRY,
        "connection closed before an answer",
        drop_connection,
        raw_prefix=True,
    ),
    "2025": SeedCase(
        2025,
        Next.RETRY,
        "ConnectionRefusedError",
        plain(push()),
        settings={"base_url": f"https://127.0.0.1:{unused_port()}"},
        raw_prefix=True,
    ),
}

NEXT_OF_ACTION = {
    Action.MSG: Next.MESSAGE,
    Action.CONFIG: Next.CONFIG,
    Action.DROP: Next.DROP_TOKEN,
    Action.RETRY: Next.RETRY,
}


def test_the_cases_cover_every_apns_row_of_the_seed() -> None:
    seed_codes = {status.code for status in statuses.by_channel(Channel.APNS)}
    assert {case.code for case in SEED_CASES.values()} == seed_codes
    for case in SEED_CASES.values():
        assert NEXT_OF_ACTION[apns(case.code).action] is case.next


@pytest.mark.parametrize("case_id", list(SEED_CASES))
async def test_each_seed_row_is_produced(case_id: str, fake: FakeAPNs, key: Key) -> None:
    case = SEED_CASES[case_id]
    item = case.arrange(fake)

    async with open_channel(fake, key, **dict(case.settings or {})) as channel:
        [outcome] = await channel.send([item])

    assert outcome.status == apns(case.code)
    assert outcome.next is case.next
    assert outcome.delivery_id == item.delivery_id
    assert outcome.retry_after_s is None
    assert outcome.raw is not None
    if case.raw_prefix:
        assert outcome.raw.startswith(case.raw)
    else:
        assert outcome.raw == case.raw
    if case_id.endswith("-local"):
        assert len(fake.received.items) == 0


async def test_payload_of_exactly_4096_bytes_is_sent(fake: FakeAPNs, channel: APNsChannel) -> None:
    empty = json.dumps({"aps": {"alert": {"title": "T", "body": ""}}}, separators=(",", ":"))
    content = "x" * (4096 - len(empty))

    assert await channel.send([push(title="T", content=content)]) == [acked(1)]
    assert await channel.send([push(2, title="T", content=content + "x")]) == [
        Outcome(2, apns(2002), Next.MESSAGE, raw="payload is 4097 B, over APNs' 4096 B; not sent")
    ]
    assert len(fake.received.items) == 1


async def test_payload_size_counts_utf8_bytes(fake: FakeAPNs, channel: APNsChannel) -> None:
    # 1400 three-byte characters: 4200 bytes although only ~1440 characters.
    [outcome] = await channel.send([push(content="\u4e2d" * 1400)])

    assert (outcome.status, outcome.next) == (apns(2002), Next.MESSAGE)
    assert len(fake.received.items) == 0


# -- every other answer APNs documents -----------------------------------------------------

# reason -> (contract code, Next); the HTTP status is Apple's (fakes.apns.REASON_STATUS).
CONTRACT: dict[str, tuple[int, Next]] = {
    "PayloadEmpty": (2001, Next.MESSAGE),
    "PayloadTooLarge": (2002, Next.MESSAGE),
    "BadTopic": (2003, Next.CONFIG),
    "TopicDisallowed": (2004, Next.CONFIG),
    "BadMessageId": (2005, Next.MESSAGE),
    "BadExpirationDate": (2006, Next.MESSAGE),
    "BadPriority": (2007, Next.MESSAGE),
    "MissingDeviceToken": (2008, Next.MESSAGE),
    "BadDeviceToken": (2009, Next.DROP_TOKEN),
    "DeviceTokenNotForTopic": (2010, Next.DROP_TOKEN),
    "Unregistered": (2011, Next.DROP_TOKEN),
    "DuplicateHeaders": (2012, Next.MESSAGE),
    "BadCertificateEnvironment": (2013, Next.CONFIG),
    "BadCertificate": (2014, Next.CONFIG),
    "Forbidden": (2015, Next.CONFIG),
    "BadPath": (2016, Next.MESSAGE),
    "MethodNotAllowed": (2017, Next.MESSAGE),
    "TooManyRequests": (2018, Next.RETRY),
    "IdleTimeout": (2019, Next.RETRY),
    "Shutdown": (2020, Next.RETRY),
    "InternalServerError": (2021, Next.RETRY),
    "ServiceUnavailable": (2022, Next.RETRY),
    "MissingTopic": (2023, Next.CONFIG),
    "BadCollapseId": (2026, Next.MESSAGE),
    "InvalidPushType": (2027, Next.MESSAGE),
    "ExpiredProviderToken": (2028, Next.CONFIG),
    "InvalidProviderToken": (2029, Next.CONFIG),
    "MissingProviderToken": (2030, Next.CONFIG),
    "TooManyProviderTokenUpdates": (2031, Next.RETRY),
    "UnrelatedKeyIdInToken": (2032, Next.RETRY),
    "BadEnvironmentKeyIdInToken": (2033, Next.CONFIG),
    "ExpiredToken": (2034, Next.DROP_TOKEN),
}


def test_the_contract_covers_every_reason_apple_lists() -> None:
    assert set(CONTRACT) == set(REASON_STATUS)


@pytest.mark.parametrize("reason", sorted(CONTRACT))
async def test_each_apns_reason_maps_per_the_contract(
    reason: str, fake: FakeAPNs, channel: APNsChannel
) -> None:
    code, next_ = CONTRACT[reason]
    # A scripted ExpiredProviderToken leaves the token valid in the fake, which then (rightly)
    # refuses the renewed one as churn; expire_auth makes the fake see it expired too.
    expired = reason == "ExpiredProviderToken"
    fake.scenario.set(Rule(action="expire_auth") if expired else FakeAPNs.error(reason), TOKEN)

    [outcome] = await channel.send([push()])

    assert (outcome.status, outcome.next) == (contract(code), next_)
    assert outcome.raw is not None
    assert outcome.raw.split(" (")[0] == f"{REASON_STATUS[reason]} {reason}"


async def test_unknown_reason_is_none_with_the_raw_answer(
    fake: FakeAPNs, channel: APNsChannel
) -> None:
    fake.scenario.set(Rule(status=400, body={"reason": "BrandNewReason"}), token=hex_token(1))
    fake.scenario.set(Rule(status=502, body="<html>bad gateway</html>"), token=hex_token(2))
    fake.scenario.set(Rule(status=403, body={"reason": "BadDeviceToken"}), token=hex_token(3))

    outcomes = await channel.send([push(i, hex_token(i)) for i in (1, 2, 3)])

    assert by_id(outcomes) == [
        Outcome(1, statuses.NONE, Next.MESSAGE, raw="400 BrandNewReason"),
        Outcome(2, statuses.NONE, Next.RETRY, raw='502 "<html>bad gateway</html>"'),
        # a known reason under an HTTP status APNs never gives it: unmapped, token kept
        Outcome(3, statuses.NONE, Next.MESSAGE, raw="403 BadDeviceToken"),
    ]


async def test_retry_after_is_kept_in_the_outcome(fake: FakeAPNs, channel: APNsChannel) -> None:
    fake.scenario.set(FakeAPNs.error("TooManyRequests", retry_after_s=7), token=hex_token(1))
    fake.scenario.set(FakeAPNs.error("ServiceUnavailable", retry_after_s=2.5), token=hex_token(2))
    fake.scenario.set(FakeAPNs.error("InternalServerError"), token=hex_token(3))

    outcomes = await channel.send([push(i, hex_token(i)) for i in (1, 2, 3)])

    assert by_id(outcomes) == [
        Outcome(1, contract(2018), Next.RETRY, raw="429 TooManyRequests", retry_after_s=7.0),
        Outcome(2, contract(2022), Next.RETRY, raw="503 ServiceUnavailable", retry_after_s=2.5),
        Outcome(3, contract(2021), Next.RETRY, raw="500 InternalServerError"),
    ]


async def test_retry_after_as_an_http_date(fake: FakeAPNs, channel: APNsChannel) -> None:
    rule = FakeAPNs.error("ServiceUnavailable")
    rule.headers["retry-after"] = "Wed, 21 Oct 2015 07:28:00 GMT"  # long past: no wait
    fake.scenario.set(rule)

    [outcome] = await channel.send([push()])

    assert outcome.retry_after_s == 0.0


async def test_shutdown_answer_moves_later_pushes_to_a_new_connection(
    fake: FakeAPNs, channel: APNsChannel
) -> None:
    fake.scenario.set(FakeAPNs.error("Shutdown"), token=TOKEN)
    [outcome] = await channel.send([push()])
    assert (outcome.status, outcome.next) == (contract(2020), Next.RETRY)

    assert await channel.send([push(2, hex_token(2))]) == [acked(2)]
    assert fake.connections_accepted == 2


def direct_channel(
    fake: FakeAPNs, key: Key, *, alpn: list[str], response_timeout_s: float = 30.0
) -> APNsChannel:
    context = ssl.create_default_context(cadata=fake.cert_pem)
    if alpn:
        context.set_alpn_protocols(alpn)
    return APNsChannel(
        team_id=TEAM_ID,
        key_id=KEY_ID,
        private_key=key.private,
        topic=TOPIC,
        host="127.0.0.1",
        port=fake.port,
        ssl_context=context,
        response_timeout_s=response_timeout_s,
    )


async def test_answer_timeout_is_conn_closed(fake: FakeAPNs, key: Key) -> None:
    fake.scenario.set(Rule(delay_s=1.0), token=TOKEN)
    channel = direct_channel(fake, key, alpn=["h2"], response_timeout_s=0.2)
    try:
        outcomes = await channel.send([push(1), push(2, hex_token(2))])
    finally:
        await channel.close()

    assert by_id(outcomes) == [
        Outcome(1, apns(2024), Next.RETRY, raw="no answer within 0.2 s"),
        acked(2),
    ]


async def test_no_http2_agreed_is_conn_unavailable(fake: FakeAPNs, key: Key) -> None:
    channel = direct_channel(fake, key, alpn=[])  # offers no ALPN: the server picks none
    try:
        outcomes = await channel.send([push(1), push(2, hex_token(2))])
    finally:
        await channel.close()

    raw = "the server did not agree to HTTP/2 (ALPN h2)"
    assert by_id(outcomes) == [Outcome(i, apns(2025), Next.RETRY, raw=raw) for i in (1, 2)]


async def test_untrusted_server_certificate_is_conn_unavailable(fake: FakeAPNs, key: Key) -> None:
    async with open_channel(fake, key, ca_pem=None) as channel:
        outcomes = await channel.send([push(1), push(2, hex_token(2))])

    assert [(o.status, o.next) for o in by_id(outcomes)] == [(apns(2025), Next.RETRY)] * 2
    assert all((o.raw or "").startswith("SSLCertVerificationError") for o in outcomes)
    assert fake.connections_accepted == 0


async def test_refused_stream_is_sent_again_once(fake: FakeAPNs, channel: APNsChannel) -> None:
    fake.scenario.set(Rule(action="refuse", times=1), token=hex_token(1))
    fake.scenario.set(Rule(action="refuse"), token=hex_token(2))

    outcomes = await channel.send([push(1, hex_token(1)), push(2, hex_token(2))])

    assert by_id(outcomes) == [
        acked(1),
        Outcome(2, apns(2024), Next.RETRY, raw="RST_STREAM REFUSED_STREAM"),
    ]
    assert [item.path for item in fake.received.items] == [f"/3/device/{hex_token(1)}"]


# -- provider token ------------------------------------------------------------------------


async def test_one_provider_token_for_200_sends_over_two_connections(
    fake: FakeAPNs, channel: APNsChannel
) -> None:
    for start in (0, 100):
        batch = [push(i, hex_token(i)) for i in range(start, start + 100)]
        assert by_id(await channel.send(batch)) == [acked(i) for i in range(start, start + 100)]
        await channel.close()  # the next batch opens a new connection

    assert fake.connections_accepted == 2
    assert len(bearers(fake)) == 200
    assert len(set(bearers(fake))) == 1
    assert channel.tokens_minted == 1


async def test_provider_token_is_renewed_after_40_minutes(fake: FakeAPNs, key: Key) -> None:
    now = [time.time()]
    fake.clock = lambda: now[0]
    async with open_channel(fake, key, clock=lambda: now[0]) as channel:
        assert await channel.send([push(1)]) == [acked(1)]
        now[0] += 39 * 60
        assert await channel.send([push(2)]) == [acked(2)]
        now[0] += 60
        assert await channel.send([push(3)]) == [acked(3)]
        assert channel.tokens_minted == 2

    first, second, third = bearers(fake)
    assert first == second != third
    first_iat = jwt.decode(first.split()[1], options={"verify_signature": False})["iat"]
    third_iat = jwt.decode(third.split()[1], options={"verify_signature": False})["iat"]
    assert third_iat - first_iat == 40 * 60


async def test_expired_provider_token_mints_exactly_one_new_token_for_50_pushes(
    fake: FakeAPNs, channel: APNsChannel
) -> None:
    assert await channel.send([push(0, hex_token(0))]) == [acked(0)]
    fake.scenario.set(Rule(action="expire_auth", times=1))

    outcomes = await channel.send([push(i, hex_token(i)) for i in range(1, 51)])

    assert by_id(outcomes) == [acked(i) for i in range(1, 51)]
    assert channel.tokens_minted == 2
    seen = bearers(fake)
    assert len(seen) == 1 + 50 + 50  # the warm-up, 50 refused, 50 sent again
    assert len(set(seen)) == 2
    assert Counter(seen) == {seen[0]: 51, seen[-1]: 50}


async def test_provider_token_expired_again_after_renewal_is_config(
    fake: FakeAPNs, channel: APNsChannel
) -> None:
    fake.scenario.set(Rule(action="expire_auth"))  # every token, the new one too

    outcomes = await channel.send([push(i, hex_token(i)) for i in range(5)])

    assert by_id(outcomes) == [
        Outcome(i, contract(2028), Next.CONFIG, raw="403 ExpiredProviderToken") for i in range(5)
    ]
    assert channel.tokens_minted == 2
    assert len(fake.received.items) == 10


async def test_unknown_key_is_invalid_provider_token(fake: FakeAPNs) -> None:
    async with open_channel(fake, make_key()) as channel:
        [outcome] = await channel.send([push()])

    assert outcome == Outcome(1, contract(2029), Next.CONFIG, raw="403 InvalidProviderToken")
    assert channel.tokens_minted == 1


# -- GOAWAY ----------------------------------------------------------------------------------


async def test_goaway_mid_batch_resends_the_unprocessed_pushes_once(
    fake: FakeAPNs, channel: APNsChannel
) -> None:
    tokens = [hex_token(i) for i in range(20)]
    fake.scenario.set(Rule(delay_s=0.2), token=tokens[3])  # answered after the GOAWAY
    fake.scenario.set(Rule(action="goaway", times=1), token=tokens[9])

    outcomes = await channel.send([push(i, token) for i, token in enumerate(tokens)])

    assert by_id(outcomes) == [acked(i) for i in range(20)]
    paths = Counter(item.path for item in fake.received.items)
    assert paths == {f"/3/device/{token}": 1 for token in tokens}
    assert fake.connections_accepted == 2


async def test_goaway_again_after_the_resend_is_conn_closed(
    fake: FakeAPNs, channel: APNsChannel
) -> None:
    fake.scenario.set(Rule(action="goaway"), token=TOKEN)

    [outcome] = await channel.send([push()])

    assert outcome == Outcome(1, apns(2024), Next.RETRY, raw="GOAWAY Shutdown (last stream 0)")
    assert fake.connections_accepted == 2
    assert len(fake.received.items) == 0


async def test_goaway_with_a_known_reason_gets_that_reasons_status(
    fake: FakeAPNs, channel: APNsChannel
) -> None:
    rule = Rule(action="goaway", body={"reason": "BadCertificateEnvironment"})
    fake.scenario.set(rule, token=TOKEN)

    [outcome] = await channel.send([push()])

    assert outcome == Outcome(
        1, apns(2013), Next.CONFIG, raw="GOAWAY BadCertificateEnvironment (last stream 0)"
    )


# -- collapse id, settings, logs -------------------------------------------------------------


async def test_collapse_id_over_64_bytes_is_not_sent(fake: FakeAPNs, channel: APNsChannel) -> None:
    keys = {1: "k" * 64, 2: "k" * 65, 3: "\u00e9" * 33}  # 64 B, 65 B, 66 B
    batch = [push(i, hex_token(i), msg_key=msg_key) for i, msg_key in keys.items()]

    assert by_id(await channel.send(batch)) == [acked(1), acked(2), acked(3)]

    sent = {item.path: item.headers.get("apns-collapse-id") for item in fake.received.items}
    assert sent == {
        f"/3/device/{hex_token(1)}": "k" * 64,
        f"/3/device/{hex_token(2)}": None,
        f"/3/device/{hex_token(3)}": None,
    }


async def test_extras_may_not_replace_aps(fake: FakeAPNs, channel: APNsChannel) -> None:
    [outcome] = await channel.send([push(extras={"aps": "mine"})])

    assert outcome == Outcome(
        1, statuses.NONE, Next.MESSAGE, raw="extras key 'aps' is reserved for APNs; not sent"
    )
    assert len(fake.received.items) == 0


@pytest.mark.parametrize("setting", ["team_id", "key_id", "private_key", "topic"])
def test_missing_setting_is_a_config_error_naming_it(setting: str, key: Key) -> None:
    values = {"team_id": TEAM_ID, "key_id": KEY_ID, "private_key": key.private_pem}
    values["topic"] = TOPIC
    del values[setting]

    with pytest.raises(ConfigError, match=f"'{setting}'"):
        APNsChannel.create(ChannelConfig(vendor="apns", values=values))


@pytest.mark.parametrize(
    ("setting", "value", "base_url"),
    [
        ("private_key", "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----", None),
        ("environment", "staging", None),
        ("push_type", "fax", None),
        ("ca_pem", "not a certificate", None),
        ("base_url", None, "http://127.0.0.1:8443"),
    ],
)
def test_bad_setting_is_a_config_error_naming_it(
    setting: str, value: str | None, base_url: str | None, key: Key
) -> None:
    values: dict[str, Any] = {
        "team_id": TEAM_ID,
        "key_id": KEY_ID,
        "private_key": key.private_pem,
        "topic": TOPIC,
    }
    if value is not None:
        values[setting] = value

    with pytest.raises(ConfigError, match=setting) as raised:
        APNsChannel.create(ChannelConfig(vendor="apns", values=values, base_url=base_url))
    assert "not a key" not in str(raised.value)


def test_rsa_key_is_refused() -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    rsa_pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    values = {"team_id": TEAM_ID, "key_id": KEY_ID, "private_key": rsa_pem, "topic": TOPIC}

    with pytest.raises(ConfigError, match="'private_key' must be an EC P-256 key"):
        APNsChannel.create(ChannelConfig(vendor="apns", values=values))


@pytest.mark.parametrize(
    ("environment", "endpoint"),
    [
        (None, "https://api.push.apple.com"),
        ("production", "https://api.push.apple.com"),
        ("sandbox", "https://api.sandbox.push.apple.com"),
    ],
)
def test_environment_picks_the_apple_host(environment: str | None, endpoint: str, key: Key) -> None:
    values = {"team_id": TEAM_ID, "key_id": KEY_ID, "private_key": key.private_pem}
    values["topic"] = TOPIC
    if environment is not None:
        values["environment"] = environment

    channel = APNsChannel.create(ChannelConfig(vendor="apns", values=values))

    assert channel.endpoint == endpoint
    assert key.private_pem not in repr(channel)


async def test_logs_hold_no_device_token_key_or_jwt(
    fake: FakeAPNs, key: Key, caplog: pytest.LogCaptureFixture
) -> None:
    fake.unregister(TOKEN)
    fake.scenario.set(Rule(action="goaway", times=1), token=hex_token(2))
    caplog.set_level(logging.DEBUG)

    async with open_channel(fake, key) as channel:
        outcomes = await channel.send([push(1), push(2, hex_token(2))])
        assert [o.next for o in by_id(outcomes)] == [Next.DROP_TOKEN, Next.DONE]
        assert all(TOKEN not in (o.raw or "") for o in outcomes)

    assert caplog.records
    assert TOKEN not in caplog.text
    assert hex_token(2) not in caplog.text
    assert key.private_pem.splitlines()[1] not in caplog.text
    assert bearers(fake)[0].split()[1] not in caplog.text


# -- the fake on its own (any HTTP/2 client) -------------------------------------------------


def mint(key: Key, *, team_id: str = TEAM_ID, key_id: str = KEY_ID, age_s: float = 0) -> str:
    claims = {"iss": team_id, "iat": int(time.time() - age_s)}
    return jwt.encode(claims, key.private, algorithm="ES256", headers={"kid": key_id})


@asynccontextmanager
async def raw_client(fake: FakeAPNs) -> AsyncIterator[httpx.AsyncClient]:
    context = ssl.create_default_context(cadata=fake.cert_pem)
    async with httpx.AsyncClient(http2=True, verify=context, base_url=fake.url) as client:
        yield client


_MINTED: dict[int, str] = {}  # one JWT per key: a new one per request would be token churn


def apns_headers(key: Key, **changes: str | None) -> list[tuple[str, str]]:
    token = _MINTED.setdefault(id(key), mint(key))
    headers: dict[str, str | None] = {
        "authorization": f"bearer {token}",
        "apns-topic": TOPIC,
        "apns-push-type": "alert",
        "apns-priority": "10",
    }
    headers.update(changes)
    return [(name, value) for name, value in headers.items() if value is not None]


BODY = b'{"aps":{"alert":"hi"}}'


@dataclass(frozen=True)
class Refusal:
    method: str = "POST"
    path: str = f"/3/device/{TOKEN}"
    headers: Mapping[str, str | None] | None = None
    body: bytes = BODY
    extra: tuple[tuple[str, str], ...] = ()


REFUSALS: dict[str, tuple[Refusal, int, str]] = {
    "method": (Refusal(method="PUT"), 405, "MethodNotAllowed"),
    "path": (Refusal(path=f"/3/devices/{TOKEN}"), 404, "BadPath"),
    "no token": (Refusal(path="/3/device/"), 400, "MissingDeviceToken"),
    "duplicate": (Refusal(extra=(("apns-priority", "5"),)), 400, "DuplicateHeaders"),
    "no auth": (Refusal(headers={"authorization": None}), 403, "MissingProviderToken"),
    "garbage auth": (
        Refusal(headers={"authorization": "bearer x.y.z"}),
        403,
        "InvalidProviderToken",
    ),
    "apns-id": (Refusal(headers={"apns-id": "not-a-uuid"}), 400, "BadMessageId"),
    "expiration": (Refusal(headers={"apns-expiration": "soon"}), 400, "BadExpirationDate"),
    "priority": (Refusal(headers={"apns-priority": "7"}), 400, "BadPriority"),
    "push type": (Refusal(headers={"apns-push-type": "fax"}), 400, "InvalidPushType"),
    "background 10": (Refusal(headers={"apns-push-type": "background"}), 400, "BadPriority"),
    "collapse id": (Refusal(headers={"apns-collapse-id": "c" * 65}), 400, "BadCollapseId"),
    "no topic": (Refusal(headers={"apns-topic": None}), 400, "MissingTopic"),
    "bad topic": (Refusal(headers={"apns-topic": "com/example"}), 400, "BadTopic"),
    "empty body": (Refusal(body=b""), 400, "PayloadEmpty"),
    "big body": (Refusal(body=b"x" * 4097), 413, "PayloadTooLarge"),
    "voip body": (
        Refusal(headers={"apns-push-type": "voip"}, body=b"x" * 5121),
        413,
        "PayloadTooLarge",
    ),
    "odd token": (Refusal(path="/3/device/abc"), 400, "BadDeviceToken"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
async def test_fake_refuses_like_apns(case: str, fake: FakeAPNs, key: Key) -> None:
    refusal, status, reason = REFUSALS[case]
    headers = apns_headers(key, **dict(refusal.headers or {})) + list(refusal.extra)

    async with raw_client(fake) as client:
        response = await client.request(
            refusal.method, refusal.path, headers=headers, content=refusal.body
        )

    assert response.http_version == "HTTP/2"
    assert (response.status_code, response.json()) == (status, {"reason": reason})
    assert len(response.headers["apns-id"]) == 36


async def test_fake_accepts_and_echoes_apns_id(fake: FakeAPNs, key: Key) -> None:
    apns_id = "0b6a3c2e-9d7f-4e1a-8c55-2f4d9e7b1a30"
    voip = apns_headers(key, **{"apns-push-type": "voip", "apns-id": apns_id})

    async with raw_client(fake) as client:
        response = await client.post(f"/3/device/{TOKEN}", headers=voip, content=b"x" * 5120)

    assert (response.status_code, response.content) == (200, b"")
    assert response.headers["apns-id"] == apns_id
    assert "apns-unique-id" not in response.headers  # production host
    assert fake.received.items[0].body == "x" * 5120


async def test_fake_judges_jwt_age_team_and_key(fake: FakeAPNs, key: Key) -> None:
    stranger = make_key()
    cases = [
        (mint(key, age_s=3601), 403, "ExpiredProviderToken"),
        (mint(key, team_id="OTHERTEAM1"), 403, "InvalidProviderToken"),
        (mint(stranger), 403, "InvalidProviderToken"),
    ]
    for token, status, reason in cases:
        async with raw_client(fake) as client:
            headers = apns_headers(key, authorization=f"bearer {token}")
            response = await client.post(f"/3/device/{TOKEN}", headers=headers, content=BODY)
        assert (response.status_code, response.json()) == (status, {"reason": reason})


async def test_fake_refuses_token_churn_and_a_second_key_on_one_connection(
    fake: FakeAPNs, key: Key
) -> None:
    other = make_key()
    fake.add_key(TEAM_ID, "KEY7654321", other.public_pem)
    first, second = mint(key), mint(key, age_s=5)
    third = mint(other, key_id="KEY7654321")

    async with raw_client(fake) as client:
        answers = []
        for token in (first, first, second, third):
            headers = apns_headers(key, authorization=f"bearer {token}")
            response = await client.post(f"/3/device/{TOKEN}", headers=headers, content=BODY)
            answers.append((response.status_code, response.content and response.json()))

    assert answers == [
        (200, b""),
        (200, b""),
        (429, {"reason": "TooManyProviderTokenUpdates"}),
        (403, {"reason": "UnrelatedKeyIdInToken"}),
    ]
    assert fake.connections_accepted == 1


async def test_fake_control_endpoints(fake: FakeAPNs, key: Key) -> None:
    rule = {"status": 410, "body": {"reason": "Unregistered", "timestamp": 5}}

    async with raw_client(fake) as client:
        set_rule = await client.post("/__fake__/scenario", json={"token": TOKEN, "rule": rule})
        pushed = await client.post(f"/3/device/{TOKEN}", headers=apns_headers(key), content=BODY)
        other = await client.post(
            f"/3/device/{hex_token(1)}", headers=apns_headers(key), content=BODY
        )
        received = await client.get("/__fake__/received")
        cleared = [await client.delete(f"/__fake__/{name}") for name in ("scenario", "received")]
        bad_rule = await client.post(
            "/__fake__/scenario", json={"token": None, "rule": {"action": "explode"}}
        )
        after = await client.get("/__fake__/received")
        short = await client.post(
            "/__fake__/scenario", json={"token": TOKEN, "error": "BadDeviceToken"}
        )
        refused = await client.post(f"/3/device/{TOKEN}", headers=apns_headers(key), content=BODY)

    assert (set_rule.status_code, set_rule.json()) == (200, {"ok": True})
    assert (short.status_code, short.json()) == (200, {"ok": True})
    assert (refused.status_code, refused.json()) == (400, {"reason": "BadDeviceToken"})
    assert (pushed.status_code, pushed.json()) == (410, {"reason": "Unregistered", "timestamp": 5})
    assert other.status_code == 200
    paths = [item["path"] for item in received.json()["received"]]
    assert paths == [f"/3/device/{TOKEN}", f"/3/device/{hex_token(1)}"]
    assert [response.status_code for response in cleared] == [200, 200]
    assert bad_rule.status_code == 400
    assert after.json() == {"received": []}
    assert list(fake.scenario.as_json()) == [TOKEN]  # only the rule set with "error"


async def test_fake_keys_endpoint_registers_a_key(fake: FakeAPNs) -> None:
    newcomer = make_key()
    key_body = {
        "team_id": "TEAM999999",
        "key_id": "KEY9999999",
        "public_key_pem": newcomer.public_pem,
    }
    token = mint(newcomer, team_id="TEAM999999", key_id="KEY9999999")

    async with raw_client(fake) as client:
        added = await client.post("/__fake__/keys", json=key_body)
        headers = apns_headers(newcomer, authorization=f"bearer {token}")
        pushed = await client.post(f"/3/device/{TOKEN}", headers=headers, content=BODY)

    assert added.json() == {"keys": ["KEY1234567", "KEY9999999"]}
    assert pushed.status_code == 200


async def test_fake_raises_the_stream_limit_after_the_first_good_token(
    fake: FakeAPNs, key: Key
) -> None:
    fake.scenario.set(Rule(delay_s=0.1))
    async with raw_client(fake) as client:
        requests = [
            client.post(f"/3/device/{hex_token(i)}", headers=apns_headers(key), content=BODY)
            for i in range(5)
        ]
        responses = await asyncio.gather(*requests)

    assert [response.status_code for response in responses] == [200] * 5
    assert fake.peak_open_streams == 4  # one alone first, then the other four at once


# -- certificate auth ----------------------------------------------------------------------


def cert_config(
    fake: FakeAPNs, cert_pem: str, key_pem: str | None, **changes: Any
) -> ChannelConfig:
    values: dict[str, Any] = {"topic": TOPIC, "ca_pem": fake.cert_pem}
    if key_pem is None:
        values["certificate"] = cert_pem
    else:
        values["certificate"], values["certificate_key"] = cert_pem, key_pem
    values.update(changes)
    return ChannelConfig(
        vendor="apns", values=values, base_url=fake.url, secret_keys=APNsChannel.secret_keys
    )


async def cert_send(config_: ChannelConfig, items: list[Outbound]) -> list[Outcome]:
    channel = APNsChannel.create(config_)
    try:
        return by_id(await channel.send(items))
    finally:
        await channel.close()


@pytest.mark.parametrize("separate_key", [False, True])
async def test_certificate_auth_sends_no_authorization_header(
    separate_key: bool, fake: FakeAPNs
) -> None:
    cert_pem, key_pem = fake.issue_client_certificate(TOPIC)
    settings = (
        cert_config(fake, cert_pem, key_pem)
        if separate_key
        else cert_config(fake, cert_pem + key_pem, None)
    )

    outcomes = await cert_send(settings, [push(1, msg_key="m1"), push(2, hex_token(2))])

    assert outcomes == [acked(1), acked(2)]
    assert fake.connections_accepted == 1
    first = next(item for item in fake.received.items if item.path == f"/3/device/{TOKEN}")
    assert dict(first.headers) == {
        ":method": "POST",
        ":scheme": "https",
        ":path": f"/3/device/{TOKEN}",
        ":authority": f"127.0.0.1:{fake.port}",
        "apns-topic": TOPIC,
        "apns-push-type": "alert",
        "apns-priority": "10",
        "apns-expiration": EXPIRES_HEADER,
        "apns-collapse-id": "m1",
    }
    assert all("authorization" not in dict(item.headers) for item in fake.received.items)


async def test_certificate_for_another_topic_is_topic_disallowed(fake: FakeAPNs) -> None:
    cert_pem, key_pem = fake.issue_client_certificate("com.example.other")

    outcomes = await cert_send(cert_config(fake, cert_pem, key_pem), [push(1)])

    assert outcomes == [Outcome(1, apns(2004), Next.CONFIG, raw="400 TopicDisallowed")]


async def test_certificate_extra_topics_allow_the_voip_topic(fake: FakeAPNs) -> None:
    cert_pem, key_pem = fake.issue_client_certificate(TOPIC, extra_topics=[f"{TOPIC}.voip"])
    settings = cert_config(fake, cert_pem, key_pem, push_type="voip")

    assert await cert_send(settings, [push(1)]) == [acked(1)]
    assert "authorization" not in dict(fake.received.items[0].headers)
    assert dict(fake.received.items[0].headers)["apns-topic"] == f"{TOPIC}.voip"


async def test_certificate_from_another_ca_is_bad_certificate(fake: FakeAPNs) -> None:
    other = FakeAPNs()  # never started: only its CA is used, to sign a certificate
    cert_pem, key_pem = other.issue_client_certificate(TOPIC)

    [outcome] = await cert_send(cert_config(fake, cert_pem, key_pem), [push(1)])

    assert (outcome.status, outcome.next) == (apns(2014), Next.CONFIG)
    # The TLS 1.3 alert rarely reaches asyncio: either it or the bare close counts.
    assert (outcome.raw or "").endswith("refused the client certificate")
    assert len(fake.received.items) == 0


async def test_revoked_certificate_gets_goaway_bad_certificate(fake: FakeAPNs) -> None:
    cert_pem, key_pem = fake.issue_client_certificate(TOPIC)
    fake.revoke_client_certificate(cert_pem)

    outcomes = await cert_send(cert_config(fake, cert_pem, key_pem), [push(1), push(2, "ab")])

    raw = "GOAWAY BadCertificate (last stream 0)"
    assert outcomes == [Outcome(i, apns(2014), Next.CONFIG, raw=raw) for i in (1, 2)]
    assert len(fake.received.items) == 0


async def test_sandbox_certificate_on_the_production_host_is_bad_environment(
    fake: FakeAPNs,
) -> None:
    cert_pem, key_pem = fake.issue_client_certificate(TOPIC, environment="sandbox")

    outcomes = await cert_send(cert_config(fake, cert_pem, key_pem), [push(1)])

    assert outcomes == [Outcome(1, apns(2013), Next.CONFIG, raw="403 BadCertificateEnvironment")]


def test_neither_auth_kind_is_a_config_error_naming_both() -> None:
    values = {"topic": TOPIC}

    with pytest.raises(ConfigError, match=r"'private_key'.*'certificate'"):
        APNsChannel.create(ChannelConfig(vendor="apns", values=values))


def test_both_auth_kinds_is_a_config_error_naming_them(fake: FakeAPNs, key: Key) -> None:
    cert_pem, key_pem = fake.issue_client_certificate(TOPIC)
    values = {
        "team_id": TEAM_ID,
        "key_id": KEY_ID,
        "private_key": key.private_pem,
        "certificate": cert_pem + key_pem,
        "topic": TOPIC,
    }

    with pytest.raises(ConfigError, match=r"'private_key'.*'certificate'.*not both"):
        APNsChannel.create(ChannelConfig(vendor="apns", values=values))


def test_certificate_auth_still_needs_a_topic(fake: FakeAPNs) -> None:
    cert_pem, key_pem = fake.issue_client_certificate(TOPIC)
    values = {"certificate": cert_pem, "certificate_key": key_pem}

    with pytest.raises(ConfigError, match="'topic'"):
        APNsChannel.create(ChannelConfig(vendor="apns", values=values))


@pytest.mark.parametrize("missing_key", [False, True])
def test_unreadable_certificate_is_a_config_error(missing_key: bool, fake: FakeAPNs) -> None:
    cert_pem, key_pem = fake.issue_client_certificate(TOPIC)
    values = {"topic": TOPIC, "certificate": cert_pem}  # no key anywhere
    if not missing_key:
        values["certificate"] = "-----BEGIN CERTIFICATE-----\nnot a cert\n-----END CERTIFICATE-----"
        values["certificate_key"] = key_pem

    with pytest.raises(ConfigError, match="'certificate'") as raised:
        APNsChannel.create(ChannelConfig(vendor="apns", values=values))
    assert "PRIVATE KEY" not in str(raised.value) and "not a cert" not in str(raised.value)


def test_certificate_settings_are_secret() -> None:
    assert {"private_key", "certificate", "certificate_key"} <= APNsChannel.secret_keys
