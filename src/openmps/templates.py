"""Message templates: stored per app, with ``#name#`` placeholders filled at push time.

A placeholder is ``#`` + a name + ``#``; a name is 1 to 64 letters, digits, ``_``, ``-`` or
``.`` (letters of any script). Title, content and uri may hold placeholders. Rendering is one
pass, left to right: a value is inserted as given and never searched for placeholders itself,
and a ``#`` that does not open a well-formed placeholder stays as it is. There is no escape,
so a literal ``#word#`` cannot appear in a template.

Rendering needs a value for every placeholder (3023 names the missing ones). Values for names
the template does not use are ignored: one set of values can serve several templates.

Both front doors (the MPS actions and the REST API) use this module; the push request builders
at the end turn a template and its values into the ``PushRequest`` / ``BroadcastRequest`` that
``Runtime.submit`` takes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Select, delete, false, func, select
from sqlalchemy.exc import IntegrityError

from openmps.errors import BusinessError
from openmps.ids import parse_id
from openmps.push import BroadcastRequest, PushRequest, TargetContent
from openmps.store import Store, Template

PLACEHOLDER = re.compile(r"#([\w.-]{1,64})#")

MAX_NAME_CHARS = 128  # the column; MPS publishes no limit
MAX_TITLE_CHARS = 256
MAX_CONTENT_CHARS = 4000  # a rendered push is also held to 4096 bytes as a whole (3050)
MAX_DESC_CHARS = 1024
MAX_URI_CHARS = 1024  # the column
MAX_URLS_CHARS = 2048  # IconUrls, ImageUrls
DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 100
MAX_OFFSET = 2**62
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1  # ShowStyle: the column is a 32-bit INTEGER
GMT_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # GmtCreate / GmtModified: UTC, as x-acs-date


def placeholders(*texts: str | None) -> list[str]:
    """The placeholder names of the texts, each once, in order of first appearance."""
    seen: dict[str, None] = {}
    for text in texts:
        for match in PLACEHOLDER.finditer(text or ""):
            seen.setdefault(match.group(1), None)
    return list(seen)


def fill(text: str, values: Mapping[str, str]) -> str:
    """``text`` with every placeholder replaced by its value (all must be in ``values``)."""
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], text)


@dataclass(frozen=True)
class TemplateSpec:
    """What CreateTemplate (or ``POST /v1/templates``) asks for, unchecked."""

    name: str | None
    title: str | None
    content: str | None
    desc_info: str | None = None
    uri: str | None = None
    icon_urls: str | None = None
    image_urls: str | None = None
    push_style: int | None = None
    show_style: int | None = None
    jump_action: int | None = None


@dataclass(frozen=True)
class Rendered:
    """A template filled with one set of values: what a push shows."""

    name: str
    title: str
    content: str
    uri: str | None
    push_style: int | None
    jump_action: int | None


@dataclass(frozen=True)
class TemplateView:
    """A stored template."""

    id: int
    name: str
    title: str
    content: str
    desc_info: str | None
    uri: str | None
    icon_urls: str | None
    image_urls: str | None
    push_style: int | None
    show_style: int | None
    jump_action: int | None
    variables: list[str]
    created_at: datetime
    modified_at: datetime

    @classmethod
    def of(cls, row: Template) -> TemplateView:
        return cls(
            id=row.id,
            name=row.name,
            title=row.title,
            content=row.content,
            desc_info=row.desc_info,
            uri=row.uri,
            icon_urls=row.icon_urls,
            image_urls=row.image_urls,
            push_style=row.push_style,
            show_style=row.show_style,
            jump_action=row.jump_action,
            variables=placeholders(row.title, row.content, row.uri),
            created_at=row.created_at,
            modified_at=row.modified_at,
        )

    def render(
        self, values: Mapping[str, str] | None, *, field: str = "TemplateKeyValue"
    ) -> Rendered:
        """Fill the placeholders; 3023 names those ``values`` has no value for (``field`` is
        the request field the values came from, for the message)."""
        given = values or {}
        missing = [name for name in self.variables if name not in given]
        if missing:
            raise BusinessError(
                3023,
                "TEMPLATEKV_NOT_ENOUGH",
                f"{field} has no value for the placeholder"
                f"{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                f"of template {self.name!r}",
            )
        return Rendered(
            name=self.name,
            title=fill(self.title, given),
            content=fill(self.content, given),
            uri=fill(self.uri, given) if self.uri else None,
            push_style=self.push_style,
            jump_action=self.jump_action,
        )


@dataclass(frozen=True)
class TemplatePage:
    templates: list[TemplateView]
    current_page: int
    page_size: int
    total: int


def _check_name(name: str | None) -> str:
    if name is None or not name.strip():
        raise BusinessError(3037, "TEMPLATE_NAME_NULL", "TemplateName is required")
    why = None
    if len(name) > MAX_NAME_CHARS:
        why = f"is longer than {MAX_NAME_CHARS} characters"
    elif "," in name or "，" in name:
        why = "contains a comma"
    elif not name.isprintable():
        why = "contains a control or invisible character"
    elif name != name.strip():
        why = "starts or ends with a space"
    if why is not None:
        raise BusinessError(3038, "TEMPLATE_NAME_INVALID", f"TemplateName {why}")
    return name


def _check_spec(spec: TemplateSpec) -> TemplateSpec:
    """Every rule of a new template except the name's uniqueness; raises BusinessError."""
    name = _check_name(spec.name)
    title, content = spec.title, spec.content
    if title is None or not title.strip():
        raise BusinessError(3040, "TEMPLATE_TITLE_INVALID", "Title is required")
    if len(title) > MAX_TITLE_CHARS:
        raise BusinessError(
            3040, "TEMPLATE_TITLE_INVALID", f"Title is longer than {MAX_TITLE_CHARS} characters"
        )
    if not title.isprintable():
        raise BusinessError(
            3040, "TEMPLATE_TITLE_INVALID", "Title contains a control or invisible character"
        )
    if content is None or not content.strip():
        raise BusinessError(3039, "TEMPLATE_CONTENT_INVALID", "Content is required")
    if len(content) > MAX_CONTENT_CHARS:
        raise BusinessError(
            3039,
            "TEMPLATE_CONTENT_INVALID",
            f"Content is longer than {MAX_CONTENT_CHARS} characters",
        )
    if spec.desc_info is not None and len(spec.desc_info) > MAX_DESC_CHARS:
        raise BusinessError(
            3041,
            "TEMPLATE_DESC_INFO_INVALID",
            f"DescInfo is longer than {MAX_DESC_CHARS} characters",
        )
    uri = _present(spec.uri)
    if uri is not None and len(uri) > MAX_URI_CHARS:
        raise BusinessError(
            3042, "TEMPLATE_URI_INVALID", f"Uri is longer than {MAX_URI_CHARS} characters"
        )
    if uri is not None and not uri.isprintable():
        raise BusinessError(
            3042, "TEMPLATE_URI_INVALID", "Uri contains a control or invisible character"
        )
    for label, urls in (("IconUrls", spec.icon_urls), ("ImageUrls", spec.image_urls)):
        if urls is not None and len(urls) > MAX_URLS_CHARS:
            raise BusinessError(
                3028, "INVALID_PARAM", f"{label} is longer than {MAX_URLS_CHARS} characters"
            )
    if spec.push_style not in (None, 0, 1, 2):
        raise BusinessError(
            3028, "INVALID_PARAM", f"PushStyle must be 0, 1 or 2, got {spec.push_style}"
        )
    if spec.jump_action not in (None, 0, 1):
        raise BusinessError(
            3028, "INVALID_PARAM", f"JumpAction must be 0 or 1, got {spec.jump_action}"
        )
    if spec.show_style is not None and not INT32_MIN <= spec.show_style <= INT32_MAX:
        raise BusinessError(
            3028,
            "INVALID_PARAM",
            f"ShowStyle must be from {INT32_MIN} to {INT32_MAX} (32 bits), got {spec.show_style}",
        )
    return replace(
        spec,
        name=name,
        uri=uri,
        desc_info=_present(spec.desc_info),
        icon_urls=_present(spec.icon_urls),
        image_urls=_present(spec.image_urls),
    )


def _present(value: str | None) -> str | None:
    """An optional text as stored: a blank one (empty or spaces only) is absent."""
    return value if value is not None and value.strip() else None


def _not_found(detail: str) -> BusinessError:
    return BusinessError(3022, "TEMPLATE_NOT_EXIST", detail)


class Templates:
    """The templates of every app, in the store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def create(self, app_pk: int, spec: TemplateSpec) -> TemplateView:
        """Store a new template; 3036 when the app already has one of that name."""
        spec = _check_spec(spec)
        assert spec.name is not None and spec.title is not None and spec.content is not None
        now = datetime.now(UTC)
        row = Template(
            app_pk=app_pk,
            name=spec.name,
            title=spec.title,
            content=spec.content,
            desc_info=spec.desc_info,
            uri=spec.uri,
            icon_urls=spec.icon_urls,
            image_urls=spec.image_urls,
            push_style=spec.push_style,
            show_style=spec.show_style,
            jump_action=spec.jump_action,
            variables=",".join(placeholders(spec.title, spec.content, spec.uri)),
            created_at=now,
            modified_at=now,
        )
        duplicate = BusinessError(
            3036,
            "TEMPLATE_ALREADY_EXIST",
            f"this app already has a template named {spec.name!r}",
        )
        try:
            async with self._store.write() as session:
                taken = await session.scalar(
                    select(Template.id).where(Template.app_pk == app_pk, Template.name == spec.name)
                )
                if taken is not None:
                    raise duplicate
                session.add(row)
        except IntegrityError:  # a concurrent create of the same name won
            raise duplicate from None
        return TemplateView.of(row)

    async def get(
        self, app_pk: int, *, template_id: str | None = None, name: str | None = None
    ) -> TemplateView:
        """One template by id or name (both given: both must match); 3022 when none."""
        async with self._store.session() as session:
            row = await session.scalar(_lookup(app_pk, template_id, name))
        if row is None:
            raise _not_found(_unknown(template_id, name))
        return TemplateView.of(row)

    async def page(self, app_pk: int, *, page: int | None, page_size: int | None) -> TemplatePage:
        """A page of the app's templates, oldest first. ``page`` counts from 1 (default 1);
        ``page_size`` is 1 to 100 (default 10). A page past the end is empty."""
        current = 1 if page is None else page
        size = DEFAULT_PAGE_SIZE if page_size is None else page_size
        if current < 1:
            raise BusinessError(
                3028, "INVALID_PARAM", f"CurrentPage must be 1 or more, got {current}"
            )
        if not 1 <= size <= MAX_PAGE_SIZE:
            raise BusinessError(
                3028,
                "INVALID_PARAM",
                f"PageSize must be from 1 to {MAX_PAGE_SIZE}, got {size}",
            )
        offset = (current - 1) * size
        async with self._store.session() as session:
            total = await session.scalar(
                select(func.count()).select_from(Template).where(Template.app_pk == app_pk)
            )
            rows: Sequence[Template] = []
            if offset < MAX_OFFSET:  # beyond, past any end (and past a BIGINT OFFSET)
                rows = (
                    await session.scalars(
                        select(Template)
                        .where(Template.app_pk == app_pk)
                        .order_by(Template.id)
                        .offset(offset)
                        .limit(size)
                    )
                ).all()
        return TemplatePage([TemplateView.of(r) for r in rows], current, size, int(total or 0))

    async def delete(
        self, app_pk: int, *, template_id: str | None = None, name: str | None = None
    ) -> TemplateView:
        """Remove a template (by id or name, as ``get``); returns it. Pushes already made
        from it keep their rendered content."""
        async with self._store.write() as session:
            row = await session.scalar(_lookup(app_pk, template_id, name))
            if row is None:
                raise _not_found(_unknown(template_id, name))
            view = TemplateView.of(row)
            await session.execute(delete(Template).where(Template.id == row.id))
        return view

    async def find(self, app_pk: int, name: str | None) -> TemplateView:
        """The template a push names: 3025 without a name, 3022 when the app has none."""
        if name is None or not name.strip():
            raise BusinessError(3025, "NEED_TEMPLATE", "TemplateName is required")
        return await self.get(app_pk, name=name)

    async def render(
        self, app_pk: int, name: str | None, values: Mapping[str, str] | None
    ) -> Rendered:
        """The named template filled with ``values`` (3025, 3022, 3023)."""
        template = await self.find(app_pk, name)
        return template.render(values)


def _lookup(app_pk: int, template_id: str | None, name: str | None) -> Select[Template]:
    if template_id is None and name is None:
        raise BusinessError(3037, "TEMPLATE_NAME_NULL", "TemplateId or TemplateName is required")
    query = select(Template).where(Template.app_pk == app_pk)
    if template_id is not None:
        number = parse_id(template_id)  # an id that is no number names no template
        query = query.where(false() if number is None else Template.id == number)
    if name is not None:
        query = query.where(Template.name == name)
    return query


def _unknown(template_id: str | None, name: str | None) -> str:
    parts = []
    if template_id is not None:
        parts.append(f"TemplateId {template_id!r}")
    if name is not None:
        parts.append(f"TemplateName {name!r}")
    return f"this app has no template with {' and '.join(parts)}"


# --- push requests from a template ------------------------------------------------------------

R = TypeVar("R", PushRequest, BroadcastRequest)


def apply(request: R, rendered: Rendered) -> R:
    """``request`` with the template's title, content, uri and push style; its own PushAction
    wins over the template's JumpAction. A PushRequest becomes of kind "template"."""
    changes: dict[str, Any] = {
        "template_name": rendered.name,
        "title": rendered.title,
        "content": rendered.content,
        "uri": rendered.uri,
        "push_style": rendered.push_style,
        "push_action": (
            request.push_action if request.push_action is not None else rendered.jump_action
        ),
    }
    if isinstance(request, PushRequest):
        changes["kind"] = "template"
    return replace(request, **changes)


@dataclass(frozen=True)
class TargetValues:
    """One target of a PushMultiple: its msgKey, its placeholder values and its own extras."""

    target: str | None
    msg_key: str | None
    values: dict[str, str] | None = None
    extras: dict[str, str] | None = None


def apply_multiple(
    request: PushRequest,
    template: TemplateView,
    entries: Sequence[TargetValues],
    *,
    field: str = "TargetMsg",
) -> PushRequest:
    """``request`` as a PushMultiple: each target gets the template rendered with its own
    values (3023 names the entry), its own extras over the request's. An entry without a
    target or msgKey, or a target listed twice, is 3028. ``field`` names the entries in
    messages (``TargetMsg.3``)."""
    targets: dict[str, str] = {}
    per_target: dict[str, TargetContent] = {}
    first_of: dict[str, int] = {}
    for number, entry in enumerate(entries, start=1):
        where = f"{field}.{number}"
        for label, value in (("Target", entry.target), ("MsgKey", entry.msg_key)):
            if value is None or not value.strip():
                raise BusinessError(3028, "INVALID_PARAM", f"{where} has no {label}")
        assert entry.target is not None and entry.msg_key is not None
        if entry.target in first_of:
            raise BusinessError(
                3028,
                "INVALID_PARAM",
                f"{field}.{first_of[entry.target]} and {where} have the same Target "
                f"{entry.target!r}; list each target once",
            )
        first_of[entry.target] = number
        rendered = template.render(entry.values, field=f"{where}.TemplateKeyValue")
        targets[entry.target] = entry.msg_key
        per_target[entry.target] = TargetContent(
            rendered.title, rendered.content, rendered.uri, entry.extras
        )
    return replace(
        request,
        kind="multiple",
        template_name=template.name,
        targets=targets,
        per_target=per_target,
        title=None,
        content=None,
        uri=None,
        push_style=template.push_style,
        push_action=(
            request.push_action if request.push_action is not None else template.jump_action
        ),
    )
