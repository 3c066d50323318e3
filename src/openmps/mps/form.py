"""Decoding of MPS request bodies (reference 1.1 and 1.4).

The SDK sends every action's fields as an ``application/x-www-form-urlencoded`` body. Scalars
are single fields, "shrink" fields are JSON strings, and ``Any``-typed fields are either a
string or flattened with dots (``Key.a.b=v``, lists as ``Key.1=...`` from 1).

Refusals are :class:`~openmps.errors.BusinessError` with an MPS result code (3028
``INVALID_PARAM`` unless stated). In the getters a blank value (empty or whitespace only)
counts as absent.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import unquote_plus

from openmps.errors import BusinessError

_INDEX_RE = re.compile(r"[0-9]+")
_INT_RE = re.compile(r"[+-]?[0-9]+")
_MAX_INT_DIGITS = 18
_TYPOGRAPHIC_QUOTES = "“”„‘’"
_MAX_SHOWN = 60


def _shown(value: str) -> str:
    """``repr`` of a client-supplied value, cut short so that messages stay readable."""
    if len(value) > _MAX_SHOWN:
        return repr(value[:_MAX_SHOWN]) + "..."
    return repr(value)


def _invalid(detail: str) -> BusinessError:
    return BusinessError(3028, "INVALID_PARAM", detail)


def _not_utf8(detail: str) -> BusinessError:
    return BusinessError(3031, "REQUEST_SHOULD_BE_UTF8", detail)


def parse_form(body: bytes) -> dict[str, str]:
    """Decode an ``application/x-www-form-urlencoded`` body (``+`` is a space).

    Empty segments (``a=1&&b=2``, a trailing ``&``) are skipped and a segment without ``=``
    is a field with an empty value. Raises 3031 ``REQUEST_SHOULD_BE_UTF8`` when the body or
    a percent-decoded name or value is not UTF-8, and 3028 ``INVALID_PARAM`` when a name is
    empty or repeated.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _not_utf8(
            f"the request body is not valid UTF-8 (byte {exc.start}); encode the form body as UTF-8"
        ) from None
    out: dict[str, str] = {}
    for segment in text.split("&"):
        if not segment:
            continue
        raw_name, _, raw_value = segment.partition("=")
        try:
            name = unquote_plus(raw_name, encoding="utf-8", errors="strict")
        except UnicodeDecodeError:
            raise _not_utf8(
                f"the parameter name {_shown(raw_name)} is not valid UTF-8 once "
                "percent-decoded; percent-encode UTF-8 bytes"
            ) from None
        try:
            value = unquote_plus(raw_value, encoding="utf-8", errors="strict")
        except UnicodeDecodeError:
            raise _not_utf8(
                f"the value of {name} is not valid UTF-8 once percent-decoded; "
                "percent-encode UTF-8 bytes"
            ) from None
        if not name:
            raise _invalid("the form body has a parameter with an empty name")
        if "\x00" in name or "\x00" in value:
            where = "a parameter name" if "\x00" in name else name
            raise _invalid(f"{where} contains a NUL character (%00); text cannot hold one")
        if name in out:
            raise _invalid(f"the parameter {name} appears more than once; send it once")
        out[name] = value
    return out


def _looks_like_json(value: str) -> bool:
    return value.lstrip()[:1] in ("{", "[")


def unflatten(form: Mapping[str, str], key: str) -> Any:
    """Read an ``Any``-typed field (reference 1.4 rules 4 and 5).

    If ``key`` itself is present, its value is JSON-decoded when it starts with ``{`` or
    ``[`` and is valid JSON, and returned as the string otherwise. Otherwise the value is
    rebuilt from the ``key.a.b=v`` entries: leaves are strings, and a level whose segments
    are all decimal numbers becomes a list ordered by those 1-based indexes (gaps close up).
    Returns ``None`` when neither form is present. Decoded JSON with a lone surrogate is
    refused (3028, see :func:`_check_unicode`).
    """
    if key in form:
        value = form[key]
        if _looks_like_json(value):
            try:
                decoded = json.loads(value)
            except (ValueError, RecursionError):
                return value
            _check_unicode(decoded, key)
            return decoded
        return value

    prefix = key + "."
    tree: dict[str, Any] = {}
    found = False
    for name, value in form.items():
        if not name.startswith(prefix):
            continue
        found = True
        segments = name[len(prefix) :].split(".")
        if "" in segments:
            raise _invalid(f"{name} has an empty path segment")
        node = tree
        for depth, segment in enumerate(segments[:-1]):
            child = node.setdefault(segment, {})
            if not isinstance(child, dict):
                raise _conflict(".".join([key, *segments[: depth + 1]]))
            node = child
        last = segments[-1]
        if last in node:
            raise _conflict(name)
        node[last] = value
    if not found:
        return None
    return _finish(tree, key)


def _conflict(path: str) -> BusinessError:
    return _invalid(
        f"{path} is given both as a value and with sub-fields ({path}.*); send one or the other"
    )


def _finish(node: dict[str, Any], path: str) -> Any:
    """Turn the nested dicts built by :func:`unflatten` into dicts and lists."""
    if all(_INDEX_RE.fullmatch(segment) for segment in node):
        by_index: dict[int, str] = {}
        for segment in node:
            index = int(segment)
            if index < 1:
                raise _invalid(f"{path}.{segment}: list indexes start at 1")
            if index in by_index:
                raise _invalid(
                    f"{path}.{by_index[index]} and {path}.{segment} are the same list index"
                )
            by_index[index] = segment
        return [_finish_value(node[by_index[i]], f"{path}.{by_index[i]}") for i in sorted(by_index)]
    return {segment: _finish_value(child, f"{path}.{segment}") for segment, child in node.items()}


def _finish_value(value: Any, path: str) -> Any:
    if isinstance(value, dict):
        return _finish(value, path)
    return value


def lone_surrogate(text: str) -> str | None:
    """The first character of ``text`` that no store can hold (None when there is none): a
    lone UTF-16 surrogate, what a JSON escape such as ``"\\ud800"`` that is not half of a
    pair decodes to, or NUL (``"\\u0000"``), which PostgreSQL refuses in text."""
    if "\x00" in text:
        return "\x00"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return text[exc.start]
    return None


def json_leaves(value: Any, where: str = "") -> Iterator[tuple[str, Any, bool]]:
    """Every key and every leaf (not a dict or list) of a decoded JSON value in document
    order, as (where, key or leaf, is_key); ``where`` grows ``.name`` and ``.n`` (lists from
    1). Iterative: the value may be nested as deeply as ``json.loads`` allows."""
    pending: list[tuple[str, Any]] = [(where, value)]
    while pending:
        where, node = pending.pop()
        prefix = f"{where}." if where else ""
        if isinstance(node, dict):
            yield from ((where, name, True) for name in node)
            pending.extend((f"{prefix}{name}", child) for name, child in reversed(node.items()))
        elif isinstance(node, list):
            numbered = list(enumerate(node, start=1))
            pending.extend((f"{prefix}{n}", child) for n, child in reversed(numbered))
        else:
            yield where, node, False


def not_unicode(where: str, surrogate: str, *, is_key: bool) -> str:
    """The detail of a refusal of a lone surrogate (MPS 3028, REST 422 ``invalid_json``)."""
    shown = where if len(where) <= 2 * _MAX_SHOWN else where[: 2 * _MAX_SHOWN] + "..."
    if surrogate == "\x00":
        has = "has a key that contains" if is_key else "contains"
        return f"{shown} {has} a NUL character (\\u0000); text cannot hold one"
    return (
        f"{shown} {'has a key that is' if is_key else 'is'} not valid Unicode (a lone surrogate "
        f"\\u{ord(surrogate):04x}: a \\uD800 to \\uDFFF escape that is not half of a "
        "surrogate pair)"
    )


def _check_unicode(value: Any, field: str) -> None:
    """Refuse (3028) a decoded JSON value holding a lone surrogate in a key or a string at any
    depth: such text can be neither stored nor sent. The detail says where
    (``TargetMsg.1.Target``)."""
    for where, leaf, is_key in json_leaves(value, field):
        bad = lone_surrogate(leaf) if isinstance(leaf, str) else None
        if bad is not None:
            raise _invalid(not_unicode(where, bad, is_key=is_key))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name in out:
            raise ValueError(f"the key {json.dumps(name, ensure_ascii=False)} appears twice")
        out[name] = value
    return out


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    return "number"


def json_map(
    form: Mapping[str, str],
    key: str,
    *,
    max_keys: int | None = None,
    code_too_many: int = 3035,
    name_too_many: str = "EXTEND_PARAM_TO_MUCH",
) -> dict[str, str] | None:
    """Read a JSON-object field such as ``ExtendedParams`` or ``TargetMsgkey``.

    Returns ``None`` when the field is absent or blank. Values must be strings, numbers or
    booleans; numbers and booleans become their JSON spelling (``1``, ``2.5``, ``true``).
    Typographic quotes (“ ”) are not normalised: such a value is refused with a detail that
    says to use ASCII double quotes, and so is a lone surrogate (see :func:`_check_unicode`).
    More than ``max_keys`` keys raises ``code_too_many`` / ``name_too_many``; every other
    problem raises 3028 ``INVALID_PARAM``.
    """
    text = form.get(key)
    if text is None or not text.strip():
        return None
    what = f"{key} must be a JSON object of string keys to string, number or boolean values"
    try:
        decoded = json.loads(
            text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant
        )
    except json.JSONDecodeError as exc:
        if any(quote in text for quote in _TYPOGRAPHIC_QUOTES):
            raise _invalid(
                f'{what}: it contains typographic quotes (“ ”); use ASCII double quotes (") instead'
            ) from None
        raise _invalid(f"{what}: invalid JSON at character {exc.pos + 1}: {exc.msg}") from None
    except ValueError as exc:
        raise _invalid(f"{what}: {exc}") from None
    except RecursionError:
        raise _invalid(f"{what}: it is nested too deeply") from None
    _check_unicode(decoded, key)
    if not isinstance(decoded, dict):
        raise _invalid(f"{what}: got a JSON {_json_type(decoded)}")
    out: dict[str, str] = {}
    for name, value in decoded.items():
        if isinstance(value, str):
            out[name] = value
        elif isinstance(value, float) and not math.isfinite(value):
            shown = json.dumps(name, ensure_ascii=False)
            raise _invalid(f"{what}: the value of {shown} is too large a number")
        elif isinstance(value, bool | int | float):
            out[name] = json.dumps(value)
        else:
            shown = json.dumps(name, ensure_ascii=False)
            raise _invalid(f"{what}: the value of {shown} is a JSON {_json_type(value)}")
    if max_keys is not None and len(out) > max_keys:
        raise BusinessError(
            code_too_many,
            name_too_many,
            f"{key} has {len(out)} keys; at most {max_keys} are allowed",
        )
    return out


def get_str(
    form: Mapping[str, str],
    key: str,
    *,
    required: bool,
    missing: tuple[int, str] = (3028, "INVALID_PARAM"),
) -> str | None:
    """Read a string field, returned unchanged; ``None`` when absent or blank.

    When ``required``, an absent or blank field raises ``BusinessError(*missing,
    f"{key} is required")``.
    """
    value = form.get(key)
    if value is None or not value.strip():
        if required:
            raise BusinessError(missing[0], missing[1], f"{key} is required")
        return None
    return value


def get_int(
    form: Mapping[str, str],
    key: str,
    *,
    required: bool,
    default: int | None = None,
) -> int | None:
    """Read a decimal integer field (ASCII digits, optional sign, surrounding spaces allowed).

    An absent or blank field returns ``default``, or raises 3028 ``f"{key} is required"``
    when ``required``. Anything else that is not a decimal integer of at most 18 digits
    raises 3028 ``f"{key} must be an integer, got ..."``.
    """
    value = form.get(key)
    if value is None or not value.strip():
        if required:
            raise _invalid(f"{key} is required")
        return default
    text = value.strip()
    if not _INT_RE.fullmatch(text):
        raise _invalid(f"{key} must be an integer, got {_shown(value)}")
    if len(text.lstrip("+-")) > _MAX_INT_DIGITS:
        raise _invalid(f"{key} must be an integer, got {_shown(value)} (too many digits)")
    return int(text)
