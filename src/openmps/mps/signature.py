"""ACS3-HMAC-SHA256 request signatures, as the Alibaba Cloud SDK produces them (reference 2).

The pieces, in the order a request handler uses them::

    auth = parse_authorization(headers.get("authorization"))
    secret = <look up auth.access_key_id>
    verify(method=..., path=..., query=..., headers=..., body=..., secret=secret, auth=auth)
    check_date(headers.get("x-acs-date"), now=datetime.now(UTC), window_s=900)
    nonces.remember(auth.access_key_id, headers.get("x-acs-signature-nonce", ""), time.time())

Every refusal is an :class:`~openmps.errors.ApiError` with HTTP status 400 and an Alibaba Cloud
style code; its message says what was wrong and how to fix it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

from openmps.errors import ApiError

ALGORITHM = "ACS3-HMAC-SHA256"
"""The only signature algorithm openmps accepts."""

DATE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
"""The ``x-acs-date`` format: ISO 8601 in UTC, whole seconds, ``Z`` suffix."""

REQUIRED_SIGNED_HEADERS: tuple[str, ...] = (
    "host",
    "x-acs-action",
    "x-acs-version",
    "x-acs-date",
    "x-acs-signature-nonce",
    "x-acs-content-sha256",
)
"""Headers every request must sign (reference 2.2, rule 3)."""

_KNOWN_OTHER_ALGORITHMS = ("ACS3-HMAC-SM3", "ACS3-RSA-SHA256")
_SCHEME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_HEADER_NAME_RE = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+")
_SIGNATURE_RE = re.compile(r"[0-9a-fA-F]{64}")
_MAX_SHOWN = 80


@dataclass(frozen=True)
class Authorization:
    """The parsed ``Authorization`` header of an ACS3-HMAC-SHA256 request."""

    access_key_id: str
    signed_headers: tuple[str, ...]
    signature: str
    """Lowercase hex, 64 digits."""


def _shown(value: str) -> str:
    """``repr`` of a client-supplied value, cut short so that messages stay readable."""
    if len(value) > _MAX_SHOWN:
        return repr(value[:_MAX_SHOWN]) + "..."
    return repr(value)


def _incomplete(what: str) -> ApiError:
    return ApiError(
        400,
        "IncompleteSignature",
        f"the Authorization header is malformed: {what}. Expected "
        f"'{ALGORITHM} Credential=<AccessKeyId>,SignedHeaders=<name;name;...>,"
        "Signature=<64 hex digits>', as the Alibaba Cloud SDK sends it",
    )


def parse_authorization(value: str | None) -> Authorization:
    """Parse an ``Authorization`` header value; raise :class:`ApiError` (400) if unusable.

    A missing or blank value raises ``MissingAuthorization``; another scheme or algorithm
    (``ACS3-HMAC-SM3``, ``ACS3-RSA-SHA256``, ``Bearer`` ...) raises
    ``UnsupportedSignatureType``; anything else that does not parse raises
    ``IncompleteSignature``. The scheme name is matched case-insensitively (RFC 9110 11.1);
    parameter names are matched exactly. Whitespace around the commas is tolerated.
    """
    if value is None or not value.strip():
        raise ApiError(
            400,
            "MissingAuthorization",
            "the request has no Authorization header. Sign it with "
            f"{ALGORITHM} using an AccessKey pair, for example with the Alibaba Cloud SDK "
            "and Config(access_key_id=..., access_key_secret=...); bearer tokens and "
            "anonymous calls are not supported",
        )
    text = value.strip()
    scheme, _, rest = text.partition(" ")
    if scheme.upper() != ALGORITHM:
        if _SCHEME_RE.fullmatch(scheme):
            known = (
                " (a known Alibaba Cloud algorithm)" if scheme in _KNOWN_OTHER_ALGORITHMS else ""
            )
            raise ApiError(
                400,
                "UnsupportedSignatureType",
                f"the Authorization scheme {_shown(scheme)}{known} is not supported; "
                f"sign requests with {ALGORITHM} using an AccessKey pair (leave "
                "Config.signature_algorithm unset in the Alibaba Cloud SDK)",
            )
        raise _incomplete(f"it does not start with '{ALGORITHM} '")
    rest = rest.strip()
    if not rest:
        raise _incomplete("it has no Credential, SignedHeaders and Signature")

    params: dict[str, str] = {}
    for part in rest.split(","):
        name, eq, param_value = part.strip().partition("=")
        if not eq:
            raise _incomplete(f"the part {_shown(part.strip())} is not name=value")
        if name not in ("Credential", "SignedHeaders", "Signature"):
            raise _incomplete(f"unknown parameter {_shown(name)}")
        if name in params:
            raise _incomplete(f"{name} appears twice")
        params[name] = param_value.strip()
    for name in ("Credential", "SignedHeaders", "Signature"):
        if not params.get(name):
            raise _incomplete(f"{name} is missing or empty")

    access_key_id = params["Credential"]
    if any(ch.isspace() for ch in access_key_id):
        raise _incomplete("Credential contains whitespace")

    signed = tuple(params["SignedHeaders"].split(";"))
    for name in signed:
        if not _HEADER_NAME_RE.fullmatch(name):
            raise _incomplete(f"SignedHeaders entry {_shown(name)} is not a lowercase header name")
    if len(set(signed)) != len(signed):
        raise _incomplete("SignedHeaders lists a header more than once")

    signature = params["Signature"]
    if not _SIGNATURE_RE.fullmatch(signature):
        raise _incomplete(f"Signature {_shown(signature)} is not 64 hex digits")

    return Authorization(
        access_key_id=access_key_id,
        signed_headers=signed,
        signature=signature.lower(),
    )


def _lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Lowercase header names and strip values.

    Two entries whose names differ only in case are joined the way the SDK joins repeated
    headers: values sorted, then joined with ``,``.
    """
    grouped: dict[str, list[str]] = {}
    for name, val in headers.items():
        grouped.setdefault(name.lower(), []).append(val.strip())
    return {name: ",".join(sorted(vals)) for name, vals in grouped.items()}


def _canonical_query(query: Mapping[str, str]) -> str:
    # Keys sorted and left as they are; values percent-encoded RFC 3986 style (space -> %20).
    return "&".join(f"{key}={quote(query[key], safe='~')}" for key in sorted(query))


def canonical_request(
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    signed_headers: Sequence[str],
    payload_hash: str,
) -> str:
    """Build the CanonicalRequest of reference 2.1.

    ``headers`` must already have lowercase names and stripped values and hold every name in
    ``signed_headers`` (a ``KeyError`` otherwise). The header block follows the order of
    ``signed_headers`` as the client listed it (the SDK lists them sorted).
    """
    header_block = "".join(f"{name}:{headers[name]}\n" for name in signed_headers)
    return "\n".join(
        (
            method,
            path or "/",
            _canonical_query(query),
            header_block,
            ";".join(signed_headers),
            payload_hash,
        )
    )


def sign(secret: str, canonical: str) -> str:
    """Return the lowercase hex ACS3-HMAC-SHA256 signature of a CanonicalRequest."""
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    string_to_sign = f"{ALGORITHM}\n{digest}"
    return hmac.new(secret.encode("utf-8"), string_to_sign.encode("utf-8"), "sha256").hexdigest()


def verify(
    *,
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    body: bytes,
    secret: str,
    auth: Authorization,
) -> None:
    """Check a request's body hash and signature; raise :class:`ApiError` (400) if wrong.

    ``headers`` may use any letter case in its names; ``body`` is the raw body exactly as
    received. Checks, in order: the required headers are signed (``IncompleteSignature``),
    every signed header is present (``IncompleteSignature``), ``x-acs-content-sha256`` matches
    the body (``ContentSHA256Mismatch``), the signature matches (``SignatureDoesNotMatch``).
    Date and nonce checks are separate: :func:`check_date`, :class:`NonceCache`.
    """
    lowered = _lower_headers(headers)
    signed = set(auth.signed_headers)
    unsigned = [name for name in REQUIRED_SIGNED_HEADERS if name not in signed]
    if unsigned:
        raise ApiError(
            400,
            "IncompleteSignature",
            f"SignedHeaders must include {', '.join(REQUIRED_SIGNED_HEADERS)}; missing: "
            f"{', '.join(unsigned)}. Sign every x-acs-* header and host, as the Alibaba Cloud "
            "SDK does",
        )
    absent = [name for name in auth.signed_headers if name not in lowered]
    if absent:
        raise ApiError(
            400,
            "IncompleteSignature",
            f"SignedHeaders lists {', '.join(absent)} but the request does not carry "
            f"{'that header' if len(absent) == 1 else 'those headers'}; send every header "
            "you sign (a proxy may have removed it)",
        )

    claimed = lowered["x-acs-content-sha256"]
    actual = hashlib.sha256(body).hexdigest()
    if not hmac.compare_digest(actual.encode("ascii"), claimed.lower().encode("utf-8")):
        raise ApiError(
            400,
            "ContentSHA256Mismatch",
            f"x-acs-content-sha256 is {_shown(claimed)} but the SHA-256 of the "
            f"{len(body)}-byte body is {actual!r}; hash the exact bytes you send, and make "
            "sure nothing re-encodes the body on the way",
        )

    canonical = canonical_request(method, path, query, lowered, auth.signed_headers, claimed)
    expected = sign(secret, canonical)
    if not hmac.compare_digest(expected.encode("ascii"), auth.signature.encode("ascii")):
        raise ApiError(
            400,
            "SignatureDoesNotMatch",
            "the request signature does not match the one computed with the AccessKey secret "
            f"of {_shown(auth.access_key_id)}; check the AccessKey secret, and that the "
            "endpoint (host and port) you configured is the one the request reaches",
        )


def check_date(x_acs_date: str | None, *, now: datetime, window_s: float) -> None:
    """Check ``x-acs-date`` against the server clock; raise :class:`ApiError` (400) if off.

    ``now`` must be timezone-aware (``ValueError`` otherwise). A date exactly ``window_s``
    away from ``now`` is still accepted.
    """
    if now.tzinfo is None:
        raise ValueError("check_date needs a timezone-aware 'now'")
    if x_acs_date is None or not x_acs_date.strip():
        raise ApiError(
            400,
            "InvalidTimeStamp.Format",
            "the x-acs-date header is missing; send the request time in UTC as "
            "yyyy-MM-ddTHH:mm:ssZ (for example 2025-01-15T08:30:00Z) and sign it",
        )
    try:
        sent = datetime.strptime(x_acs_date.strip(), DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise ApiError(
            400,
            "InvalidTimeStamp.Format",
            f"x-acs-date {_shown(x_acs_date)} is not in the format yyyy-MM-ddTHH:mm:ssZ "
            "(UTC, for example 2025-01-15T08:30:00Z)",
        ) from None
    skew = (sent - now).total_seconds()
    if abs(skew) > window_s:
        direction = "ahead of" if skew > 0 else "behind"
        server_time = now.astimezone(UTC).strftime(DATE_FORMAT)
        raise ApiError(
            400,
            "InvalidTimeStamp.Expired",
            f"x-acs-date {x_acs_date.strip()} is {abs(skew):g} s {direction} the server time "
            f"{server_time}; the allowed skew is {window_s:g} s either way. Synchronise the "
            "client clock (NTP) and send a fresh request",
        )


class NonceCache:
    """Remembers ``x-acs-signature-nonce`` values to refuse replayed requests.

    Per process: each server process has its own cache, so a replay sent to another process
    is not caught. The scale-out mode will move this store to Redis.

    Memory is bounded: entries older than ``window_s`` are dropped, and when ``max_entries``
    are held the oldest entry is evicted to make room (a flood of fresh nonces can therefore
    push out a nonce before its window ends). Each entry is keyed by a 32-byte digest of the
    AccessKey id and nonce, so long nonces cost no more than short ones.

    A request passes :func:`check_date` while its ``x-acs-date`` is within the skew window of
    the server clock, and a client clock may be ahead by up to that window; to refuse every
    replay the date check would accept, set ``window_s`` to at least twice the date skew.

    ``now`` is in seconds on any clock, as long as the caller always uses the same one.
    Safe to call from several threads.
    """

    def __init__(self, *, window_s: float, max_entries: int = 1_000_000) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.window_s = window_s
        self.max_entries = max_entries
        self._seen: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def remember(self, access_key_id: str, nonce: str, now: float) -> None:
        """Record a nonce; raise :class:`ApiError` (400) if it was seen within the window."""
        if not nonce or not nonce.strip():
            raise ApiError(
                400,
                "MissingSignatureNonce",
                "the x-acs-signature-nonce header is missing or empty; send a fresh random "
                "value (for example 32 hex digits) with every request and sign it",
            )
        key = hashlib.sha256(f"{access_key_id}\0{nonce}".encode()).digest()
        with self._lock:
            self._expire(now)
            seen_at = self._seen.get(key)
            if seen_at is not None and now - seen_at <= self.window_s:
                raise ApiError(
                    400,
                    "SignatureNonceUsed",
                    f"the signature nonce {_shown(nonce)} was already used within the last "
                    f"{self.window_s:g} s; generate a new nonce for every request, "
                    "including retries",
                )
            self._seen.pop(key, None)
            while len(self._seen) >= self.max_entries:
                self._seen.popitem(last=False)
            self._seen[key] = now

    def _expire(self, now: float) -> None:
        # Entries are kept in insertion order, which is time order as long as callers pass
        # a non-decreasing clock; an out-of-order entry is aged individually in remember().
        horizon = now - self.window_s
        while self._seen:
            oldest_key = next(iter(self._seen))
            if self._seen[oldest_key] >= horizon:
                break
            del self._seen[oldest_key]
