"""Tests for openmps.templates: placeholder parsing, rendering rules, the checks of a new
template, and the push requests built from a template. The service runs on a real SQLite store."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from openmps.apps import create_app, find_app
from openmps.errors import BusinessError
from openmps.push import BroadcastRequest, PushRequest, TargetContent
from openmps.store import Store
from openmps.templates import (
    Rendered,
    TargetValues,
    Templates,
    TemplateSpec,
    TemplateView,
    apply,
    apply_multiple,
    fill,
    placeholders,
)
from tests.conftest import TEST_DATABASE_URL
from tests.conftest import _postgres as postgres

NOW = datetime(2025, 1, 15, 8, 30, tzinfo=UTC)


def view(
    title: str = "Hi #name#",
    content: str = "Congrats #name#, you won #money#",
    uri: str | None = None,
    **fields: Any,
) -> TemplateView:
    base: dict[str, Any] = {
        "id": 7,
        "name": "win",
        "title": title,
        "content": content,
        "desc_info": None,
        "uri": uri,
        "icon_urls": None,
        "image_urls": None,
        "push_style": None,
        "show_style": None,
        "jump_action": None,
        "variables": placeholders(title, content, uri),
        "created_at": NOW,
        "modified_at": NOW,
    }
    base.update(fields)
    return TemplateView(**base)


def refusal(exc_info: pytest.ExceptionInfo[BusinessError]) -> tuple[int, str, str]:
    return exc_info.value.result_code, exc_info.value.name, exc_info.value.detail


# --- placeholder parsing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("Congrats #name#, you won #money#", ["name", "money"]),
        ("#a# and #a# again, then #b#", ["a", "b"]),
        ("no placeholders", []),
        ("issue #12 and a lone # sign", []),
        ("## is not a placeholder", []),
        ("#two words# stay text", []),
        ("#a#b#", ["a"]),  # left to right: "#a#" is taken, "b#" is text
        ("#user.name# #order-id# #姓名# #x_1#", ["user.name", "order-id", "姓名", "x_1"]),
        ("#" + "n" * 64 + "#", ["n" * 64]),
        ("#" + "n" * 65 + "#", []),
        ("#a,b# #c/d#", []),
    ],
)
def test_placeholders_found(text: str, names: list[str]) -> None:
    assert placeholders(text) == names


def test_placeholders_across_texts_in_order_of_first_appearance() -> None:
    assert placeholders("#t# #c#", None, "x #c# #u#", "") == ["t", "c", "u"]


def test_fill_is_one_pass_and_inserts_values_as_given() -> None:
    values = {"a": "#b#", "b": "B", "c": "100% & <ok>"}
    assert fill("#a# #b# #c# #", values) == "#b# B 100% & <ok> #"


# --- rendering --------------------------------------------------------------------------------


def test_render_fills_title_content_and_uri() -> None:
    template = view(
        uri="https://x.test/#name#?v=#money#", push_style=1, jump_action=0, name="prize"
    )
    rendered = template.render({"name": "Zhang", "money": "200"})
    assert rendered == Rendered(
        name="prize",
        title="Hi Zhang",
        content="Congrats Zhang, you won 200",
        uri="https://x.test/Zhang?v=200",
        push_style=1,
        jump_action=0,
    )


def test_render_ignores_extra_values() -> None:
    rendered = view().render({"name": "Li", "money": "5", "unused": "x", "other": "y"})
    assert (rendered.title, rendered.content) == ("Hi Li", "Congrats Li, you won 5")


def test_render_without_placeholders_needs_no_values() -> None:
    rendered = view(title="Hello", content="Sale today").render(None)
    assert (rendered.title, rendered.content, rendered.uri) == ("Hello", "Sale today", None)


def test_render_empty_value_is_a_value() -> None:
    assert view().render({"name": "", "money": "1"}).title == "Hi "


def test_render_missing_values_named_in_order() -> None:
    with pytest.raises(BusinessError) as exc_info:
        view(uri="app://#page#").render({"money": "1", "nam": "typo"})
    assert refusal(exc_info) == (
        3023,
        "TEMPLATEKV_NOT_ENOUGH",
        "TemplateKeyValue has no value for the placeholders name, page of template 'win'",
    )


def test_render_one_missing_value_names_the_field() -> None:
    with pytest.raises(BusinessError) as exc_info:
        view().render({"name": "a"}, field="TargetMsg.2.TemplateKeyValue")
    assert refusal(exc_info) == (
        3023,
        "TEMPLATEKV_NOT_ENOUGH",
        "TargetMsg.2.TemplateKeyValue has no value for the placeholder money of template 'win'",
    )


def test_render_no_values_at_all() -> None:
    with pytest.raises(BusinessError) as exc_info:
        view().render(None)
    assert refusal(exc_info)[:2] == (3023, "TEMPLATEKV_NOT_ENOUGH")
    assert refusal(exc_info)[2].endswith("placeholders name, money of template 'win'")


# --- push requests from a template ------------------------------------------------------------


def base_request(**fields: Any) -> PushRequest:
    base: dict[str, Any] = {
        "delivery_type": 1,
        "targets": {"t1": "k1"},
        "expired_seconds": 300,
        "title": None,
        "content": None,
        "extras": {"u": "1"},
    }
    base.update(fields)
    return PushRequest(**base)


def test_apply_to_push_request() -> None:
    rendered = Rendered("win", "T", "C", "app://x", 2, 1)
    pushed = apply(base_request(), rendered)
    assert pushed == PushRequest(
        delivery_type=1,
        targets={"t1": "k1"},
        expired_seconds=300,
        title="T",
        content="C",
        extras={"u": "1"},
        push_action=1,
        push_style=2,
        uri="app://x",
        kind="template",
        template_name="win",
    )


def test_apply_keeps_the_requests_own_push_action() -> None:
    rendered = Rendered("win", "T", "C", None, None, 1)
    assert apply(base_request(push_action=0), rendered).push_action == 0


def test_apply_to_broadcast_request() -> None:
    request = BroadcastRequest(
        delivery_type=1, msg_key="b1", expired_seconds=60, title=None, content=None
    )
    pushed = apply(request, Rendered("news", "T", "C", None, 0, None))
    assert pushed == BroadcastRequest(
        delivery_type=1,
        msg_key="b1",
        expired_seconds=60,
        title="T",
        content="C",
        template_name="news",
        push_style=0,
    )


def test_apply_multiple_renders_each_target() -> None:
    template = view(uri="app://#name#", push_style=1, jump_action=1)
    entries = [
        TargetValues("t1", "k1", {"name": "A", "money": "1"}, {"e": "1"}),
        TargetValues("t2", "k2", {"name": "B", "money": "2", "extra": "ignored"}),
    ]
    pushed = apply_multiple(base_request(targets=None), template, entries)
    assert pushed.kind == "multiple"
    assert pushed.template_name == "win"
    assert pushed.targets == {"t1": "k1", "t2": "k2"}
    assert pushed.per_target == {
        "t1": TargetContent("Hi A", "Congrats A, you won 1", "app://A", {"e": "1"}),
        "t2": TargetContent("Hi B", "Congrats B, you won 2", "app://B", None),
    }
    assert (pushed.title, pushed.content, pushed.uri) == (None, None, None)
    assert (pushed.push_style, pushed.push_action, pushed.extras) == (1, 1, {"u": "1"})


@pytest.mark.parametrize(
    ("entries", "detail"),
    [
        ([TargetValues(None, "k1")], "TargetMsg.1 has no Target"),
        ([TargetValues("t1", "k1"), TargetValues("t2", " ")], "TargetMsg.2 has no MsgKey"),
        (
            [TargetValues("t1", "k1"), TargetValues("t2", "k2"), TargetValues("t1", "k3")],
            "TargetMsg.1 and TargetMsg.3 have the same Target 't1'; list each target once",
        ),
    ],
)
def test_apply_multiple_refuses_bad_entries(entries: list[TargetValues], detail: str) -> None:
    template = view(title="Hi", content="Hello")
    with pytest.raises(BusinessError) as exc_info:
        apply_multiple(base_request(targets=None), template, entries)
    assert refusal(exc_info) == (3028, "INVALID_PARAM", detail)


def test_apply_multiple_missing_value_names_the_entry() -> None:
    entries = [
        TargetValues("t1", "k1", {"name": "A", "money": "1"}),
        TargetValues("t2", "k2", {"name": "B"}),
    ]
    with pytest.raises(BusinessError) as exc_info:
        apply_multiple(base_request(targets=None), view(), entries)
    assert refusal(exc_info) == (
        3023,
        "TEMPLATEKV_NOT_ENOUGH",
        "TargetMsg.2.TemplateKeyValue has no value for the placeholder money of template 'win'",
    )


# --- the service on a real store --------------------------------------------------------------


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[tuple[Templates, int, int]]:
    """The service, an app and a second app of a fresh store: SQLite, or a PostgreSQL database
    of its own when ``OPENMPS_TEST_DATABASE_URL`` is set (as the server fixtures do)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'openmps.db'}"
    database = None
    if TEST_DATABASE_URL:
        database = f"openmps_test_{uuid.uuid4().hex[:12]}"
        await postgres(TEST_DATABASE_URL, f'CREATE DATABASE "{database}"')
        url = TEST_DATABASE_URL.rsplit("/", 1)[0] + "/" + database
    store = await Store.open(url)
    try:
        apps = [await create_app(store, name) for name in ("one", "two")]
        pks = [await find_app(store, a.app_id, a.workspace_id) for a in apps]
        assert pks[0] is not None and pks[1] is not None
        yield Templates(store), pks[0], pks[1]
    finally:
        await store.close()
        if TEST_DATABASE_URL and database:
            await postgres(TEST_DATABASE_URL, f'DROP DATABASE "{database}" WITH (FORCE)')


def spec(**fields: Any) -> TemplateSpec:
    base: dict[str, Any] = {"name": "win", "title": "Hi #name#", "content": "You won #money#"}
    base.update(fields)
    return TemplateSpec(**base)


async def test_create_stores_every_field(service: tuple[Templates, int, int]) -> None:
    templates, app, _ = service
    created = await templates.create(
        app,
        spec(
            desc_info="d",
            uri="app://#page#",
            icon_urls='{"defaultUrl":"i"}',
            image_urls='{"defaultUrl":"m"}',
            push_style=2,
            show_style=5,
            jump_action=1,
        ),
    )
    got = await templates.get(app, template_id=str(created.id))
    assert got == created
    assert (got.name, got.title, got.content, got.desc_info, got.uri) == (
        "win",
        "Hi #name#",
        "You won #money#",
        "d",
        "app://#page#",
    )
    assert (got.icon_urls, got.image_urls) == ('{"defaultUrl":"i"}', '{"defaultUrl":"m"}')
    assert (got.push_style, got.show_style, got.jump_action) == (2, 5, 1)
    assert got.variables == ["name", "money", "page"]
    assert got.created_at == got.modified_at
    assert got.created_at.tzinfo is UTC


CREATE_REFUSALS: list[Any] = [
    pytest.param({"name": None}, 3037, "TEMPLATE_NAME_NULL", "TemplateName is required", id="n0"),
    pytest.param({"name": "  "}, 3037, "TEMPLATE_NAME_NULL", "TemplateName is required", id="n1"),
    pytest.param(
        {"name": "a,b"}, 3038, "TEMPLATE_NAME_INVALID", "TemplateName contains a comma", id="n2"
    ),
    pytest.param(
        {"name": "a，b"}, 3038, "TEMPLATE_NAME_INVALID", "TemplateName contains a comma", id="n3"
    ),
    pytest.param(
        {"name": "n" * 129},
        3038,
        "TEMPLATE_NAME_INVALID",
        "TemplateName is longer than 128 characters",
        id="n4",
    ),
    pytest.param(
        {"name": "a\tb"},
        3038,
        "TEMPLATE_NAME_INVALID",
        "TemplateName contains a control or invisible character",
        id="n5",
    ),
    pytest.param(
        {"name": " win"},
        3038,
        "TEMPLATE_NAME_INVALID",
        "TemplateName starts or ends with a space",
        id="n6",
    ),
    pytest.param({"title": ""}, 3040, "TEMPLATE_TITLE_INVALID", "Title is required", id="t0"),
    pytest.param(
        {"title": "t" * 257},
        3040,
        "TEMPLATE_TITLE_INVALID",
        "Title is longer than 256 characters",
        id="t1",
    ),
    pytest.param(
        {"title": "a\nb"},
        3040,
        "TEMPLATE_TITLE_INVALID",
        "Title contains a control or invisible character",
        id="t2",
    ),
    pytest.param(
        {"content": " "}, 3039, "TEMPLATE_CONTENT_INVALID", "Content is required", id="c0"
    ),
    pytest.param(
        {"content": "c" * 4001},
        3039,
        "TEMPLATE_CONTENT_INVALID",
        "Content is longer than 4000 characters",
        id="c1",
    ),
    pytest.param(
        {"desc_info": "d" * 1025},
        3041,
        "TEMPLATE_DESC_INFO_INVALID",
        "DescInfo is longer than 1024 characters",
        id="d",
    ),
    pytest.param(
        {"uri": "u" * 1025},
        3042,
        "TEMPLATE_URI_INVALID",
        "Uri is longer than 1024 characters",
        id="u0",
    ),
    pytest.param(
        {"uri": "app://a\nb"},
        3042,
        "TEMPLATE_URI_INVALID",
        "Uri contains a control or invisible character",
        id="u1",
    ),
    pytest.param(
        {"image_urls": "i" * 2049},
        3028,
        "INVALID_PARAM",
        "ImageUrls is longer than 2048 characters",
        id="i",
    ),
    pytest.param(
        {"push_style": 3}, 3028, "INVALID_PARAM", "PushStyle must be 0, 1 or 2, got 3", id="p"
    ),
    pytest.param(
        {"jump_action": 2}, 3028, "INVALID_PARAM", "JumpAction must be 0 or 1, got 2", id="j"
    ),
    # The column is a 32-bit INTEGER: PostgreSQL used to fail the write (500).
    pytest.param(
        {"show_style": 2**40},
        3028,
        "INVALID_PARAM",
        "ShowStyle must be from -2147483648 to 2147483647 (32 bits), got 1099511627776",
        id="s-high",
    ),
    pytest.param(
        {"show_style": -(2**31) - 1},
        3028,
        "INVALID_PARAM",
        "ShowStyle must be from -2147483648 to 2147483647 (32 bits), got -2147483649",
        id="s-low",
    ),
]


@pytest.mark.parametrize(("fields", "code", "name", "detail"), CREATE_REFUSALS)
async def test_create_refused(
    service: tuple[Templates, int, int], fields: dict[str, Any], code: int, name: str, detail: str
) -> None:
    templates, app, _ = service
    with pytest.raises(BusinessError) as exc_info:
        await templates.create(app, spec(**fields))
    assert refusal(exc_info) == (code, name, detail)
    assert (await templates.page(app, page=None, page_size=None)).total == 0


@pytest.mark.parametrize("show_style", [2**31 - 1, -(2**31)])
async def test_create_stores_show_style_at_the_32_bit_bounds(
    service: tuple[Templates, int, int], show_style: int
) -> None:
    templates, app, _ = service
    created = await templates.create(app, spec(show_style=show_style))
    assert (await templates.get(app, template_id=str(created.id))).show_style == show_style


@pytest.mark.parametrize("text", ["\u0661", " 1", "1 ", "+1", "\u00b9"])
async def test_an_id_that_is_not_ascii_digits_names_no_template(
    service: tuple[Templates, int, int], text: str
) -> None:
    templates, app, _ = service
    created = await templates.create(app, spec())
    assert created.id == 1  # a fresh store: each spelling above used to read as this id
    with pytest.raises(BusinessError) as exc_info:
        await templates.get(app, template_id=text)
    assert refusal(exc_info) == (
        3022,
        "TEMPLATE_NOT_EXIST",
        f"this app has no template with TemplateId {text!r}",
    )


async def test_create_accepts_the_longest_name_and_newlines_in_content(
    service: tuple[Templates, int, int],
) -> None:
    templates, app, _ = service
    created = await templates.create(app, spec(name="n" * 128, content="line 1\nline 2"))
    assert (created.name, created.content) == ("n" * 128, "line 1\nline 2")


async def test_blank_optional_fields_are_stored_as_absent(
    service: tuple[Templates, int, int],
) -> None:
    templates, app, _ = service
    created = await templates.create(
        app, spec(desc_info="", uri="  ", icon_urls=" ", image_urls="")
    )
    got = await templates.get(app, name="win")
    assert got == created
    assert (got.desc_info, got.uri, got.icon_urls, got.image_urls) == (None, None, None, None)


async def test_duplicate_name_in_the_app_refused_in_another_app_accepted(
    service: tuple[Templates, int, int],
) -> None:
    templates, app, other = service
    first = await templates.create(app, spec())
    with pytest.raises(BusinessError) as exc_info:
        await templates.create(app, spec(title="Other"))
    assert refusal(exc_info) == (
        3036,
        "TEMPLATE_ALREADY_EXIST",
        "this app already has a template named 'win'",
    )
    elsewhere = await templates.create(other, spec())
    assert elsewhere.id != first.id
    assert (await templates.get(app, name="win")).title == "Hi #name#"
    # Names differ by case: a different template.
    assert (await templates.create(app, spec(name="WIN"))).name == "WIN"


async def test_concurrent_creates_of_one_name_store_one(
    service: tuple[Templates, int, int],
) -> None:
    templates, app, _ = service
    results = await asyncio.gather(
        *(templates.create(app, spec(title=f"T{n}")) for n in range(4)), return_exceptions=True
    )
    made = [r for r in results if isinstance(r, TemplateView)]
    refused = [r for r in results if isinstance(r, BusinessError)]
    assert (len(made), len(refused)) == (1, 3)
    assert {(r.result_code, r.name) for r in refused} == {(3036, "TEMPLATE_ALREADY_EXIST")}
    assert (await templates.page(app, page=1, page_size=10)).total == 1


async def test_get_of_another_app_or_unknown_is_3022(service: tuple[Templates, int, int]) -> None:
    templates, app, other = service
    created = await templates.create(app, spec())
    cases = [
        ({"template_id": str(created.id)}, other, f"TemplateId '{created.id}'"),
        ({"name": "win"}, other, "TemplateName 'win'"),
        ({"template_id": "abc"}, app, "TemplateId 'abc'"),
        ({"template_id": "9" * 30}, app, "TemplateId '" + "9" * 30 + "'"),
        (
            {"template_id": str(created.id), "name": "other"},
            app,
            f"TemplateId '{created.id}' and TemplateName 'other'",
        ),
    ]
    for how, where, named in cases:
        with pytest.raises(BusinessError) as exc_info:
            await templates.get(where, **how)
        assert refusal(exc_info) == (
            3022,
            "TEMPLATE_NOT_EXIST",
            f"this app has no template with {named}",
        )
    both = await templates.get(app, template_id=str(created.id), name="win")
    assert both.id == created.id


async def test_get_and_delete_need_an_id_or_a_name(service: tuple[Templates, int, int]) -> None:
    templates, app, _ = service
    for call in (templates.get(app), templates.delete(app)):
        with pytest.raises(BusinessError) as exc_info:
            await call
        assert refusal(exc_info) == (
            3037,
            "TEMPLATE_NAME_NULL",
            "TemplateId or TemplateName is required",
        )


async def test_delete_then_get_is_3022(service: tuple[Templates, int, int]) -> None:
    templates, app, _ = service
    created = await templates.create(app, spec())
    removed = await templates.delete(app, name="win")
    assert removed == created
    for how in ({"name": "win"}, {"template_id": str(created.id)}):
        with pytest.raises(BusinessError) as exc_info:
            await templates.get(app, **how)
        assert refusal(exc_info)[0] == 3022
    with pytest.raises(BusinessError) as exc_info:
        await templates.delete(app, template_id=str(created.id))
    assert refusal(exc_info) == (
        3022,
        "TEMPLATE_NOT_EXIST",
        f"this app has no template with TemplateId '{created.id}'",
    )
    # The name is free again.
    assert (await templates.create(app, spec())).name == "win"


async def test_page_bounds_and_order(service: tuple[Templates, int, int]) -> None:
    templates, app, other = service
    for n in range(1, 6):
        await templates.create(app, spec(name=f"t{n}"))
    await templates.create(other, spec(name="elsewhere"))
    pages = [await templates.page(app, page=p, page_size=2) for p in (1, 2, 3, 4)]
    assert [[t.name for t in page.templates] for page in pages] == [
        ["t1", "t2"],
        ["t3", "t4"],
        ["t5"],
        [],
    ]
    assert [(p.current_page, p.page_size, p.total) for p in pages] == [
        (1, 2, 5),
        (2, 2, 5),
        (3, 2, 5),
        (4, 2, 5),
    ]
    default = await templates.page(app, page=None, page_size=None)
    assert (default.current_page, default.page_size, default.total) == (1, 10, 5)
    assert len((await templates.page(app, page=1, page_size=100)).templates) == 5
    far = await templates.page(app, page=10**18, page_size=100)
    assert (far.templates, far.current_page, far.total) == ([], 10**18, 5)
    refusals = [
        ((0, 10), "CurrentPage must be 1 or more, got 0"),
        ((1, 0), "PageSize must be from 1 to 100, got 0"),
        ((1, 101), "PageSize must be from 1 to 100, got 101"),
    ]
    for (page, size), detail in refusals:
        with pytest.raises(BusinessError) as exc_info:
            await templates.page(app, page=page, page_size=size)
        assert refusal(exc_info) == (3028, "INVALID_PARAM", detail)


async def test_render_by_name(service: tuple[Templates, int, int]) -> None:
    templates, app, _ = service
    await templates.create(app, spec(push_style=1))
    rendered = await templates.render(app, "win", {"name": "Zhang", "money": "200"})
    assert rendered == Rendered("win", "Hi Zhang", "You won 200", None, 1, None)
    cases: list[tuple[str | None, tuple[int, str, str]]] = [
        (None, (3025, "NEED_TEMPLATE", "TemplateName is required")),
        (" ", (3025, "NEED_TEMPLATE", "TemplateName is required")),
        ("nope", (3022, "TEMPLATE_NOT_EXIST", "this app has no template with TemplateName 'nope'")),
    ]
    for name, expected in cases:
        with pytest.raises(BusinessError) as exc_info:
            await templates.render(app, name, {})
        assert refusal(exc_info) == expected
