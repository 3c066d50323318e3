"""Delivery status codes: the founding document's whole status table, as data.

A delivery (one message to one device) records a status. A status is always the pair
(channel key, code), never the bare number: the seed reuses numbers across its sections,
so -1 is both common ``WaitingForVerify`` and OPPO "Service Currently Unavailable", and
10000 is both OPPO "Invalid RegistrationId" and vivo "Permission authentication failed".
The five common statuses always carry the channel key ``common``, even when the delivery
went through a vendor; the vendor used is a separate field of the delivery, not part of the
status key. The own (self-built) channel therefore uses the common codes only.

Each status carries an action class (what the sender does next) and a Final tag, taken from
the consolidated contract (``shared/reference/status-codes.md``, section 2):

- ``Y`` (``Finality.FINAL``): the status ends the delivery; no further send attempt.
- ``N`` (``Finality.NOT_FINAL``): a later step replaces it.
- ``E`` (``Finality.AT_END``): the latest status while retries (or the wait for the device)
  go on; it becomes final when the retry budget or the message's validity runs out. A later
  success replaces it with (common, 2).

An answer that matches no row is recorded as (common, 99999999) ``NONE`` with the raw answer
kept; that mapping is the sender's job, not this module's. Looking up a pair that is not in
the table raises :class:`UnknownStatusError` (``get``) or returns ``None`` (``find``).

Names: the seed gives a name for common, Apple, OPPO and FCM rows; those are kept exactly as
spelled there (including FCM's ``nvalidRegistration``). Huawei, Xiaomi and vivo rows have only
a description in the seed; their names here are our own, derived from the meaning.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "ACKED",
    "DEVICE_NOT_ONLINE",
    "NONE",
    "NO_BIND_INFO",
    "STATUSES",
    "WAITING_FOR_VERIFY",
    "Action",
    "Channel",
    "Finality",
    "Status",
    "UnknownStatusError",
    "by_channel",
    "find",
    "get",
]


class Channel(StrEnum):
    """The channel key a status belongs to (the first half of a status's identity)."""

    COMMON = "common"
    APNS = "apns"
    HMS = "hms"
    XIAOMI = "xiaomi"
    OPPO = "oppo"
    VIVO = "vivo"
    FCM = "fcm"


class Action(StrEnum):
    """What the sender does after recording a status."""

    DONE = "done"  # device or vendor gateway accepted the message
    RETRY = "retry"  # retry with backoff within the message's validity
    REAUTH = "reauth"  # refresh the vendor auth token and resend once
    DROP = "drop"  # unbind the device's vendor token; never resend to it
    CONFIG = "config"  # configuration error: surface to operators; token kept; no retry
    MSG = "msg"  # this message cannot be sent as built; token kept; no retry
    WAIT = "wait"  # MPS lifecycle: waiting on intake, the device or a binding
    UNKNOWN = "unknown"  # no outcome or an unmapped answer (contract section 5)


class Finality(StrEnum):
    """Whether a status ends its delivery (the contract's Final tag)."""

    FINAL = "Y"
    NOT_FINAL = "N"
    AT_END = "E"


@dataclass(frozen=True, slots=True)
class Status:
    """One row of the status table."""

    channel: Channel
    code: int
    name: str
    description: str
    action: Action
    finality: Finality

    @property
    def final(self) -> bool:
        """True when this status ends the delivery at once (Final tag ``Y``)."""
        return self.finality is Finality.FINAL


class UnknownStatusError(LookupError):
    """A (channel, code) pair, or a channel key, that the status table does not hold."""

    def __init__(self, channel: str, code: int | None = None) -> None:
        if code is None:
            message = f"unknown status channel key {channel!r}"
        else:
            message = f"unknown status: channel {channel!r}, code {code}"
        super().__init__(message)
        self.channel = channel
        self.code = code


# Short aliases so that each row of the table below stays compact.
_DONE, _RETRY, _REAUTH, _DROP = Action.DONE, Action.RETRY, Action.REAUTH, Action.DROP
_CONFIG, _MSG, _WAIT, _UNKNOWN = Action.CONFIG, Action.MSG, Action.WAIT, Action.UNKNOWN
_Y, _N, _E = Finality.FINAL, Finality.NOT_FINAL, Finality.AT_END

# A row: (code, name, action, Final tag, the seed's description). Order follows the seed.
_Row = tuple[int, str, Action, Finality, str]

_COMMON: tuple[_Row, ...] = (
    (-1, "WaitingForVerify", _WAIT, _N, "Waiting for verification."),
    (
        0,
        "DeviceNotOnlineOrNoResponse",
        _WAIT,
        _E,
        "Waiting for the device to go online (the persistent connection between the target "
        "device and the Mobile Push gateway is disconnected) or waiting for a send confirmation.",
    ),
    (
        1,
        "NoBindInfo",
        _WAIT,
        _E,
        "No binding relationship. When you push messages based on user IDs, make sure that the "
        "target user ID is attached to a device ID.",
    ),
    (
        2,
        "Acked",
        _DONE,
        _Y,
        "If you use a self-built channel, this code indicates that the message was successfully "
        "pushed to the client. If you use a third-party channel, this code indicates that the "
        "third-party push gateway was successfully called.",
    ),
    (99999999, "NONE", _UNKNOWN, _Y, "Unknown status."),
)

_APNS: tuple[_Row, ...] = (
    (2001, "PayloadEmpty", _MSG, _Y, "The message body is empty."),
    (2002, "PayloadTooLarge", _MSG, _Y, "The message body is too large."),
    (2003, "BadTopic", _CONFIG, _Y, "The bundle ID in the certificate is incorrect."),
    (2004, "TopicDisallowed", _CONFIG, _Y, "The bundle ID in the certificate is invalid."),
    (2005, "BadMessageId", _MSG, _Y, "The messageId is incorrect."),
    (2006, "BadExpirationDate", _MSG, _Y, "The expiration date is invalid."),
    (2007, "BadPriority", _MSG, _Y, "Invalid weight."),
    (2008, "MissingDeviceToken", _MSG, _Y, "The device token is missing."),
    (
        2009,
        "BadDeviceToken",
        _DROP,
        _Y,
        # Truncated: the seed adds a second paragraph on development certificates.
        "The device token is invalid, in an incorrect format, or does not exist. If this status "
        "code is returned when you push messages based on user dimensions, check whether the "
        "device token used for binding is correct. After the binding is complete, create a "
        "message of the minimalist push type in the Mobile Push console for testing.",
    ),
    (
        2010,
        "DeviceTokenNotForTopic",
        _DROP,
        _Y,
        "The device token and the certificate do not match.",
    ),
    (2011, "Unregistered", _DROP, _Y, "The token has expired."),
    (2013, "BadCertificateEnvironment", _CONFIG, _Y, "The certificate environment is invalid."),
    (2014, "BadCertificate", _CONFIG, _Y, "The certificate is invalid."),
    (2023, "MissingTopic", _CONFIG, _Y, "No topic is specified."),
    # Truncated: the seed goes on to list three console/certificate causes and a link.
    (2024, "ConnClosed", _RETRY, _E, "The APNs connection is disconnected."),
    (2025, "ConnUnavailable", _RETRY, _E, "The APNs connection is not established."),
)

_HMS: tuple[_Row, ...] = (
    (100, "InvalidParameter", _MSG, _Y, "Invalid unknown parameter."),
    (101, "InvalidApiKey", _CONFIG, _Y, "Invalid API_KEY."),
    (102, "InvalidSessionKey", _REAUTH, _E, "Invalid SESSION_KEY."),
    (
        106,
        "NoServicePermission",
        _CONFIG,
        _Y,
        "The app or session does not have the permission to call the current service.",
    ),
    (
        107,
        "CredentialsReissueRequired",
        _CONFIG,
        _Y,
        "The client and secret must be obtained again. For example, the algorithm is upgraded.",
    ),
    (109, "ClockDriftTooLarge", _CONFIG, _Y, "The nsp_ts drift is too large."),
    (110, "InternalApiError", _RETRY, _E, "Internal API error."),
    (111, "ServiceBusy", _RETRY, _E, "The service is busy."),
    (80000003, "DeviceOffline", _RETRY, _E, "The device is offline."),
    (80000004, "AppUninstalled", _DROP, _Y, "The application is uninstalled."),
    (80000005, "ResponseTimeout", _RETRY, _E, "The response timed out."),
    (80000006, "NoRoute", _DROP, _Y, "No route. The device has not connected to Push."),
    (
        80000007,
        "DeviceOutsideMainland",
        _MSG,
        _Y,
        "The device is in another region and does not use Push in the Chinese mainland.",
    ),
    (
        80000008,
        "WrongRoute",
        _RETRY,
        _E,
        "The route is incorrect. The device may have switched to another Push server.",
    ),
    # The seed's wording; the vendor means "failed for the tokens listed in the answer".
    (
        80100000,
        "PartialTokenFailure",
        _DROP,
        _Y,
        "Parameter check. Some parameters are incorrect.",
    ),
    (80100002, "InvalidTokenList", _MSG, _Y, "The token list is invalid."),
    (80100003, "InvalidPayload", _MSG, _Y, "The payload is invalid."),
    (80100004, "InvalidTtl", _MSG, _Y, "The timeout period is invalid."),
    (
        80300002,
        "NoPermissionForTokens",
        _CONFIG,
        _Y,
        "No permission to send messages to the token list in the parameters.",
    ),
    (80300007, "AllTokensInvalid", _DROP, _Y, "All tokens in the request are invalid."),
    (81000001, "InternalError", _RETRY, _E, "Internal error."),
    # The seed says "authentication error"; the vendor meaning is only "body too large".
    (
        80300008,
        "PayloadTooLarge",
        _MSG,
        _Y,
        "Authentication error (the request message body is too large).",
    ),
)

_XIAOMI: tuple[_Row, ...] = (
    (10001, "SystemError", _RETRY, _E, "System error."),
    (10002, "ServiceSuspended", _RETRY, _E, "The service is suspended."),
    (10003, "RemoteServiceError", _RETRY, _E, "Remote service error."),
    (
        10004,
        "IpNotAllowed",
        _CONFIG,
        _Y,
        "The IP address is not allowed to request this resource.",
    ),
    (
        10005,
        "AppKeyNotAuthorized",
        _CONFIG,
        _Y,
        "The appkey must be authorized to access this resource.",
    ),
    (10008, "ParameterError", _MSG, _Y, "Parameter error."),
    (10009, "SystemBusy", _RETRY, _E, "The system is busy."),
    (10012, "InvalidRequest", _MSG, _Y, "Invalid request."),
    (10013, "InvalidUser", _CONFIG, _Y, "Invalid user."),
    (
        10014,
        "ApiAccessRestricted",
        _CONFIG,
        _Y,
        "The API access permissions for the application are restricted.",
    ),
    (10017, "InvalidParameterValue", _MSG, _Y, "The parameter value is invalid."),
    (10018, "RequestTooLarge", _MSG, _Y, "The size of the request exceeds the limit."),
    (
        10022,
        "IpRateExceeded",
        _RETRY,
        _E,
        "The request frequency from the IP address exceeds the limit.",
    ),
    (10023, "UserRateExceeded", _RETRY, _E, "The user request frequency exceeds the limit."),
    (
        10024,
        "UserApiRateExceeded",
        _RETRY,
        _E,
        "The frequency of user requests for a specific API exceeds the limit.",
    ),
    (
        10026,
        "AppBlacklisted",
        _CONFIG,
        _Y,
        "The application is on the blacklist and cannot call the API.",
    ),
    (
        10027,
        "AppCallsTooFrequent",
        _RETRY,
        _E,
        "The API is called too frequently by the application.",
    ),
    (10029, "InvalidDevice", _DROP, _Y, "Invalid device."),
    (21301, "AuthenticationFailed", _CONFIG, _Y, "Authentication failed."),
    (22000, "InvalidApp", _CONFIG, _Y, "Invalid application."),
    (22001, "AppNotFound", _CONFIG, _Y, "The application does not exist."),
    (22002, "AppRevoked", _CONFIG, _Y, "The application has been revoked."),
    (22003, "AppUpdateFailed", _CONFIG, _Y, "Failed to update the application."),
    (22004, "AppInfoMissing", _CONFIG, _Y, "Application information is missing."),
    (22005, "InvalidAppName", _CONFIG, _Y, "The application name is invalid."),
    (22006, "InvalidAppId", _CONFIG, _Y, "The application ID is invalid."),
    (22007, "InvalidAppKey", _CONFIG, _Y, "The application key is invalid."),
    (22008, "InvalidAppSecret", _CONFIG, _Y, "The application secret is invalid."),
    (22020, "InvalidAppDescription", _CONFIG, _Y, "The application description is invalid."),
    (
        22021,
        "AppNotAuthorizedByUser",
        _CONFIG,
        _Y,
        "The user has not granted authorization to the application.",
    ),
    (22022, "InvalidPackageName", _CONFIG, _Y, "The application package name is invalid."),
    (
        22100,
        "InvalidNotificationFormat",
        _MSG,
        _Y,
        "The data format of the application notification is invalid.",
    ),
    (22101, "TooManyNotifications", _RETRY, _E, "Too many application notification messages."),
    (
        22102,
        "NotificationSendFailed",
        _RETRY,
        _E,
        "Failed to send the application notification message.",
    ),
    (22103, "InvalidNotifyId", _MSG, _Y, "The application notification ID is invalid."),
    (20301, "InvalidTarget", _DROP, _Y, "The specified target is invalid."),
)

_OPPO: tuple[_Row, ...] = (
    (
        -1,
        "Service Currently Unavailable",
        _RETRY,
        _E,
        "The service is unavailable. Try again later.",
    ),
    (-2, "Service in Flow Control", _RETRY, _E, "Server-side throttling."),
    (11, "Invalid Auth Token", _REAUTH, _E, "Invalid AuthToken."),
    (
        13,
        "App Call Limited",
        _RETRY,
        _E,
        "The number of application calls exceeds the limit. This includes exceeding the call "
        "frequency limit.",
    ),
    (14, "Invalid App Key", _CONFIG, _Y, "Invalid AppKey parameter."),
    (15, "Missing App Key", _CONFIG, _Y, "The AppKey parameter is missing."),
    (
        16,
        "Invalid Signature",
        _CONFIG,
        _Y,
        "Signature verification failed. The signature is invalid.",
    ),
    (
        17,
        "Missing Signature",
        _CONFIG,
        _Y,
        "Signature verification failed. The signature is missing.",
    ),
    (28, "App Disabled", _CONFIG, _Y, "The application is unavailable."),
    (29, "Missing Auth Token", _REAUTH, _E, "The Auth Token parameter is missing."),
    (
        30,
        "Api Permission Denied",
        _CONFIG,
        _Y,
        "The application does not have the permission for API push.",
    ),
    (
        10000,
        "Invalid RegistrationId",
        _DROP,
        _Y,
        "The registration_id is in an incorrect format.",
    ),
)

_VIVO: tuple[_Row, ...] = (
    (10000, "AuthenticationFailed", _REAUTH, _E, "Permission authentication failed."),
    (
        10040,
        "ResourceLimitReached",
        _RETRY,
        _E,
        "The resource limit is reached. Try again later.",
    ),
    (10050, "NoAliasOrRegId", _MSG, _Y, "The alias and regId cannot both be empty."),
    (10055, "TitleEmpty", _MSG, _Y, "The title cannot be empty."),
    (10056, "TitleTooLong", _MSG, _Y, "The title cannot exceed 40 characters in length."),
    (10058, "ContentTooLong", _MSG, _Y, "The content cannot exceed 100 characters in length."),
    (
        10066,
        "TooManyCustomPairs",
        _MSG,
        _Y,
        "The number of custom key-value pairs cannot exceed 10.",
    ),
    (10067, "InvalidCustomPairs", _MSG, _Y, "The custom key-value pairs are invalid."),
    (
        10070,
        "DailyTotalExceeded",
        _RETRY,
        _E,
        "The total number of sent messages exceeds the limit.",
    ),
    (
        10071,
        "OutsideSendingHours",
        _RETRY,
        _E,
        "The sending time is outside the allowed range.",
    ),
    (10072, "SendingTooFast", _RETRY, _E, "The push speed is too fast. Try again later."),
    (10101, "ContentRejected", _MSG, _Y, "The message content failed the moderation."),
    (10102, "ServerException", _RETRY, _E, "Unknown exception on the vivo server."),
    (10103, "SensitiveContent", _MSG, _Y, "The push content contains sensitive information."),
    (
        10110,
        "CommercialFrequencyNotSet",
        _CONFIG,
        _Y,
        "Configure the sending frequency for commercial messages.",
    ),
    (10302, "InvalidRegId", _DROP, _Y, "The regId is invalid. The regId may have expired."),
    (10303, "DuplicateRequestId", _MSG, _Y, "The requestId already exists."),
    (
        10104,
        "TestContentInFormalMessage",
        _MSG,
        _Y,
        "Send a formal message. Check the content. Do not send test content. The content of a "
        "formal message cannot consist of only numbers, only English letters, or only symbols. "
        'It cannot be a combination of symbols and numbers. It cannot contain the word "test", '
        "braces, or brackets.",
    ),
)

_FCM: tuple[_Row, ...] = (
    # "nvalidRegistration" is the seed's spelling (a typo of InvalidRegistration), kept as is.
    (90000002, "nvalidRegistration", _DROP, _Y, "Invalid target."),
    (90000003, "NotRegistered", _DROP, _Y, "The target is not registered."),
    (90000004, "InvalidPackageName", _CONFIG, _Y, "Invalid package name."),
    (90000007, "MessageTooBig", _MSG, _Y, "The message body is too large."),
    (90000009, "InvalidTtl", _MSG, _Y, "The offline time-to-live (TTL) is invalid."),
    (90000011, "InternalServerError", _RETRY, _E, "FCM service exception."),
    (90000401, "Authentication", _CONFIG, _Y, "Access denied."),
)

_TABLE: tuple[tuple[Channel, tuple[_Row, ...]], ...] = (
    (Channel.COMMON, _COMMON),
    (Channel.APNS, _APNS),
    (Channel.HMS, _HMS),
    (Channel.XIAOMI, _XIAOMI),
    (Channel.OPPO, _OPPO),
    (Channel.VIVO, _VIVO),
    (Channel.FCM, _FCM),
)


def _build_index(statuses: Iterable[Status]) -> dict[tuple[Channel, int], Status]:
    """Index statuses by (channel, code); raise ValueError on a repeated pair or name."""
    index: dict[tuple[Channel, int], Status] = {}
    names: set[tuple[Channel, str]] = set()
    for status in statuses:
        key = (status.channel, status.code)
        if key in index:
            raise ValueError(
                f"duplicate status (channel {status.channel.value!r}, code {status.code})"
            )
        if (status.channel, status.name) in names:
            raise ValueError(
                f"duplicate status name {status.name!r} in channel {status.channel.value!r}"
            )
        index[key] = status
        names.add((status.channel, status.name))
    return index


STATUSES: tuple[Status, ...] = tuple(
    Status(channel, code, name, description, action, finality)
    for channel, rows in _TABLE
    for code, name, action, finality, description in rows
)
"""Every status of the seed's table, in the seed's order."""

_INDEX = _build_index(STATUSES)
_BY_CHANNEL: dict[Channel, tuple[Status, ...]] = {
    channel: tuple(s for s in STATUSES if s.channel is channel) for channel in Channel
}


def _channel(channel: Channel | str) -> Channel | None:
    try:
        return Channel(channel)
    except ValueError:
        return None


def find(channel: Channel | str, code: int) -> Status | None:
    """The status for (channel, code), or None when the table has no such pair."""
    key = _channel(channel)
    if key is None:
        return None
    return _INDEX.get((key, code))


def get(channel: Channel | str, code: int) -> Status:
    """The status for (channel, code); raise UnknownStatusError when there is none."""
    status = find(channel, code)
    if status is None:
        raise UnknownStatusError(str(channel), code)
    return status


def by_channel(channel: Channel | str) -> tuple[Status, ...]:
    """All statuses of one channel, in the seed's order; UnknownStatusError for a bad key."""
    key = _channel(channel)
    if key is None:
        raise UnknownStatusError(str(channel))
    return _BY_CHANNEL[key]


WAITING_FOR_VERIFY: Status = get(Channel.COMMON, -1)
DEVICE_NOT_ONLINE: Status = get(Channel.COMMON, 0)
NO_BIND_INFO: Status = get(Channel.COMMON, 1)
ACKED: Status = get(Channel.COMMON, 2)
NONE: Status = get(Channel.COMMON, 99999999)
