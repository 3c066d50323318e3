"""Tests for openmps.mps.form: form bodies, dotted flattening, JSON fields, scalar getters."""

from __future__ import annotations

from typing import Any

import pytest
from alibabacloud_tea_openapi.utils import Utils

from openmps.errors import BusinessError
from openmps.mps.form import get_int, get_str, json_map, parse_form, unflatten


def _business(exc_info: pytest.ExceptionInfo[BusinessError]) -> tuple[int, str, str]:
    err = exc_info.value
    return err.result_code, err.name, err.detail


# --- parse_form -------------------------------------------------------------------------------


def test_parse_form_plus_is_space_and_percent_decoding() -> None:
    body = b"Content=Hi+there%21+1%2B1&Title=%E4%BD%A0%E5%A5%BD&Empty=&Bare&&Uri=a%3Db%26c"
    assert parse_form(body) == {
        "Content": "Hi there! 1+1",
        "Title": "你好",
        "Empty": "",
        "Bare": "",
        "Uri": "a=b&c",
    }


def test_parse_form_empty_body() -> None:
    assert parse_form(b"") == {}


def test_parse_form_raw_utf8_is_accepted() -> None:
    assert parse_form("Title=héllo".encode()) == {"Title": "héllo"}


def test_parse_form_round_trips_sdk_encoding() -> None:
    fields = {"Title": "a b&c=d+e “q” 中", "DeliveryType": 3, "Payload": {"k": ["x", "y"]}}
    body = str(Utils.to_form(fields)).encode("utf-8")
    assert parse_form(body) == {
        "DeliveryType": "3",
        "Payload.k.1": "x",
        "Payload.k.2": "y",
        "Title": "a b&c=d+e “q” 中",
    }


def test_parse_form_raw_non_utf8_is_3031() -> None:
    with pytest.raises(BusinessError) as exc_info:
        parse_form(b"Title=caf\xe9")
    assert _business(exc_info) == (
        3031,
        "REQUEST_SHOULD_BE_UTF8",
        "the request body is not valid UTF-8 (byte 9); encode the form body as UTF-8",
    )


def test_parse_form_percent_encoded_non_utf8_value_is_3031() -> None:
    with pytest.raises(BusinessError) as exc_info:
        parse_form(b"AppId=x&Title=caf%E9")
    assert _business(exc_info) == (
        3031,
        "REQUEST_SHOULD_BE_UTF8",
        "the value of Title is not valid UTF-8 once percent-decoded; percent-encode UTF-8 bytes",
    )


def test_parse_form_percent_encoded_non_utf8_name_is_3031() -> None:
    with pytest.raises(BusinessError) as exc_info:
        parse_form(b"T%FFitle=x")
    assert _business(exc_info) == (
        3031,
        "REQUEST_SHOULD_BE_UTF8",
        "the parameter name 'T%FFitle' is not valid UTF-8 once percent-decoded; "
        "percent-encode UTF-8 bytes",
    )


def test_parse_form_repeated_key_is_3028() -> None:
    with pytest.raises(BusinessError) as exc_info:
        parse_form(b"Title=a&Content=b&Title=c")
    assert _business(exc_info) == (
        3028,
        "INVALID_PARAM",
        "the parameter Title appears more than once; send it once",
    )


def test_parse_form_repeated_key_after_decoding_is_3028() -> None:
    with pytest.raises(BusinessError) as exc_info:
        parse_form(b"Title=a&Titl%65=c")
    assert exc_info.value.result_code == 3028


def test_parse_form_empty_name_is_3028() -> None:
    with pytest.raises(BusinessError) as exc_info:
        parse_form(b"=x")
    assert _business(exc_info) == (
        3028,
        "INVALID_PARAM",
        "the form body has a parameter with an empty name",
    )


# --- unflatten --------------------------------------------------------------------------------


def test_unflatten_target_msg_list() -> None:
    form = parse_form(
        b"TargetMsg.2.Target=u2&TargetMsg.1.Target=u1&TargetMsg.1.MsgKey=k1"
        b"&TargetMsg.2.MsgKey=k2&Other=x"
    )
    assert unflatten(form, "TargetMsg") == [
        {"Target": "u1", "MsgKey": "k1"},
        {"Target": "u2", "MsgKey": "k2"},
    ]


def test_unflatten_list_is_ordered_by_numeric_index() -> None:
    form = {f"TargetMsg.{i}.Target": f"u{i}" for i in (10, 2, 1, 11, 3)}
    assert unflatten(form, "TargetMsg") == [{"Target": f"u{i}"} for i in (1, 2, 3, 10, 11)]


def test_unflatten_dict_payload() -> None:
    form = parse_form(b"TransparentMessagePayload.x=1&TransparentMessagePayload.y.z=a+b")
    assert unflatten(form, "TransparentMessagePayload") == {"x": "1", "y": {"z": "a b"}}


def test_unflatten_matches_sdk_flattening() -> None:
    payload: dict[str, Any] = {
        "x": 1,
        "nested": {"list": ["a", {"deep": "b"}], "s": "t"},
        "TargetMsgLike": [{"Target": "u1"}, {"Target": "u2"}],
    }
    form = parse_form(str(Utils.to_form({"Payload": payload, "Payloads": "no"})).encode())
    assert unflatten(form, "Payload") == {
        "x": "1",
        "nested": {"list": ["a", {"deep": "b"}], "s": "t"},
        "TargetMsgLike": [{"Target": "u1"}, {"Target": "u2"}],
    }


def test_unflatten_bare_json() -> None:
    form = {"TransparentMessagePayload": ' {"x": 1, "y": [true, null]}'}
    assert unflatten(form, "TransparentMessagePayload") == {"x": 1, "y": [True, None]}
    assert unflatten({"P": "[1, 2]"}, "P") == [1, 2]


@pytest.mark.parametrize("value", ["hello", "", "[notice] not json", "{broken", "42", '"s"'])
def test_unflatten_bare_string_stays_string(value: str) -> None:
    assert unflatten({"P": value}, "P") == value


def test_unflatten_bare_key_wins_over_dotted() -> None:
    assert unflatten({"P": "s", "P.x": "1"}, "P") == "s"


def test_unflatten_absent() -> None:
    assert unflatten({"Px": "1", "Other.P": "2"}, "P") is None


@pytest.mark.parametrize(
    ("form", "detail"),
    [
        ({"P.a": "1", "P.a.b": "2"}, "P.a is given both as a value and with sub-fields (P.a.*)"),
        ({"P.a.b": "2", "P.a": "1"}, "P.a is given both as a value and with sub-fields (P.a.*)"),
        ({"P.a..b": "1"}, "P.a..b has an empty path segment"),
        ({"P.": "1"}, "P. has an empty path segment"),
        ({"P.0.x": "1"}, "P.0: list indexes start at 1"),
        ({"P.1": "a", "P.01": "b"}, "P.1 and P.01 are the same list index"),
    ],
)
def test_unflatten_invalid(form: dict[str, str], detail: str) -> None:
    with pytest.raises(BusinessError) as exc_info:
        unflatten(form, "P")
    err = exc_info.value
    assert (err.result_code, err.name) == (3028, "INVALID_PARAM")
    assert err.detail.startswith(detail)


def test_unflatten_mixed_numeric_and_named_keys_is_a_dict() -> None:
    assert unflatten({"P.1": "a", "P.x": "b"}, "P") == {"1": "a", "x": "b"}


# --- json_map ---------------------------------------------------------------------------------

WHAT = "ExtendedParams must be a JSON object of string keys to string, number or boolean values"


def test_json_map_ok() -> None:
    form = {"ExtendedParams": '{"a": "x", "n": 1, "f": 2.5, "b": true, "q": "“fine”"}'}
    assert json_map(form, "ExtendedParams") == {
        "a": "x",
        "n": "1",
        "f": "2.5",
        "b": "true",
        "q": "“fine”",
    }


@pytest.mark.parametrize("form", [{}, {"ExtendedParams": ""}, {"ExtendedParams": "  "}])
def test_json_map_absent_or_blank(form: dict[str, str]) -> None:
    assert json_map(form, "ExtendedParams") is None


def test_json_map_typographic_quotes_are_refused() -> None:
    with pytest.raises(BusinessError) as exc_info:
        json_map({"TargetMsgkey": "{“user1024”:“msg1”}"}, "TargetMsgkey")
    assert _business(exc_info) == (
        3028,
        "INVALID_PARAM",
        "TargetMsgkey must be a JSON object of string keys to string, number or boolean values: it "
        'contains typographic quotes (“ ”); use ASCII double quotes (") instead',
    )


@pytest.mark.parametrize(
    ("value", "what"),
    [
        (
            "{'a': 'b'}",
            "invalid JSON at character 2: Expecting property name enclosed in double quotes",
        ),
        ('{"a": "b"', "invalid JSON at character 10: Expecting ',' delimiter"),
        ('["a"]', "got a JSON array"),
        ('"a"', "got a JSON string"),
        ("3", "got a JSON number"),
        ("null", "got a JSON null"),
        ('{"a": {"b": "c"}}', 'the value of "a" is a JSON object'),
        ('{"a": ["b"]}', 'the value of "a" is a JSON array'),
        ('{"ключ": null}', 'the value of "ключ" is a JSON null'),
        ('{"a": "1", "a": "2"}', 'the key "a" appears twice'),
        ('{"a": NaN}', "NaN is not valid JSON"),
        ("[" * 100_000, "it is nested too deeply"),
    ],
)
def test_json_map_invalid(value: str, what: str) -> None:
    with pytest.raises(BusinessError) as exc_info:
        json_map({"ExtendedParams": value}, "ExtendedParams")
    assert _business(exc_info) == (3028, "INVALID_PARAM", f"{WHAT}: {what}")


def test_json_map_too_many_keys() -> None:
    form = {"ExtendedParams": "{" + ",".join(f'"k{i}":"v"' for i in range(21)) + "}"}
    with pytest.raises(BusinessError) as exc_info:
        json_map(form, "ExtendedParams", max_keys=20)
    assert _business(exc_info) == (
        3035,
        "EXTEND_PARAM_TO_MUCH",
        "ExtendedParams has 21 keys; at most 20 are allowed",
    )
    form = {"ExtendedParams": "{" + ",".join(f'"k{i}":"v"' for i in range(20)) + "}"}
    result = json_map(form, "ExtendedParams", max_keys=20)
    assert result is not None
    assert len(result) == 20


def test_json_map_too_many_keys_custom_code() -> None:
    with pytest.raises(BusinessError) as exc_info:
        json_map(
            {"X": '{"a":"1","b":"2"}'},
            "X",
            max_keys=1,
            code_too_many=3049,
            name_too_many="MULTIPLE_INNER_EXTEND_PARAM_TO_MUCH",
        )
    assert _business(exc_info) == (
        3049,
        "MULTIPLE_INNER_EXTEND_PARAM_TO_MUCH",
        "X has 2 keys; at most 1 are allowed",
    )


# --- get_int / get_str ------------------------------------------------------------------------


def test_get_int_ok() -> None:
    form = {"DeliveryType": "3", "Neg": "-5", "Padded": " 42 ", "Zero": "007"}
    assert get_int(form, "DeliveryType", required=True) == 3
    assert get_int(form, "Neg", required=True) == -5
    assert get_int(form, "Padded", required=False) == 42
    assert get_int(form, "Zero", required=True) == 7
    assert get_int(form, "Absent", required=False) is None
    assert get_int(form, "Absent", required=False, default=300) == 300
    assert get_int({"Blank": ""}, "Blank", required=False, default=1) == 1


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        ("abc", "ExpiredSeconds must be an integer, got 'abc'"),
        ("3.0", "ExpiredSeconds must be an integer, got '3.0'"),
        ("1_000", "ExpiredSeconds must be an integer, got '1_000'"),
        ("١٢", "ExpiredSeconds must be an integer, got '١٢'"),
        ("0x10", "ExpiredSeconds must be an integer, got '0x10'"),
        ("1e3", "ExpiredSeconds must be an integer, got '1e3'"),
        ("9" * 19, f"ExpiredSeconds must be an integer, got '{'9' * 19}' (too many digits)"),
    ],
)
def test_get_int_invalid(value: str, detail: str) -> None:
    with pytest.raises(BusinessError) as exc_info:
        get_int({"ExpiredSeconds": value}, "ExpiredSeconds", required=False)
    assert _business(exc_info) == (3028, "INVALID_PARAM", detail)


@pytest.mark.parametrize("form", [{}, {"ExpiredSeconds": ""}, {"ExpiredSeconds": " "}])
def test_get_int_required_missing(form: dict[str, str]) -> None:
    with pytest.raises(BusinessError) as exc_info:
        get_int(form, "ExpiredSeconds", required=True)
    assert _business(exc_info) == (3028, "INVALID_PARAM", "ExpiredSeconds is required")


def test_get_str() -> None:
    form = {"Title": " Hello ", "Blank": "  "}
    assert get_str(form, "Title", required=True) == " Hello "
    assert get_str(form, "Absent", required=False) is None
    assert get_str(form, "Blank", required=False) is None


@pytest.mark.parametrize("form", [{}, {"TaskName": ""}, {"TaskName": "\t"}])
def test_get_str_required_missing(form: dict[str, str]) -> None:
    with pytest.raises(BusinessError) as exc_info:
        get_str(form, "TaskName", required=True)
    assert _business(exc_info) == (3028, "INVALID_PARAM", "TaskName is required")
    with pytest.raises(BusinessError) as exc_info:
        get_str(form, "TaskName", required=True, missing=(3019, "TASKNAME_NULL"))
    assert _business(exc_info) == (3019, "TASKNAME_NULL", "TaskName is required")


def test_json_map_refuses_a_number_too_large_to_keep() -> None:
    # Regression: {"carol": 1e400} was stored with the msgKey "Infinity".
    with pytest.raises(BusinessError) as caught:
        json_map({"TargetMsgkey": '{"carol":1e400}'}, "TargetMsgkey")
    assert (caught.value.result_code, caught.value.name, caught.value.detail) == (
        3028,
        "INVALID_PARAM",
        "TargetMsgkey must be a JSON object of string keys to string, number or boolean values: "
        'the value of "carol" is too large a number',
    )


# --- lone surrogates --------------------------------------------------------------------------

LONE = (
    "not valid Unicode (a lone surrogate \\ud800: a \\uD800 to \\uDFFF escape that is not half "
    "of a surrogate pair)"
)


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ('{"k":"\\ud800"}', f"ExtendedParams.k is {LONE}"),
        ('{"\\ud800":"v"}', f"ExtendedParams has a key that is {LONE}"),
        ('{"k":"a\\ud800b"}', f"ExtendedParams.k is {LONE}"),
        ('{"k":["\\ud800"]}', f"ExtendedParams.k.1 is {LONE}"),
    ],
    ids=["value", "key", "inside", "nested"],
)
def test_json_map_refuses_a_lone_surrogate(text: str, detail: str) -> None:
    with pytest.raises(BusinessError) as exc_info:
        json_map({"ExtendedParams": text}, "ExtendedParams")
    assert _business(exc_info) == (3028, "INVALID_PARAM", detail)


def test_json_map_accepts_a_surrogate_pair() -> None:
    assert json_map({"E": '{"k":"\\ud83d\\ude00"}'}, "E") == {"k": "\U0001f600"}


def test_unflatten_json_refuses_a_lone_surrogate_and_names_the_entry() -> None:
    text = '[{"Target":"a"},{"Target":"b","TemplateKeyValue":{"\\udc00":"v"}}]'
    with pytest.raises(BusinessError) as exc_info:
        unflatten({"TargetMsg": text}, "TargetMsg")
    assert _business(exc_info) == (
        3028,
        "INVALID_PARAM",
        "TargetMsg.2.TemplateKeyValue has a key that is " + LONE.replace("\\ud800:", "\\udc00:"),
    )
