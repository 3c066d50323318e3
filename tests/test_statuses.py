"""The status table against the seed, row by row.

The seed rows below are transcribed here on purpose, not imported from the module: each row
is (channel key, code, text), where text is the seed's name for the channels that give one
(common, Apple, OPPO, FCM) and the seed's description for the others (Huawei, Xiaomi, vivo).
"""

from __future__ import annotations

import re
from collections import Counter

import pytest

from openmps import statuses
from openmps.statuses import (
    ACKED,
    DEVICE_NOT_ONLINE,
    NO_BIND_INFO,
    NONE,
    STATUSES,
    WAITING_FOR_VERIFY,
    Action,
    Channel,
    Finality,
    Status,
    UnknownStatusError,
    by_channel,
    find,
    get,
)

NAMED_CHANNELS = frozenset({"common", "apns", "oppo", "fcm"})

SEED_ROWS: list[tuple[str, int, str]] = [
    # Common message push status codes: name
    ("common", -1, "WaitingForVerify"),
    ("common", 0, "DeviceNotOnlineOrNoResponse"),
    ("common", 1, "NoBindInfo"),
    ("common", 2, "Acked"),
    ("common", 99999999, "NONE"),
    # Apple push channel: name
    ("apns", 2001, "PayloadEmpty"),
    ("apns", 2002, "PayloadTooLarge"),
    ("apns", 2003, "BadTopic"),
    ("apns", 2004, "TopicDisallowed"),
    ("apns", 2005, "BadMessageId"),
    ("apns", 2006, "BadExpirationDate"),
    ("apns", 2007, "BadPriority"),
    ("apns", 2008, "MissingDeviceToken"),
    ("apns", 2009, "BadDeviceToken"),
    ("apns", 2010, "DeviceTokenNotForTopic"),
    ("apns", 2011, "Unregistered"),
    ("apns", 2013, "BadCertificateEnvironment"),
    ("apns", 2014, "BadCertificate"),
    ("apns", 2023, "MissingTopic"),
    ("apns", 2024, "ConnClosed"),
    ("apns", 2025, "ConnUnavailable"),
    # Huawei push channel: description
    ("hms", 100, "Invalid unknown parameter."),
    ("hms", 101, "Invalid API_KEY."),
    ("hms", 102, "Invalid SESSION_KEY."),
    ("hms", 106, "The app or session does not have the permission to call the current service."),
    (
        "hms",
        107,
        "The client and secret must be obtained again. For example, the algorithm is upgraded.",
    ),
    ("hms", 109, "The nsp_ts drift is too large."),
    ("hms", 110, "Internal API error."),
    ("hms", 111, "The service is busy."),
    ("hms", 80000003, "The device is offline."),
    ("hms", 80000004, "The application is uninstalled."),
    ("hms", 80000005, "The response timed out."),
    ("hms", 80000006, "No route. The device has not connected to Push."),
    (
        "hms",
        80000007,
        "The device is in another region and does not use Push in the Chinese mainland.",
    ),
    (
        "hms",
        80000008,
        "The route is incorrect. The device may have switched to another Push server.",
    ),
    ("hms", 80100000, "Parameter check. Some parameters are incorrect."),
    ("hms", 80100002, "The token list is invalid."),
    ("hms", 80100003, "The payload is invalid."),
    ("hms", 80100004, "The timeout period is invalid."),
    ("hms", 80300002, "No permission to send messages to the token list in the parameters."),
    ("hms", 80300007, "All tokens in the request are invalid."),
    ("hms", 81000001, "Internal error."),
    ("hms", 80300008, "Authentication error (the request message body is too large)."),
    # Xiaomi push channel: description
    ("xiaomi", 10001, "System error."),
    ("xiaomi", 10002, "The service is suspended."),
    ("xiaomi", 10003, "Remote service error."),
    ("xiaomi", 10004, "The IP address is not allowed to request this resource."),
    ("xiaomi", 10005, "The appkey must be authorized to access this resource."),
    ("xiaomi", 10008, "Parameter error."),
    ("xiaomi", 10009, "The system is busy."),
    ("xiaomi", 10012, "Invalid request."),
    ("xiaomi", 10013, "Invalid user."),
    ("xiaomi", 10014, "The API access permissions for the application are restricted."),
    ("xiaomi", 10017, "The parameter value is invalid."),
    ("xiaomi", 10018, "The size of the request exceeds the limit."),
    ("xiaomi", 10022, "The request frequency from the IP address exceeds the limit."),
    ("xiaomi", 10023, "The user request frequency exceeds the limit."),
    ("xiaomi", 10024, "The frequency of user requests for a specific API exceeds the limit."),
    ("xiaomi", 10026, "The application is on the blacklist and cannot call the API."),
    ("xiaomi", 10027, "The API is called too frequently by the application."),
    ("xiaomi", 10029, "Invalid device."),
    ("xiaomi", 21301, "Authentication failed."),
    ("xiaomi", 22000, "Invalid application."),
    ("xiaomi", 22001, "The application does not exist."),
    ("xiaomi", 22002, "The application has been revoked."),
    ("xiaomi", 22003, "Failed to update the application."),
    ("xiaomi", 22004, "Application information is missing."),
    ("xiaomi", 22005, "The application name is invalid."),
    ("xiaomi", 22006, "The application ID is invalid."),
    ("xiaomi", 22007, "The application key is invalid."),
    ("xiaomi", 22008, "The application secret is invalid."),
    ("xiaomi", 22020, "The application description is invalid."),
    ("xiaomi", 22021, "The user has not granted authorization to the application."),
    ("xiaomi", 22022, "The application package name is invalid."),
    ("xiaomi", 22100, "The data format of the application notification is invalid."),
    ("xiaomi", 22101, "Too many application notification messages."),
    ("xiaomi", 22102, "Failed to send the application notification message."),
    ("xiaomi", 22103, "The application notification ID is invalid."),
    ("xiaomi", 20301, "The specified target is invalid."),
    # OPPO push channel: name
    ("oppo", -1, "Service Currently Unavailable"),
    ("oppo", -2, "Service in Flow Control"),
    ("oppo", 11, "Invalid Auth Token"),
    ("oppo", 13, "App Call Limited"),
    ("oppo", 14, "Invalid App Key"),
    ("oppo", 15, "Missing App Key"),
    ("oppo", 16, "Invalid Signature"),
    ("oppo", 17, "Missing Signature"),
    ("oppo", 28, "App Disabled"),
    ("oppo", 29, "Missing Auth Token"),
    ("oppo", 30, "Api Permission Denied"),
    ("oppo", 10000, "Invalid RegistrationId"),
    # vivo push channel: description
    ("vivo", 10000, "Permission authentication failed."),
    ("vivo", 10040, "The resource limit is reached. Try again later."),
    ("vivo", 10050, "The alias and regId cannot both be empty."),
    ("vivo", 10055, "The title cannot be empty."),
    ("vivo", 10056, "The title cannot exceed 40 characters in length."),
    ("vivo", 10058, "The content cannot exceed 100 characters in length."),
    ("vivo", 10066, "The number of custom key-value pairs cannot exceed 10."),
    ("vivo", 10067, "The custom key-value pairs are invalid."),
    ("vivo", 10070, "The total number of sent messages exceeds the limit."),
    ("vivo", 10071, "The sending time is outside the allowed range."),
    ("vivo", 10072, "The push speed is too fast. Try again later."),
    ("vivo", 10101, "The message content failed the moderation."),
    ("vivo", 10102, "Unknown exception on the vivo server."),
    ("vivo", 10103, "The push content contains sensitive information."),
    ("vivo", 10110, "Configure the sending frequency for commercial messages."),
    ("vivo", 10302, "The regId is invalid. The regId may have expired."),
    ("vivo", 10303, "The requestId already exists."),
    (
        "vivo",
        10104,
        "Send a formal message. Check the content. Do not send test content. The content of a "
        "formal message cannot consist of only numbers, only English letters, or only symbols. "
        'It cannot be a combination of symbols and numbers. It cannot contain the word "test", '
        "braces, or brackets.",
    ),
    # FCM push channel: name (the seed's spelling, typo included)
    ("fcm", 90000002, "nvalidRegistration"),
    ("fcm", 90000003, "NotRegistered"),
    ("fcm", 90000004, "InvalidPackageName"),
    ("fcm", 90000007, "MessageTooBig"),
    ("fcm", 90000009, "InvalidTtl"),
    ("fcm", 90000011, "InternalServerError"),
    ("fcm", 90000401, "Authentication"),
]


def test_transcription_has_116_rows() -> None:
    assert len(SEED_ROWS) == 116
    assert len({(channel, code) for channel, code, _ in SEED_ROWS}) == 116


@pytest.mark.parametrize(("channel", "code", "text"), SEED_ROWS)
def test_seed_row_present(channel: str, code: int, text: str) -> None:
    status = get(channel, code)
    assert status.channel == Channel(channel)
    assert status.channel.value == channel
    assert status.code == code
    if channel in NAMED_CHANNELS:
        assert status.name == text
    else:
        assert status.description == text


def test_table_is_exactly_the_seed_in_seed_order() -> None:
    assert [(s.channel.value, s.code) for s in STATUSES] == [
        (channel, code) for channel, code, _ in SEED_ROWS
    ]


def test_total_and_per_channel_counts() -> None:
    assert len(STATUSES) == 116
    counts = Counter(s.channel for s in STATUSES)
    assert counts == {
        Channel.COMMON: 5,
        Channel.APNS: 16,
        Channel.HMS: 22,
        Channel.XIAOMI: 36,
        Channel.OPPO: 12,
        Channel.VIVO: 18,
        Channel.FCM: 7,
    }
    assert [len(by_channel(c)) for c in Channel] == [5, 16, 22, 36, 12, 18, 7]
    assert by_channel("xiaomi") == by_channel(Channel.XIAOMI)
    assert all(s.channel is Channel.OPPO for s in by_channel("oppo"))


def test_channel_keys() -> None:
    assert [c.value for c in Channel] == ["common", "apns", "hms", "xiaomi", "oppo", "vivo", "fcm"]


def test_collisions_resolve_by_channel() -> None:
    assert get("common", -1).name == "WaitingForVerify"
    assert get("oppo", -1).name == "Service Currently Unavailable"
    assert get(Channel.COMMON, -1) is not get(Channel.OPPO, -1)
    assert get("oppo", 10000).name == "Invalid RegistrationId"
    assert get("oppo", 10000).description == "The registration_id is in an incorrect format."
    assert get("vivo", 10000).description == "Permission authentication failed."
    assert get("vivo", 10000).channel is Channel.VIVO
    assert get("oppo", 10000).action is Action.DROP
    assert get("vivo", 10000).action is Action.REAUTH


def test_unknown_pair_raises() -> None:
    with pytest.raises(UnknownStatusError) as info:
        get("common", 12345)
    assert isinstance(info.value, LookupError)
    assert info.value.channel == "common"
    assert info.value.code == 12345
    assert "common" in str(info.value)
    assert "12345" in str(info.value)


def test_code_of_another_channel_is_unknown() -> None:
    with pytest.raises(UnknownStatusError):
        get(Channel.COMMON, 10000)
    with pytest.raises(UnknownStatusError):
        get("apns", 2)
    with pytest.raises(UnknownStatusError):
        get("webpush", 2)


def test_find() -> None:
    assert find("common", 12345) is None
    assert find("nope", 2) is None
    assert find("fcm", 90000003) == get(Channel.FCM, 90000003)


def test_by_channel_unknown_key() -> None:
    with pytest.raises(UnknownStatusError):
        by_channel("webpush")


def test_finality_matches_contract() -> None:
    acked = get("common", 2)
    assert acked.finality is Finality.FINAL
    assert acked.final is True
    assert acked.action is Action.DONE

    offline = get("common", 0)
    assert offline.finality is Finality.AT_END
    assert offline.final is False
    assert offline.action is Action.WAIT

    waiting = get("common", -1)
    assert waiting.finality is Finality.NOT_FINAL
    assert waiting.final is False

    unregistered = get("apns", 2011)
    assert unregistered.finality is Finality.FINAL
    assert unregistered.final is True
    assert unregistered.action is Action.DROP

    auth = get("oppo", 11)
    assert auth.action is Action.REAUTH
    assert auth.finality is Finality.AT_END

    assert get("common", 99999999).action is Action.UNKNOWN
    assert get("common", 99999999).final is True
    assert get("apns", 2024).action is Action.RETRY
    assert get("apns", 2024).finality is Finality.AT_END


def test_enum_values() -> None:
    assert [f.value for f in Finality] == ["Y", "N", "E"]
    assert [a.value for a in Action] == [
        "done",
        "retry",
        "reauth",
        "drop",
        "config",
        "msg",
        "wait",
        "unknown",
    ]


def test_final_only_for_tag_y() -> None:
    for status in STATUSES:
        assert status.final is (status.finality is Finality.FINAL)
    # Every AT_END status is one the sender keeps working on.
    for status in STATUSES:
        if status.finality is Finality.AT_END:
            assert status.action in {Action.RETRY, Action.REAUTH, Action.WAIT}


def test_common_constants() -> None:
    assert (WAITING_FOR_VERIFY.channel, WAITING_FOR_VERIFY.code) == (Channel.COMMON, -1)
    assert (DEVICE_NOT_ONLINE.channel, DEVICE_NOT_ONLINE.code) == (Channel.COMMON, 0)
    assert (NO_BIND_INFO.channel, NO_BIND_INFO.code) == (Channel.COMMON, 1)
    assert (ACKED.channel, ACKED.code) == (Channel.COMMON, 2)
    assert (NONE.channel, NONE.code) == (Channel.COMMON, 99999999)
    assert NONE.name == "NONE"
    assert NONE.description == "Unknown status."


def test_own_names_are_upper_camel_case_and_unique() -> None:
    pattern = re.compile(r"[A-Z][A-Za-z0-9]*")
    for channel in (Channel.HMS, Channel.XIAOMI, Channel.VIVO):
        names = [s.name for s in by_channel(channel)]
        assert len(set(names)) == len(names)
        for name in names:
            assert pattern.fullmatch(name), name


def test_every_row_has_a_description() -> None:
    for status in STATUSES:
        assert status.description.strip() == status.description
        assert status.description.endswith(".")


def test_status_is_frozen() -> None:
    status = get("common", 2)
    with pytest.raises(AttributeError):
        status.code = 3  # type: ignore[misc]


def test_duplicate_pair_is_rejected() -> None:
    first = Status(Channel.OPPO, -1, "A", "a.", Action.RETRY, Finality.AT_END)
    same_pair = Status(Channel.OPPO, -1, "B", "b.", Action.RETRY, Finality.AT_END)
    other_channel = Status(Channel.COMMON, -1, "A", "a.", Action.WAIT, Finality.NOT_FINAL)
    with pytest.raises(ValueError, match="duplicate status"):
        statuses._build_index([first, same_pair])
    assert len(statuses._build_index([first, other_channel])) == 2


def test_duplicate_name_in_channel_is_rejected() -> None:
    first = Status(Channel.VIVO, 1, "Same", "a.", Action.MSG, Finality.FINAL)
    second = Status(Channel.VIVO, 2, "Same", "b.", Action.MSG, Finality.FINAL)
    with pytest.raises(ValueError, match="duplicate status name"):
        statuses._build_index([first, second])
