"""Tests for openmps.mps.signature: the reference 2.3 vector, refusals, and the real SDK."""

from __future__ import annotations

import hashlib
import random
import string
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from alibabacloud_mpaas20201028 import models as mpaas_models
from alibabacloud_mpaas20201028.client import Client as MpaasClient
from alibabacloud_tea_openapi.utils import Utils
from alibabacloud_tea_openapi.utils_models import Config
from darabonba.core import DaraCore
from darabonba.request import DaraRequest
from darabonba.response import DaraResponse

from openmps.errors import ApiError
from openmps.mps.form import parse_form
from openmps.mps.signature import (
    Authorization,
    NonceCache,
    canonical_request,
    check_date,
    parse_authorization,
    sign,
    verify,
)

# --- Reference 2.3 ----------------------------------------------------------------------------

AK_ID = "LTAI5tTESTKEYID0001"
AK_SECRET = "TestSecret0123456789abcdefABCDEF"
BODY = (
    b"AppId=ONEX570DA89211721&Content=Hi+there%21&DeliveryType=3&ExpiredSeconds=300"
    b"&TargetMsgkey=%7B%22user-1001%22%3A%22msg-0001%22%7D&Title=Hello&WorkspaceId=default"
)
BODY_SHA256 = "fe3e57389fc1723402c2a7cec0b90c77d602f4a008f2f76ec525b9072b0dd3ae"
HEADERS = {
    "accept": "application/json",
    "content-type": "application/x-www-form-urlencoded",
    "host": "127.0.0.1:18777",
    "user-agent": "AlibabaCloud (Linux; x86_64) Python/3.11.7 Core/0.4.3 TeaDSL/2",
    "x-acs-action": "PushSimple",
    "x-acs-content-sha256": BODY_SHA256,
    "x-acs-credentials-provider": "static_ak",
    "x-acs-date": "2025-01-15T08:30:00Z",
    "x-acs-signature-nonce": "3a7f0c2e9b1d4e5f8a6b7c8d9e0f1a2b",
    "x-acs-version": "2020-10-28",
}
SIGNED = tuple(sorted(HEADERS))
CANONICAL_SHA256 = "a44dd69bcb1696322a4de9b3122f4d295353e12b0f25c4739b57edddf3bd13d5"
SIGNATURE = "16006e6f208904dde55642447c948cc860447a0e4b24fc0eae1b99a8768924d5"
AUTH_VALUE = (
    f"ACS3-HMAC-SHA256 Credential={AK_ID},SignedHeaders={';'.join(SIGNED)},Signature={SIGNATURE}"
)
AUTH = Authorization(access_key_id=AK_ID, signed_headers=SIGNED, signature=SIGNATURE)


def _verify(
    *,
    headers: dict[str, str] = HEADERS,
    body: bytes = BODY,
    secret: str = AK_SECRET,
    auth: Authorization = AUTH,
) -> None:
    verify(
        method="POST",
        path="/",
        query={},
        headers=headers,
        body=body,
        secret=secret,
        auth=auth,
    )


def _api_error(exc_info: pytest.ExceptionInfo[ApiError]) -> tuple[int, str]:
    return exc_info.value.http_status, exc_info.value.code


def test_vector_body_hash() -> None:
    assert len(BODY) == 161
    assert hashlib.sha256(BODY).hexdigest() == BODY_SHA256


def test_vector_canonical_request_and_signature() -> None:
    canonical = canonical_request("POST", "/", {}, HEADERS, SIGNED, BODY_SHA256)
    assert canonical.startswith("POST\n/\n\naccept:application/json\n")
    assert f"x-acs-version:2020-10-28\n\n{';'.join(SIGNED)}\n{BODY_SHA256}" in canonical
    assert hashlib.sha256(canonical.encode()).hexdigest() == CANONICAL_SHA256
    assert sign(AK_SECRET, canonical) == SIGNATURE


def test_canonical_request_empty_path_and_query_encoding() -> None:
    canonical = canonical_request(
        "POST", "", {"b": "x y~*", "a": "1/2"}, {"host": "h"}, ["host"], "p"
    )
    assert canonical == "POST\n/\na=1%2F2&b=x%20y~%2A\nhost:h\n\nhost\np"


def test_vector_authorization_parses() -> None:
    assert parse_authorization(AUTH_VALUE) == AUTH


def test_vector_verifies() -> None:
    _verify()


def test_mixed_case_header_names_and_padded_values_verify() -> None:
    headers = {
        "-".join(part.capitalize() for part in name.split("-")): f"  {value} "
        for name, value in HEADERS.items()
    }
    assert "X-Acs-Date" in headers
    headers["Authorization"] = AUTH_VALUE
    headers["Content-Length"] = "161"
    _verify(headers=headers)


def test_tampered_body_is_refused() -> None:
    with pytest.raises(ApiError) as exc_info:
        _verify(body=BODY.replace(b"Hello", b"Hellp"))
    assert _api_error(exc_info) == (400, "ContentSHA256Mismatch")
    assert exc_info.value.message.startswith(
        f"x-acs-content-sha256 is '{BODY_SHA256}' but the SHA-256 of the 161-byte body is "
    )


def test_tampered_body_with_updated_hash_is_refused() -> None:
    body = BODY.replace(b"Hello", b"Hellp")
    headers = {**HEADERS, "x-acs-content-sha256": hashlib.sha256(body).hexdigest()}
    with pytest.raises(ApiError) as exc_info:
        _verify(headers=headers, body=body)
    assert _api_error(exc_info) == (400, "SignatureDoesNotMatch")


def test_wrong_secret_is_refused() -> None:
    with pytest.raises(ApiError) as exc_info:
        _verify(secret=AK_SECRET + "x")
    assert _api_error(exc_info) == (400, "SignatureDoesNotMatch")
    assert exc_info.value.message == (
        "the request signature does not match the one computed with the AccessKey secret of "
        "'LTAI5tTESTKEYID0001'; check the AccessKey secret, and that the endpoint (host and "
        "port) you configured is the one the request reaches"
    )


def test_changed_signed_header_is_refused() -> None:
    with pytest.raises(ApiError) as exc_info:
        _verify(headers={**HEADERS, "host": "127.0.0.1:18778"})
    assert _api_error(exc_info) == (400, "SignatureDoesNotMatch")


def test_signed_headers_without_date_are_refused() -> None:
    signed = tuple(name for name in SIGNED if name != "x-acs-date")
    with pytest.raises(ApiError) as exc_info:
        _verify(auth=Authorization(AK_ID, signed, SIGNATURE))
    assert _api_error(exc_info) == (400, "IncompleteSignature")
    assert exc_info.value.message == (
        "SignedHeaders must include host, x-acs-action, x-acs-version, x-acs-date, "
        "x-acs-signature-nonce, x-acs-content-sha256; missing: x-acs-date. Sign every x-acs-* "
        "header and host, as the Alibaba Cloud SDK does"
    )


def test_signed_header_absent_from_request_is_refused() -> None:
    headers = {name: value for name, value in HEADERS.items() if name != "user-agent"}
    with pytest.raises(ApiError) as exc_info:
        _verify(headers=headers)
    assert _api_error(exc_info) == (400, "IncompleteSignature")
    assert exc_info.value.message == (
        "SignedHeaders lists user-agent but the request does not carry that header; send every "
        "header you sign (a proxy may have removed it)"
    )


# --- parse_authorization ----------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", "   "])
def test_missing_authorization(value: str | None) -> None:
    with pytest.raises(ApiError) as exc_info:
        parse_authorization(value)
    assert _api_error(exc_info) == (400, "MissingAuthorization")
    assert exc_info.value.message.startswith("the request has no Authorization header. Sign it")


@pytest.mark.parametrize(
    ("value", "scheme"),
    [
        (AUTH_VALUE.replace("ACS3-HMAC-SHA256", "ACS3-HMAC-SM3"), "'ACS3-HMAC-SM3'"),
        (AUTH_VALUE.replace("ACS3-HMAC-SHA256", "ACS3-RSA-SHA256"), "'ACS3-RSA-SHA256'"),
        ("Bearer abc.def.ghi", "'Bearer'"),
        ("HMAC-SHA1", "'HMAC-SHA1'"),
    ],
)
def test_unsupported_signature_type(value: str, scheme: str) -> None:
    with pytest.raises(ApiError) as exc_info:
        parse_authorization(value)
    assert _api_error(exc_info) == (400, "UnsupportedSignatureType")
    assert exc_info.value.message.startswith(f"the Authorization scheme {scheme}")
    assert "sign requests with ACS3-HMAC-SHA256" in exc_info.value.message


def test_unsupported_known_algorithm_message() -> None:
    with pytest.raises(ApiError) as exc_info:
        parse_authorization("ACS3-HMAC-SM3 Credential=a,SignedHeaders=host,Signature=00")
    assert exc_info.value.message == (
        "the Authorization scheme 'ACS3-HMAC-SM3' (a known Alibaba Cloud algorithm) is not "
        "supported; sign requests with ACS3-HMAC-SHA256 using an AccessKey pair (leave "
        "Config.signature_algorithm unset in the Alibaba Cloud SDK)"
    )


GOOD_SIG = "0" * 64


@pytest.mark.parametrize(
    ("value", "what"),
    [
        (
            "Credential=a,SignedHeaders=host,Signature=x",
            "it does not start with 'ACS3-HMAC-SHA256 '",
        ),
        ("ACS3-HMAC-SHA256", "it has no Credential, SignedHeaders and Signature"),
        (
            f"ACS3-HMAC-SHA256 Credential=a;SignedHeaders=host;Signature={GOOD_SIG}",
            "SignedHeaders is missing or empty",
        ),
        (
            f"ACS3-HMAC-SHA256 Credential=a,Signature={GOOD_SIG}",
            "SignedHeaders is missing or empty",
        ),
        ("ACS3-HMAC-SHA256 Credential=a,SignedHeaders=host", "Signature is missing or empty"),
        (
            f"ACS3-HMAC-SHA256 Credential=,SignedHeaders=host,Signature={GOOD_SIG}",
            "Credential is missing or empty",
        ),
        (
            f"ACS3-HMAC-SHA256 Credential=a,SignedHeaders=host,Signature={GOOD_SIG},x",
            "the part 'x' is not name=value",
        ),
        (
            f"ACS3-HMAC-SHA256 Credential=a,SignedHeaders=host,Signature={GOOD_SIG},Region=x",
            "unknown parameter 'Region'",
        ),
        (
            f"ACS3-HMAC-SHA256 Credential=a,Credential=b,SignedHeaders=host,Signature={GOOD_SIG}",
            "Credential appears twice",
        ),
        (
            f"ACS3-HMAC-SHA256 Credential=a b,SignedHeaders=host,Signature={GOOD_SIG}",
            "Credential contains whitespace",
        ),
        (
            f"ACS3-HMAC-SHA256 Credential=a,SignedHeaders=host;X-Acs-Date,Signature={GOOD_SIG}",
            "SignedHeaders entry 'X-Acs-Date' is not a lowercase header name",
        ),
        (
            f"ACS3-HMAC-SHA256 Credential=a,SignedHeaders=host;;date,Signature={GOOD_SIG}",
            "SignedHeaders entry '' is not a lowercase header name",
        ),
        (
            f"ACS3-HMAC-SHA256 Credential=a,SignedHeaders=host;host,Signature={GOOD_SIG}",
            "SignedHeaders lists a header more than once",
        ),
        (
            "ACS3-HMAC-SHA256 Credential=a,SignedHeaders=host,Signature=abc",
            "Signature 'abc' is not 64 hex digits",
        ),
    ],
)
def test_incomplete_signature(value: str, what: str) -> None:
    with pytest.raises(ApiError) as exc_info:
        parse_authorization(value)
    assert _api_error(exc_info) == (400, "IncompleteSignature")
    assert exc_info.value.message == (
        f"the Authorization header is malformed: {what}. Expected 'ACS3-HMAC-SHA256 "
        "Credential=<AccessKeyId>,SignedHeaders=<name;name;...>,Signature=<64 hex digits>', "
        "as the Alibaba Cloud SDK sends it"
    )


def test_authorization_leniency() -> None:
    value = f"  acs3-hmac-sha256 Credential={AK_ID}, SignedHeaders={';'.join(SIGNED)} , "
    value += f"Signature={SIGNATURE.upper()}  "
    assert parse_authorization(value) == AUTH


# --- check_date -------------------------------------------------------------------------------

NOW = datetime(2025, 1, 15, 8, 30, 0, tzinfo=UTC)


@pytest.mark.parametrize("offset", [-900, -1, 0, 1, 900])
def test_date_inside_window(offset: int) -> None:
    sent = (NOW + timedelta(seconds=offset)).strftime("%Y-%m-%dT%H:%M:%SZ")
    check_date(sent, now=NOW, window_s=900)


def test_date_window_edge_with_fractional_now() -> None:
    now = NOW + timedelta(milliseconds=500)
    check_date("2025-01-15T08:45:00Z", now=now, window_s=900)
    with pytest.raises(ApiError) as exc_info:
        check_date("2025-01-15T08:15:00Z", now=now, window_s=900)
    assert _api_error(exc_info) == (400, "InvalidTimeStamp.Expired")


def test_date_ahead_of_window() -> None:
    with pytest.raises(ApiError) as exc_info:
        check_date("2025-01-15T08:45:01Z", now=NOW, window_s=900)
    assert _api_error(exc_info) == (400, "InvalidTimeStamp.Expired")
    assert exc_info.value.message == (
        "x-acs-date 2025-01-15T08:45:01Z is 901 s ahead of the server time 2025-01-15T08:30:00Z; "
        "the allowed skew is 900 s either way. Synchronise the client clock (NTP) and send a "
        "fresh request"
    )


def test_date_behind_window() -> None:
    with pytest.raises(ApiError) as exc_info:
        check_date("2025-01-15T08:14:59Z", now=NOW, window_s=900)
    assert _api_error(exc_info) == (400, "InvalidTimeStamp.Expired")
    assert "is 901 s behind the server time 2025-01-15T08:30:00Z" in exc_info.value.message


def test_date_server_time_shown_in_utc() -> None:
    now = NOW.astimezone(timezone(timedelta(hours=8)))
    assert now.hour == 16
    with pytest.raises(ApiError) as exc_info:
        check_date("2025-01-16T08:30:00Z", now=now, window_s=60)
    assert "the server time 2025-01-15T08:30:00Z;" in exc_info.value.message


@pytest.mark.parametrize(
    "value", ["2025-01-15 08:30:00", "2025-01-15T08:30:00+08:00", "1736929800", "garbage"]
)
def test_date_bad_format(value: str) -> None:
    with pytest.raises(ApiError) as exc_info:
        check_date(value, now=NOW, window_s=900)
    assert _api_error(exc_info) == (400, "InvalidTimeStamp.Format")
    assert exc_info.value.message == (
        f"x-acs-date {value!r} is not in the format yyyy-MM-ddTHH:mm:ssZ (UTC, for example "
        "2025-01-15T08:30:00Z)"
    )


@pytest.mark.parametrize("value", [None, ""])
def test_date_missing(value: str | None) -> None:
    with pytest.raises(ApiError) as exc_info:
        check_date(value, now=NOW, window_s=900)
    assert _api_error(exc_info) == (400, "InvalidTimeStamp.Format")
    assert exc_info.value.message.startswith("the x-acs-date header is missing;")


def test_date_needs_aware_now() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        check_date("2025-01-15T08:30:00Z", now=NOW.replace(tzinfo=None), window_s=900)


# --- NonceCache -------------------------------------------------------------------------------


def test_nonce_repeat_is_refused() -> None:
    cache = NonceCache(window_s=900)
    cache.remember(AK_ID, "n1", 1000.0)
    cache.remember("other-key", "n1", 1000.0)
    cache.remember(AK_ID, "n2", 1000.0)
    with pytest.raises(ApiError) as exc_info:
        cache.remember(AK_ID, "n1", 1899.0)
    assert _api_error(exc_info) == (400, "SignatureNonceUsed")
    assert exc_info.value.message == (
        "the signature nonce 'n1' was already used within the last 900 s; generate a new nonce "
        "for every request, including retries"
    )


def test_nonce_expires_after_window() -> None:
    cache = NonceCache(window_s=900)
    cache.remember(AK_ID, "n1", 1000.0)
    with pytest.raises(ApiError):
        cache.remember(AK_ID, "n1", 1900.0)
    cache.remember(AK_ID, "n1", 1900.5)
    assert len(cache) == 1
    with pytest.raises(ApiError):
        cache.remember(AK_ID, "n1", 1901.0)


def test_nonce_old_entries_are_dropped() -> None:
    cache = NonceCache(window_s=10)
    for i in range(100):
        cache.remember(AK_ID, f"n{i}", float(i))
    assert len(cache) == 11


def test_nonce_eviction_bound() -> None:
    cache = NonceCache(window_s=900, max_entries=3)
    for i in range(5):
        cache.remember(AK_ID, f"n{i}", 1000.0 + i)
    assert len(cache) == 3
    cache.remember(AK_ID, "n0", 1010.0)  # evicted, so accepted again
    assert len(cache) == 3
    with pytest.raises(ApiError):
        cache.remember(AK_ID, "n4", 1011.0)


@pytest.mark.parametrize("nonce", ["", "  "])
def test_nonce_missing(nonce: str) -> None:
    cache = NonceCache(window_s=900)
    with pytest.raises(ApiError) as exc_info:
        cache.remember(AK_ID, nonce, 1.0)
    assert _api_error(exc_info) == (400, "MissingSignatureNonce")
    assert exc_info.value.message.startswith(
        "the x-acs-signature-nonce header is missing or empty;"
    )
    assert len(cache) == 0


def test_nonce_cache_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        NonceCache(window_s=0)
    with pytest.raises(ValueError):
        NonceCache(window_s=1, max_entries=0)


# --- Requests signed by the real SDK ----------------------------------------------------------


def _random_text(rng: random.Random, alphabet: str, low: int, high: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(low, high)))


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(5 if depth < 2 else 3)
    if kind == 0:
        return rng.randint(-(10**9), 10**9)
    if kind in (1, 2):
        return _random_text(rng, string.printable + "中文😀“”", 0, 30)
    if kind == 3:
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(1, 3))]
    return {
        _random_text(rng, string.ascii_letters, 1, 8): _random_value(rng, depth + 1)
        for _ in range(rng.randint(1, 3))
    }


@pytest.mark.parametrize("seed", range(50))
def test_sdk_signed_random_requests_verify(seed: int) -> None:
    rng = random.Random(seed)
    fields = {
        _random_text(rng, string.ascii_letters, 1, 12): _random_value(rng)
        for _ in range(rng.randint(0, 8))
    }
    body = str(Utils.to_form(fields)).encode("utf-8")
    payload_hash = hashlib.sha256(body).hexdigest()

    request = DaraRequest()
    request.method = "POST"
    request.pathname = "/"
    request.query = {
        _random_text(rng, string.ascii_letters, 1, 8): _random_text(rng, string.printable, 0, 20)
        for _ in range(rng.randint(0, 3))
    }
    headers: dict[str, str] = {
        "host": f"127.0.0.1:{rng.randint(1, 65535)}",
        "x-acs-version": "2020-10-28",
        "x-acs-action": rng.choice(["PushSimple", "PushMultiple", "PushBroadcast"]),
        "user-agent": Utils.get_user_agent(None),
        "x-acs-date": Utils.get_timestamp(),
        "x-acs-signature-nonce": Utils.get_nonce(),
        "accept": "application/json",
        "content-type": "application/x-www-form-urlencoded",
        "x-acs-content-sha256": payload_hash,
        "x-acs-credentials-provider": "static_ak",
    }
    for _ in range(rng.randint(0, 4)):
        name = _random_text(rng, string.ascii_letters + "-", 1, 15).strip("-") or "x"
        if name.lower() not in {key.lower() for key in headers}:
            padding = rng.choice(["", " ", "  "])
            printable = string.ascii_letters + string.digits + " ;,=/"
            headers[name] = padding + _random_text(rng, printable, 1, 20) + padding
    request.headers = dict(headers)
    secret = _random_text(rng, string.ascii_letters + string.digits, 16, 40)
    access_key_id = "LTAI" + _random_text(rng, string.ascii_letters + string.digits, 8, 20)

    value = Utils.get_authorization(
        request, "ACS3-HMAC-SHA256", payload_hash, access_key_id, secret
    )
    auth = parse_authorization(str(value))
    assert auth.access_key_id == access_key_id
    verify(
        method="POST",
        path="/",
        query=request.query,
        headers=headers,
        body=body,
        secret=secret,
        auth=auth,
    )
    with pytest.raises(ApiError) as exc_info:
        verify(
            method="POST",
            path="/",
            query={**request.query, "Extra": "1"},
            headers=headers,
            body=body,
            secret=secret,
            auth=auth,
        )
    assert exc_info.value.code == "SignatureDoesNotMatch"


def test_real_client_push_simple_verifies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Drive the real mpaas client; capture the request it would send and check it."""
    captured: list[Any] = []

    def fake_do_action(request: Any, runtime_option: Any = None) -> Any:
        captured.append(request)
        response = DaraResponse()
        response.status_code = 200
        response.headers = {"content-type": "application/json"}
        response.body = b'{"RequestId":"r-1","ResultCode":"OK","ResultMessage":""}'
        return response

    monkeypatch.setattr(DaraCore, "do_action", staticmethod(fake_do_action))
    client = MpaasClient(
        Config(
            endpoint="127.0.0.1:18777",
            protocol="HTTP",
            access_key_id=AK_ID,
            access_key_secret=AK_SECRET,
        )
    )
    result = client.push_simple(
        mpaas_models.PushSimpleRequest(
            app_id="ONEX570DA89211721",
            workspace_id="default",
            title="Hello wörld “quoted”",
            content="Hi there! 1+1=2 & more",
            delivery_type=3,
            expired_seconds=300,
            target_msgkey='{"user-1001":"msg-0001"}',
            transparent_message_payload={"x": 1, "nested": {"list": ["a", "b"]}},
            notify_level={"oppo": "2"},
        )
    )
    assert result.body.result_code == "OK"
    assert len(captured) == 1
    sent = captured[0]
    headers = {str(k): str(v) for k, v in sent.headers.items()}
    body = sent.body if isinstance(sent.body, bytes) else str(sent.body).encode("utf-8")

    auth = parse_authorization(headers.get("Authorization"))
    assert auth.access_key_id == AK_ID
    verify(
        method=str(sent.method),
        path=str(sent.pathname),
        query={str(k): str(v) for k, v in sent.query.items()},
        headers=headers,
        body=body,
        secret=AK_SECRET,
        auth=auth,
    )
    check_date(headers["x-acs-date"], now=datetime.now(UTC), window_s=900)
    nonces = NonceCache(window_s=1800)
    nonces.remember(auth.access_key_id, headers["x-acs-signature-nonce"], time.time())

    form = parse_form(body)
    assert form["Title"] == "Hello wörld “quoted”"
    assert form["Content"] == "Hi there! 1+1=2 & more"
    assert form["TransparentMessagePayload.nested.list.2"] == "b"
    assert form["NotifyLevel"] == '{"oppo":"2"}'
